"""Seeded synthetic videos: temporal grounding (a shape appears and disappears at known seconds) and
tracking (a shape moves along a straight line), written as MP4 (PyAV, MPEG-4 part 2) + JSONL records.

A frame ``k`` of a video at ``fps`` shows time ``k / fps``. In a temporal-grounding video the target is
drawn in frames ``k`` with ``start <= k / fps < end``, where ``start`` and ``end`` fall on frame times,
so the ground-truth segment is exact. Tracking records hold the target's box in every video frame with
its time (``solution["times"]``); the loader keeps the boxes of the frames it samples.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from data_pipelines.io import finish_atomic, write_jsonl
from data_pipelines.synthetic.draw import COLORS, SHAPES, background, draw_shape, place_boxes
from data_pipelines.synthetic.shapes import answer_instruction, coord_sentence, pick, record_rng

VIDEO_TASKS = ("temporal_grounding", "tracking")


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 frames [T, H, W, 3] (H, W even) as an MP4 at ``fps``, atomically (temp + rename)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # bitexact: no encoder version strings, so the same frames give the same bytes everywhere
        with av.open(tmp, "w", format="mp4", options={"fflags": "+bitexact"}) as container:
            stream = container.add_stream("mpeg4", rate=Fraction(fps))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.thread_type = "NONE"
            stream.codec_context.options = {"qmin": "1", "qmax": "2", "flags": "+bitexact"}  # near-lossless
            for arr in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finish_atomic(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _temporal(rng, size, fps, duration, shapes, colors, bg, prompt_style):
    t = int(round(duration * fps))
    (x0, y0, s), *others = place_boxes(rng, 2, size, int(size * 0.25), int(size * 0.4))
    target, color = pick(rng, shapes), pick(rng, colors)
    k1 = int(rng.integers(1, t - 2 * fps))  # start frame; the shape shows for at least 1 s ...
    k2 = int(rng.integers(k1 + fps, t))  # ... and is gone before the end
    base = background(size, bg, rng)
    distractor = (pick(rng, [x for x in shapes if x != target] or shapes), pick(rng, colors))
    draw_shape(base, *distractor, *others[0])
    with_target = base.copy()
    draw_shape(with_target, target, color, x0, y0, s)
    a, b = np.asarray(base), np.asarray(with_target)
    frames = np.stack([b if k1 <= k < k2 else a for k in range(t)])
    question = (
        f"The video is {duration:g} seconds long. During which seconds is the {color} {target} visible? "
        "Give the start and end time in seconds."
    )
    text = f"{question} {answer_instruction('start to end', prompt_style)}"
    solution = {"segment": [k1 / fps, k2 / fps], "duration": float(duration)}
    return frames, text, solution, {"shape": target, "color": color}


def _tracking(rng, size, fps, duration, shapes, colors, bg, prompt_style, coord_space):
    t = int(round(duration * fps))
    s = int(rng.integers(int(size * 0.2), int(size * 0.3) + 1))
    start = rng.integers(0, size - s + 1, size=2)
    end = rng.integers(0, size - s + 1, size=2)
    target, color = pick(rng, shapes), pick(rng, colors)
    base = background(size, bg, rng)
    frames, boxes = [], []
    for k in range(t):
        x0, y0 = np.round(start + (end - start) * k / max(t - 1, 1)).astype(int)
        im = base.copy()
        boxes.append(draw_shape(im, target, color, int(x0), int(y0), s))
        frames.append(np.asarray(im))
    question = (
        f"Track the {color} {target}: give its box in each frame you are shown, in order. "
        f"{coord_sentence(coord_space)}"
    )
    text = f"{question} {answer_instruction('[[x1, y1, x2, y2], ...]', prompt_style)}"
    solution = {"boxes": boxes, "times": [k / fps for k in range(t)]}
    return np.stack(frames), text, solution, {"shape": target, "color": color}


def write_video_dataset(
    out_dir: str | os.PathLike,
    task: str = "temporal_grounding",
    n: int = 100,
    seed: int = 0,
    image_size: int = 112,
    fps: int = 4,
    min_duration: float = 6.0,
    max_duration: float = 12.0,
    prompt_style: str = "answer_only",
    split: str = "train",
    shapes: Sequence[str] = ("circle", "square", "triangle"),
    colors: Sequence[str] = ("red", "green", "blue", "yellow", "purple", "orange"),
    background: str = "plain",
    coord_space: str = "pixel",
    sample_fps: float | None = None,
    max_frames: int | None = None,
) -> Path:
    """Write ``n`` synthetic video records; returns ``out_dir/{task}_{split}.jsonl``.

    Videos go to ``out_dir/videos/{task}_{split}/{i:05d}.mp4`` at ``fps`` frames per second, each a
    whole number of seconds in [min_duration, max_duration]. sample_fps / max_frames: written into
    each record's ``video`` entry (how the loader samples it); None leaves the loader's defaults.
    """
    if task not in VIDEO_TASKS:
        raise ValueError(f"task must be one of {VIDEO_TASKS}, got {task!r}")
    if image_size % 2 or image_size < 32:
        raise ValueError(
            f"image_size must be even and >= 32 (video codecs need even sides), got {image_size}"
        )
    if fps < 1 or not 3 <= min_duration <= max_duration:
        raise ValueError(
            f"need fps >= 1 and 3 <= min_duration <= max_duration, got {fps}, {min_duration}, {max_duration}"
        )
    unknown = [s for s in shapes if s not in SHAPES] + [c for c in colors if c not in COLORS]
    if unknown:
        raise ValueError(f"unknown shapes/colors {unknown}; shapes: {SHAPES}, colors: {tuple(COLORS)}")
    out_dir = Path(out_dir)
    name = f"{task}_{split}"
    records: list[dict[str, Any]] = []
    for i in range(n):
        rng = record_rng(seed, task, split, i)
        duration = int(rng.integers(int(min_duration), int(max_duration) + 1))
        if task == "temporal_grounding":
            frames, text, solution, target = _temporal(
                rng, image_size, fps, duration, shapes, colors, background, prompt_style
            )
        else:
            frames, text, solution, target = _tracking(
                rng, image_size, fps, duration, shapes, colors, background, prompt_style, coord_space
            )
        rel = f"videos/{name}/{i:05d}.mp4"
        write_video(out_dir / rel, frames, fps)
        video: dict[str, Any] = {"path": rel}
        if sample_fps is not None:
            video["fps"] = sample_fps
        if max_frames is not None:
            video["max_frames"] = max_frames
        rec: dict[str, Any] = {
            "id": f"video-{task}-{split}-{seed}-{i:05d}",
            "task": task,
            "video": video,
            "prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": text}]}],
            "solution": solution,
        }
        if coord_space != "pixel" and task == "tracking":
            rec["coord_space"] = coord_space
        rec["meta"] = {"source": "synthetic-video", "split": split, "fps": fps, "target": target}
        records.append(rec)
    path = out_dir / f"{name}.jsonl"
    write_jsonl(path, records)
    return path


def first_frame(path: str | os.PathLike) -> Image.Image:
    """The first frame of a video as a PIL image (for previews)."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            return frame.to_image()
    raise ValueError(f"video {path} has no frames")
