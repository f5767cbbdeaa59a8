"""Video decoding and frame sampling with timestamps (qwen-vl-utils rules, PyAV or decord).

Frames are sampled at ``fps`` (VisionSpec.video_fps, or the record's ``video.fps``), the count clamped
to [min_frames, max_frames] and to the video, rounded down to an even number (two frames form one
temporal patch), at ``linspace(0, total - 1, n)`` as qwen-vl-utils does. Every frame is resized to one
size under the clip's total pixel budget (``vision.video_frame_size``). The clip keeps each frame's
index and time, and ``VideoClip.metadata`` is the ``video_metadata`` the HF processor needs so that
``second_per_grid_ts`` (the model's time axis) is right.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_pipelines.records import RecordError
from data_pipelines.sample import VideoClip
from data_pipelines.vision import ResizeError, VisionSpec, video_frame_size


def num_frames(total: int, native_fps: float, fps: float, min_frames: int, max_frames: int) -> int:
    """How many frames to sample from a video of ``total`` frames at ``native_fps`` (qwen-vl-utils).

    Worked example: 10 s at 25 fps (250 frames), sampled at 2 fps -> 20 frames; at 0.1 fps -> 1 frame,
    raised to min_frames 4.
    """
    lo = math.ceil(min_frames / 2) * 2
    hi = math.floor(min(max_frames, total) / 2) * 2
    n = total / native_fps * fps
    n = min(max(n, lo), hi)
    n = math.floor(n / 2) * 2
    if n < 2:
        raise RecordError("corrupt_video", f"the video has {total} frame(s); at least 2 are needed")
    return n


def sample_indices(total: int, n: int) -> list[int]:
    """``n`` frame indices spread evenly over ``total`` frames, first and last included.

    Exactly qwen-vl-utils' picks: a float32 ``torch.linspace`` rounded half to even (a float64 linspace
    picks the other neighbour at some exact .5 ties and, in long videos, where float32 rounding
    crosses a .5; tests/data_pipelines/test_qwen_vl_utils.py)."""
    import torch

    return torch.linspace(0, total - 1, n, dtype=torch.float32).round().long().tolist()


def _options(spec: VisionSpec, options: dict[str, Any] | None) -> tuple[float, int, int]:
    options = options or {}
    fps = float(options.get("fps") or spec.video_fps)
    max_frames = int(options.get("max_frames") or spec.video_max_frames)
    min_frames = int(options.get("min_frames") or min(spec.video_min_frames, max_frames))
    return fps, min_frames, max_frames


def probe_pyav(path: Path) -> tuple[int, float, float, int, int]:
    """(frame count, frame rate, duration seconds, width, height) from the container's header."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
        rate = float(stream.average_rate or stream.guessed_rate or 0)
        if rate <= 0:
            raise RecordError("corrupt_video", f"cannot read the frame rate of video {path}")
        total = int(stream.frames or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = total / rate
        if total <= 0:
            total = int(round(duration * rate))
    return total, rate, duration, width, height


def _decode_pyav(path: Path, wanted: list[int]) -> tuple[dict[int, np.ndarray], dict[int, float], int]:
    """Decode sequentially, keeping the wanted frames: ({index: HxWx3 uint8}, {index: seconds}, count)."""
    import av

    keep = set(wanted)
    frames: dict[int, np.ndarray] = {}
    times: dict[int, float] = {}
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last = max(keep)
        for frame in container.decode(stream):
            if count in keep:
                frames[count] = frame.to_ndarray(format="rgb24")
                times[count] = float(frame.time) if frame.time is not None else math.nan
            count += 1
            if count > last:
                break
    return frames, times, count


def _read_pyav(path: Path, fps: float, min_frames: int, max_frames: int, max_pixels: int):
    total, rate, duration, width, height = probe_pyav(path)
    _check_frame_pixels(path, width, height, max_pixels)
    n = num_frames(total, rate, fps, min_frames, max_frames)
    idx = sample_indices(total, n)
    frames, times, count = _decode_pyav(path, idx)
    if len(frames) < len(idx):  # the header over-counted frames: sample again from the real count
        if count < max(2, total // 2):
            raise RecordError("corrupt_video", f"video {path} is truncated: {count} of {total} frames decode")
        total, duration = count, count / rate
        n = num_frames(total, rate, fps, min_frames, max_frames)
        idx = sample_indices(total, n)
        frames, times, count = _decode_pyav(path, idx)
    stack = np.stack([frames[i] for i in idx])
    stamps = [times[i] if math.isfinite(times[i]) else i / rate for i in idx]
    return stack, idx, stamps, total, rate, duration


def _check_frame_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise RecordError(
            "image_too_large",
            f"video {path} has {width}x{height} = {width * height:,}-pixel frames, over the budget of "
            f"{max_pixels:,} (VisionSpec.max_image_pixels)",
        )


def _read_decord(path: Path, fps: float, min_frames: int, max_frames: int, max_pixels: int):
    try:
        import decord
    except ImportError:
        raise ImportError("video_backend 'decord' needs decord: pip install 'mmrft[video]'") from None
    vr = decord.VideoReader(str(path), num_threads=1)
    total, rate = len(vr), float(vr.get_avg_fps())
    if total:
        height, width = vr[0].shape[:2]
        _check_frame_pixels(path, width, height, max_pixels)
    n = num_frames(total, rate, fps, min_frames, max_frames)
    idx = sample_indices(total, n)
    stack = vr.get_batch(idx).asnumpy()
    stamps = [float(vr.get_frame_timestamp(i)[0]) for i in idx]
    return stack, idx, stamps, total, rate, total / rate


def load_video(path: str | Path, spec: VisionSpec, options: dict[str, Any] | None = None) -> VideoClip:
    """Sample and resize frames of the video at ``path``; raises ``RecordError`` for a bad video.

    options: the record's ``video`` dict (``fps``, ``max_frames``, ``min_frames`` override ``spec``).
    Returns frames uint8 [T, H, W, 3] with H, W multiples of ``spec.factor`` and T even.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError("missing_file", f"file not found: {path}")
    fps, min_frames, max_frames = _options(spec, options)
    reader = _read_decord if spec.video_backend == "decord" else _read_pyav
    try:
        stack, idx, stamps, total, rate, duration = reader(
            path, fps, min_frames, max_frames, spec.max_image_pixels
        )
    except RecordError:
        raise
    except ImportError:
        raise
    except Exception as e:  # FFmpeg / decord errors have no common base class worth naming
        raise RecordError("corrupt_video", f"cannot read video {path}: {type(e).__name__}: {e}") from None
    t, h, w, _ = stack.shape
    try:
        new_h, new_w = video_frame_size(h, w, t, spec)
    except ResizeError as e:
        raise RecordError(e.reason, f"video {path}: {e}") from None
    if (new_h, new_w) != (h, w):
        stack = np.stack(
            [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BICUBIC)) for f in stack]
        )
    return VideoClip(
        frames=stack,
        timestamps=stamps,
        fps=len(idx) / total * rate,  # what the processor will call sampled_fps
        duration=duration,
        path=str(path),
        frame_indices=idx,
        native_fps=rate,
        total_frames=total,
        original_size=(w, h),
        scale=(new_w / w, new_h / h),
    )
