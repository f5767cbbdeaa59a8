"""Image sizing for Qwen2-VL / Qwen2.5-VL: the smart-resize rules and the vision budget.

The model sees every image resized so that both sides are multiples of ``factor`` (patch 14 x merge 2
= 28) and the pixel count lies in ``[min_pixels, max_pixels]``, keeping the aspect ratio as closely as
possible. We resize here, before the processor, so that the frame the ground truth is mapped into is
exactly the frame the model sees (the processor then leaves an already-conforming image unchanged,
as long as its own min/max pixels contain ours: see ``processor_kwargs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image


@dataclass
class VisionSpec:
    """How images and video frames are sized and sampled for the model.

    min_pixels / max_pixels: pixel budget of one image after resizing (Qwen2.5-VL: 4*28*28 .. 1280*28*28).
    max_ratio: largest long/short side ratio accepted (Qwen: 200); beyond it a record is bad.
    max_image_pixels: largest image or video frame (width x height as stored, before resizing) a record
        may have; larger ones are bad records, never decoded (PIL's own decompression-bomb threshold,
        about 89 M pixels, 256 MiB of RGB).
    factor: sides become multiples of this (patch size 14 x spatial merge 2).
    video_fps: frames sampled per second of video.
    video_min_frames / video_max_frames: bounds on the sampled frame count (rounded to even numbers).
    video_total_pixels: pixel budget of all sampled frames together (qwen-vl-utils rule).
    video_min_pixels / video_max_pixels: per-frame bounds (qwen-vl-utils: 128 and 768 tokens of 28x28).
    video_backend: ``pyav`` (default, bundled FFmpeg) or ``decord`` (the ``[video]`` extra).
    """

    min_pixels: int = 4 * 28 * 28
    max_pixels: int = 1280 * 28 * 28
    max_ratio: float = 200.0
    max_image_pixels: int = 1024 * 1024 * 1024 // 4 // 3
    factor: int = 28
    video_fps: float = 2.0
    video_min_frames: int = 4
    video_max_frames: int = 768
    video_total_pixels: int = 3584 * 28 * 28
    video_min_pixels: int = 128 * 28 * 28
    video_max_pixels: int = 768 * 28 * 28
    video_backend: str = "pyav"

    def __post_init__(self) -> None:
        if self.factor <= 0:
            raise ValueError(f"VisionSpec.factor must be positive, got {self.factor}")
        if self.max_image_pixels <= 0:
            raise ValueError(f"VisionSpec.max_image_pixels must be positive, got {self.max_image_pixels}")
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(
                f"VisionSpec needs 0 < min_pixels <= max_pixels, got {self.min_pixels} and {self.max_pixels}"
            )
        if self.video_fps <= 0:
            raise ValueError(f"VisionSpec.video_fps must be positive, got {self.video_fps}")
        if not 2 <= self.video_min_frames <= self.video_max_frames:
            raise ValueError(
                "VisionSpec needs 2 <= video_min_frames <= video_max_frames, got "
                f"{self.video_min_frames} and {self.video_max_frames}"
            )
        if self.video_backend not in ("pyav", "decord"):
            raise ValueError(
                f"VisionSpec.video_backend must be 'pyav' or 'decord', got {self.video_backend!r}"
            )


class ResizeError(ValueError):
    """An image size smart-resize cannot serve; ``reason`` is the record-error code
    (``bad_image_size``, ``extreme_aspect_ratio``, ``image_too_thin``)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def smart_resize(
    height: int,
    width: int,
    factor: int = 28,
    min_pixels: int = 4 * 28 * 28,
    max_pixels: int = 1280 * 28 * 28,
    max_ratio: float = 200,
) -> tuple[int, int]:
    """Qwen's smart resize: (new_h, new_w), both multiples of ``factor``, pixels in [min, max].

    Same arithmetic as transformers' Qwen2-VL image processor (so the processor leaves the result
    alone) and as qwen-vl-utils, but for the cases docs/data.md "Against qwen-vl-utils" lists (tested
    there): a side of at most ``factor / 2`` pixels, which qwen-vl-utils lifts to ``factor`` first; and
    an input so thin that the budget leaves its short side under one ``factor`` (qwen-vl-utils 0.0.14
    returns a zero side for 30x5900 at 100*28*28 pixels), which raises here instead of producing an
    empty image. Raises :class:`ResizeError` (a ``ValueError``) with a reason code.
    """
    if height <= 0 or width <= 0:
        raise ResizeError(
            "bad_image_size", f"smart_resize: image size must be positive, got {height}x{width} (HxW)"
        )
    ratio = max(height, width) / min(height, width)
    if ratio > max_ratio:
        raise ResizeError(
            "extreme_aspect_ratio",
            f"smart_resize: aspect ratio {ratio:.1f} of a {height}x{width} (HxW) image exceeds max_ratio "
            f"{max_ratio:g}; crop or pad it first",
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    if h_bar < factor or w_bar < factor:
        raise ResizeError(
            "image_too_thin",
            f"smart_resize: a {height}x{width} (HxW) image is too thin for max_pixels={max_pixels} "
            f"(the short side would become {min(h_bar, w_bar)} < {factor}); crop it or raise max_pixels",
        )
    return h_bar, w_bar


def resize_for_model(image: Image.Image, spec: VisionSpec) -> tuple[Image.Image, tuple[float, float]]:
    """Convert to RGB and resize by ``smart_resize``; returns (image, (sx, sy)) with model_x = x * sx."""
    image = to_rgb(image)
    w, h = image.size
    new_h, new_w = smart_resize(h, w, spec.factor, spec.min_pixels, spec.max_pixels, spec.max_ratio)
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    return image, (new_w / w, new_h / h)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB copy of ``image``; transparent pixels become white (as qwen-vl-utils does)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        out = Image.new("RGB", rgba.size, (255, 255, 255))
        out.paste(rgba, mask=rgba.split()[3])
        return out
    return image.convert("RGB")


def video_frame_size(height: int, width: int, num_frames: int, spec: VisionSpec) -> tuple[int, int]:
    """(new_h, new_w) of every frame of a clip of ``num_frames`` frames (qwen-vl-utils budget rule).

    Per frame at most ``min(video_max_pixels, video_total_pixels / num_frames * 2)`` pixels (two frames
    share one temporal patch), and never less than 1.05 x ``video_min_pixels``.
    """
    max_pixels = max(
        min(spec.video_max_pixels, spec.video_total_pixels / num_frames * 2),
        int(spec.video_min_pixels * 1.05),
    )
    return smart_resize(height, width, spec.factor, spec.video_min_pixels, int(max_pixels), spec.max_ratio)


def processor_kwargs(spec: VisionSpec) -> dict[str, int]:
    """Keyword arguments for ``AutoProcessor.from_pretrained`` that keep the processor from resizing
    again. An image or frame already resized by ``spec`` passes the processor's smart-resize unchanged
    when the processor's pixel range contains ours; transformers applies these two keys to both its
    image and its video processor, so the range covers both."""
    return {
        "min_pixels": min(spec.min_pixels, spec.video_min_pixels),
        "max_pixels": max(spec.max_pixels, spec.video_max_pixels),
    }
