"""Contact sheet of records with their ground truth drawn in the model's frame, to check data by eye.

Each cell shows the image exactly as the model sees it (resized), scaled to fit the cell, with the
boxes its task's spec draws (``draw_boxes``; ``per_frame_boxes`` on video frames) taken from
``Sample.solution`` (model frame): a box that misses its object here misses it for the model too.
Video records show a strip of sampled frames with their times and the ground-truth segment
(``draw_segment``) as a bar under the strip. Under every cell: the record id, task and the answer in
words (the spec's ``caption``).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_pipelines.dataset import RecordDataset
from data_pipelines.io import save_image_atomic
from data_pipelines.sample import Sample
from data_pipelines.tasks import get_task

BOX_COLORS = ((255, 0, 255), (0, 200, 255), (255, 140, 0), (0, 220, 0), (255, 0, 0))
CAPTION_LINES = 3


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _draw_boxes(draw: ImageDraw.ImageDraw, boxes, labels, k: float, dx: int, dy: int, font) -> None:
    for j, box in enumerate(boxes):
        if box is None:
            continue
        color = BOX_COLORS[j % len(BOX_COLORS)]
        x1, y1, x2, y2 = (v * k for v in box)
        draw.rectangle([dx + x1, dy + y1, dx + x2 - 1, dy + y2 - 1], outline=color, width=2)
        if labels:
            draw.text((dx + x1 + 2, dy + y1 + 1), str(labels[j]), fill=color, font=font)


def _boxes_in_pixels(sample: Sample, boxes: list, size: tuple[int, int]) -> list:
    """Model-frame boxes in pixels of the model image (``norm1000`` / ``norm1`` are rescaled)."""
    scale = {"norm1000": 1000.0, "norm1": 1.0}.get(sample.coord_space)
    if scale is None:
        return boxes
    w, h = size
    return [
        None if b is None else [b[0] * w / scale, b[1] * h / scale, b[2] * w / scale, b[3] * h / scale]
        for b in boxes
    ]


def _image_cell(sample: Sample, cell: int, font) -> Image.Image:
    out = Image.new("RGB", (cell, cell), (235, 235, 235))
    if not sample.images:
        ImageDraw.Draw(out).text((8, cell // 2), "(no image)", fill=(0, 0, 0), font=font)
        return out
    image = sample.images[0]
    k = min(cell / image.width, cell / image.height)
    shown = image.resize(
        (max(1, round(image.width * k)), max(1, round(image.height * k))), Image.Resampling.BILINEAR
    )
    dx, dy = (cell - shown.width) // 2, (cell - shown.height) // 2
    out.paste(shown, (dx, dy))
    draw = ImageDraw.Draw(out)
    spec = get_task(sample.task)
    if spec.draw_boxes is not None:
        boxes, labels = spec.draw_boxes(sample.solution)
        _draw_boxes(draw, _boxes_in_pixels(sample, boxes, image.size), labels, k, dx, dy, font)
    if len(sample.images) > 1:
        draw.text((4, 4), f"+{len(sample.images) - 1} images", fill=(255, 0, 0), font=font)
    return out


def _video_cell(sample: Sample, cell: int, font, strip: int = 8) -> Image.Image:
    clip = sample.video
    out = Image.new("RGB", (cell, cell), (235, 235, 235))
    draw = ImageDraw.Draw(out)
    spec = get_task(sample.task)
    segment = spec.draw_segment(sample.solution) if spec.draw_segment is not None else None
    picks = np.linspace(0, len(clip.frames) - 1, min(strip, len(clip.frames))).round().astype(int)
    cols = 4
    tw = cell // cols
    th = max(1, round(tw * clip.frames.shape[1] / clip.frames.shape[2]))
    k = tw / clip.frames.shape[2]
    for n, f in enumerate(picks):
        x, y = (n % cols) * tw, (n // cols) * (th + 12)
        out.paste(Image.fromarray(clip.frames[f]).resize((tw, th), Image.Resampling.BILINEAR), (x, y))
        draw.text((x + 2, y + th), f"{clip.timestamps[f]:.1f}s", fill=(0, 0, 0), font=font)
        if segment is not None and segment[0] <= clip.timestamps[f] <= segment[1]:
            # frames inside the ground-truth segment get a red frame
            draw.rectangle([x, y, x + tw - 1, y + th - 1], outline=(220, 0, 0), width=2)
        if spec.per_frame_boxes:
            box = sample.solution["boxes"][f]
            _draw_boxes(
                draw,
                _boxes_in_pixels(sample, [box], (clip.frames.shape[2], clip.frames.shape[1])),
                None,
                k,
                x,
                y,
                font,
            )
    if segment is not None and clip.duration > 0:
        s, e = segment
        bar_y = cell - 14
        draw.rectangle([0, bar_y, cell - 1, bar_y + 8], fill=(200, 200, 200))
        draw.rectangle(
            [s / clip.duration * (cell - 1), bar_y, e / clip.duration * (cell - 1), bar_y + 8],
            fill=(220, 0, 0),
        )
    return out


def render_cell(sample: Sample, cell: int = 256, font_size: int = 11) -> Image.Image:
    """One tile: the sample's media with ground truth, and a caption (id, task, answer)."""
    font = _font(font_size)
    body = _video_cell(sample, cell, font) if sample.video is not None else _image_cell(sample, cell, font)
    line_h = font_size + 3
    tile = Image.new("RGB", (cell, cell + CAPTION_LINES * line_h + 4), (255, 255, 255))
    tile.paste(body, (0, 0))
    draw = ImageDraw.Draw(tile)
    size = f"{sample.images[0].width}x{sample.images[0].height}" if sample.images else ""
    for n, text in enumerate((sample.id, f"{sample.task} {size}", get_task(sample.task).caption(sample))):
        while text and draw.textlength(text, font=font) > cell - 4:
            text = text[:-2]
        draw.text((2, cell + 2 + n * line_h), text, fill=(0, 0, 0), font=font)
    return tile


def contact_sheet(
    dataset: RecordDataset, n: int = 16, cell: int = 256, seed: int | None = None, columns: int | None = None
) -> Image.Image:
    """A grid of ``n`` records (the first ``n``, or a seeded random choice when ``seed`` is given)."""
    indices = list(range(len(dataset)))
    if seed is not None:
        random.Random(seed).shuffle(indices)
    samples: list[Sample] = []
    seen: set[str] = set()
    for i in indices:
        if len(samples) >= n:
            break
        s = dataset[i]
        if s.id not in seen:  # skip mode may hand the next good record for a bad one
            seen.add(s.id)
            samples.append(s)
    if not samples:
        raise ValueError("no records to preview")
    tiles = [render_cell(s, cell) for s in samples]
    cols = columns or min(len(tiles), max(1, round(len(tiles) ** 0.5)))
    rows = -(-len(tiles) // cols)
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * (tw + 4) + 4, rows * (th + 4) + 4), (90, 90, 90))
    for k, tile in enumerate(tiles):
        sheet.paste(tile, (4 + (k % cols) * (tw + 4), 4 + (k // cols) * (th + 4)))
    return sheet


def write_preview(dataset: RecordDataset, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Render ``contact_sheet(dataset, **kwargs)`` and save it as a PNG, atomically."""
    out = Path(out)
    save_image_atomic(contact_sheet(dataset, **kwargs), out)
    return out
