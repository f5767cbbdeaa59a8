"""Pictures of answers: boxes on the ORIGINAL image, segments on a timeline of the sampled frames, a
chart's render beside the input chart. Pure PIL; every function returns a new RGB image.

Boxes arrive in original pixels (as :func:`mmrft.evaluation.parse_prediction` gives them), so they are
drawn on the user's image as uploaded, never on the resized copy the model saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# One colour per completion (#1, #2, ...); the ground truth is always TRUTH_COLOR.
PALETTE = ((230, 25, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240), (240, 50, 230),
           (128, 128, 0), (0, 0, 128))  # fmt: skip
TRUTH_COLOR = (60, 180, 75)


def color_of(k: int) -> tuple[int, int, int]:
    """The colour of completion ``k`` (0-based)."""
    return PALETTE[k % len(PALETTE)]


@dataclass
class DrawBox:
    """A box to draw: xyxy in the image's pixels, the text beside it, and the completion it belongs to
    (``index`` -1 = the ground truth)."""

    box: Sequence[float]
    text: str
    index: int


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(8, size))


def _label(draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, color, font, bounds) -> None:
    """``text`` on a filled tag whose lower-left corner is at ``xy``, kept inside ``bounds`` (w, h)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    w, h = right - left + 6, bottom - top + 4
    x = min(max(0.0, xy[0]), max(0.0, bounds[0] - w))
    y = xy[1] - h if xy[1] - h >= 0 else min(xy[1], max(0.0, bounds[1] - h))
    draw.rectangle([x, y, x + w, y + h], fill=color)
    draw.text((x + 3 - left, y + 2 - top), text, fill=(255, 255, 255), font=font)


def draw_boxes(image: Image.Image, boxes: Sequence[DrawBox]) -> Image.Image:
    """``image`` with each box outlined in its completion's colour and labelled; the ground truth in
    green, one pixel thicker, under the predictions."""
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    side = max(out.size)
    width = max(2, side // 150)
    font = _font(max(10, side // 40))
    for b in sorted(boxes, key=lambda b: b.index):  # truth first, completions over it
        color = TRUTH_COLOR if b.index < 0 else color_of(b.index)
        x1, y1, x2, y2 = (float(v) for v in b.box)
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width + (1 if b.index < 0 else 0))
        if b.text:
            _label(draw, (x1, y1), b.text, color, font, out.size)
    return out


def caption(image: Image.Image, lines: Sequence[tuple[str, tuple[int, int, int]]]) -> Image.Image:
    """``image`` with a white band below it holding one coloured line of text per entry."""
    image = image.convert("RGB")
    size = max(12, max(image.size) // 22)
    font = _font(size)
    band = (size + 6) * len(lines) + 6
    out = Image.new("RGB", (image.width, image.height + band), (255, 255, 255))
    out.paste(image, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, (text, color) in enumerate(lines):
        draw.text((6, image.height + 6 + k * (size + 6)), text, fill=color, font=font)
    return out


def timeline(
    frames: np.ndarray,
    timestamps: Sequence[float],
    duration: float,
    segments: Sequence[tuple[float, float, str, int]],
    max_thumbs: int = 12,
    thumb_height: int = 72,
) -> Image.Image:
    """Thumbnails of the sampled frames (uint8 [T, H, W, 3]) over a time axis from 0 to ``duration``
    seconds, each frame at its timestamp, with one bar per segment ``(start, end, text, index)``
    (index -1 = the ground truth, drawn first)."""
    t = len(frames)
    picks = sorted({int(round(x)) for x in np.linspace(0, t - 1, min(t, max_thumbs))}) if t else []
    h, w = (frames.shape[1], frames.shape[2]) if t else (thumb_height, thumb_height)
    tw = max(8, int(round(w * thumb_height / max(h, 1))))
    width = max(480, tw * len(picks) + 20)
    font = _font(13)
    rows = sorted(segments, key=lambda s: s[3])
    height = thumb_height + 44 + 22 * max(1, len(rows)) + 10
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    x0, x1 = 10, width - 10
    dur = max(
        float(duration), max([float(s[1]) for s in segments] + [float(ts) for ts in timestamps] + [1e-6])
    )

    def at(sec: float) -> float:
        return x0 + (x1 - x0) * min(max(sec, 0.0), dur) / dur

    axis_y = thumb_height + 14
    for i in picks:  # each thumbnail centred over its timestamp (kept inside the strip), framed
        thumb = Image.fromarray(frames[i]).convert("RGB").resize((tw, thumb_height))
        cx = at(float(timestamps[i])) if i < len(timestamps) else x0
        left = int(min(max(cx - tw / 2, x0), x1 - tw))
        out.paste(thumb, (left, 2))
        draw.rectangle([left, 2, left + tw - 1, thumb_height + 1], outline=(150, 150, 150))
        draw.line([cx, thumb_height + 2, cx, axis_y], fill=(150, 150, 150))
    draw.line([x0, axis_y, x1, axis_y], fill=(0, 0, 0), width=1)
    step = max(1, int(np.ceil(dur / 10)))
    for s in range(0, int(dur) + 1, step):
        draw.line([at(s), axis_y - 4, at(s), axis_y + 4], fill=(0, 0, 0))
        draw.text((at(s) - 4, axis_y + 5), f"{s}s", fill=(0, 0, 0), font=_font(10))
    for ts in timestamps:
        draw.line([at(float(ts)), axis_y - 2, at(float(ts)), axis_y], fill=(120, 120, 120))
    for r, (start, end, text, index) in enumerate(rows):
        y = axis_y + 22 + 22 * r
        color = TRUTH_COLOR if index < 0 else color_of(index)
        draw.rectangle([at(float(start)), y, max(at(float(end)), at(float(start)) + 2), y + 12], fill=color)
        draw.text((min(at(float(end)) + 6, x1 - 120), y - 1), text, fill=color, font=font)
    return out


def side_by_side(images: Sequence[tuple[str, Image.Image | None]], height: int = 240) -> Image.Image:
    """Images in a row, each scaled to ``height`` and titled; a missing one is a grey panel saying so."""
    font = _font(14)
    panels = []
    for title, im in images:
        if im is None:
            panel = Image.new("RGB", (height * 4 // 3, height), (235, 235, 235))
            ImageDraw.Draw(panel).text((10, height // 2 - 8), "no render", fill=(90, 90, 90), font=font)
        else:
            im = im.convert("RGB")
            panel = im.resize((max(1, round(im.width * height / im.height)), height))
        panels.append((title, panel))
    width = sum(p.width for _, p in panels) + 10 * (len(panels) + 1)
    out = Image.new("RGB", (width, height + 30), (255, 255, 255))
    draw = ImageDraw.Draw(out)
    x = 10
    for title, panel in panels:
        draw.text((x, 6), title, fill=(0, 0, 0), font=font)
        out.paste(panel, (x, 26))
        x += panel.width + 10
    return out
