"""The ``Sample``: one record made ready for the model (images resized, ground truth in the model frame).

This is the contract between ``data_pipelines`` and ``mmrft``: the trainer, rollout and eval read only
these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image


@dataclass
class VideoClip:
    """Frames sampled from a video, with the time each one was taken.

    frames: uint8 array [T, H, W, 3], already resized to the model frame (H, W multiples of 28).
    timestamps: seconds of each sampled frame, length T.
    fps: the sampling rate the frames were taken at (frames per second of video time).
    duration: length of the whole video in seconds.
    """

    frames: np.ndarray
    timestamps: list[float]
    fps: float
    duration: float
    path: str = ""
    frame_indices: list[int] = field(default_factory=list)
    native_fps: float = 0.0
    total_frames: int = 0
    original_size: tuple[int, int] = (0, 0)
    scale: tuple[float, float] = (1.0, 1.0)

    @property
    def metadata(self) -> dict[str, Any]:
        """``video_metadata`` for the HF processor (``processor(..., videos=[frames],
        video_metadata=[clip.metadata], do_sample_frames=False)``).

        From it transformers computes ``sampled_fps = len(frames_indices) / total_num_frames * fps``
        and ``second_per_grid_ts = temporal_patch_size / sampled_fps``; without it it assumes 24 fps.
        """
        h, w = self.frames.shape[1:3] if self.frames.ndim == 4 else (0, 0)
        return {
            "total_num_frames": int(self.total_frames or len(self.timestamps)),
            "fps": float(self.native_fps or self.fps),
            "frames_indices": [int(i) for i in (self.frame_indices or range(len(self.timestamps)))],
            "duration": float(self.duration),
            "width": int(w),
            "height": int(h),
        }


@dataclass
class Sample:
    """One record, loaded and resized.

    id: the record id (unique in its file). task: the record's task name.
    prompt: chat messages (TRL/HF conversational form) with ``{"type": "image"}`` / ``{"type": "video"}``
        placeholders that bind, in order, to ``images`` / ``video``.
    images: PIL RGB images already resized to the frame the model sees (sides multiples of 28).
    video: sampled frames with timestamps, or None.
    solution: ground truth mapped into the model's frame (pixels of the resized image, or 0-1000 when
        ``coord_space`` is ``norm1000``; seconds for time).
    solution_original: ground truth as the record gave it (original pixels / seconds).
    scales: per image, (sx, sy) such that model_x = original_x * sx.
    original_sizes: per image, (width, height) before resizing.
    coord_space: ``pixel`` (Qwen2.5-VL) or ``norm1000`` (Qwen2-VL).
    columns: any other keys of the record, passed through to rewards.
    """

    id: str
    task: str
    prompt: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    video: VideoClip | None = None
    solution: dict[str, Any] = field(default_factory=dict)
    solution_original: dict[str, Any] = field(default_factory=dict)
    scales: list[tuple[float, float]] = field(default_factory=list)
    coord_space: str = "pixel"
    columns: dict[str, Any] = field(default_factory=dict)
    original_sizes: list[tuple[int, int]] = field(default_factory=list)

    def to_original(self, solution: dict[str, Any]) -> dict[str, Any]:
        """Map a model-frame solution (e.g. a parsed prediction) back to the record's original pixels.

        Boxes refer to the first image, or to the video frames for video records.
        """
        from data_pipelines.geometry import to_original_frame

        if self.video is not None:
            return to_original_frame(solution, self.video.scale, self.video.original_size, self.coord_space)
        if not self.images:
            return dict(solution)
        return to_original_frame(solution, self.scales[0], self.original_sizes[0], self.coord_space)

    @property
    def image_sizes(self) -> list[tuple[int, int]]:
        """(width, height) of each image as the model sees it."""
        return [im.size for im in self.images]
