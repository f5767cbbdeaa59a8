"""Drawing coloured shapes on small canvases, with their exact pixel boxes.

A shape of size ``s`` placed at ``(x0, y0)`` fills pixels inside the square ``[x0, x0+s) x [y0, y0+s)``;
its box is the tight xyxy box of the filled pixels in continuous coordinates (pixel ``x`` spans
``[x, x+1)``), so ``box = [x0, y0, x0+s, y0+s]`` for a circle, square, triangle or diamond.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 70, 230),
    "yellow": (235, 200, 0),
    "purple": (140, 40, 190),
    "orange": (245, 120, 0),
    "black": (20, 20, 20),
    "cyan": (0, 190, 210),
}


def _regular(n: int, rot: float = -math.pi / 2) -> list[tuple[float, float]]:
    pts = [(math.cos(rot + 2 * math.pi * k / n), math.sin(rot + 2 * math.pi * k / n)) for k in range(n)]
    return _fit_unit(pts)


def _star(n: int = 5, inner: float = 0.45) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = 1.0 if k % 2 == 0 else inner
        a = -math.pi / 2 + math.pi * k / n
        pts.append((r * math.cos(a), r * math.sin(a)))
    return _fit_unit(pts)


def _fit_unit(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Scale points so that their bounding box is exactly the unit square [0, 1]^2."""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return [((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in pts]


# Polygon vertices in the unit square; every one touches all four sides, so the box is the square.
POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "triangle": [(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)],
    "diamond": [(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)],
    "pentagon": _regular(5),
    "hexagon": _regular(6, rot=0.0),
    "star": _star(),
}
SHAPES = ("circle", *POLYGONS)


def background(size: int, kind: str, rng: np.random.Generator) -> Image.Image:
    """A ``size`` x ``size`` RGB canvas: ``plain`` (white) or ``noise`` (light RGB noise, 170-255)."""
    if kind == "plain":
        return Image.new("RGB", (size, size), (255, 255, 255))
    if kind == "noise":
        arr = rng.integers(170, 256, size=(size, size, 3), dtype=np.uint8)
        return Image.fromarray(arr, "RGB")
    raise ValueError(f"background must be 'plain' or 'noise', got {kind!r}")


def draw_shape(image: Image.Image, shape: str, color: str, x0: int, y0: int, s: int) -> list[int]:
    """Draw ``shape`` filling the square [x0, x0+s) x [y0, y0+s); returns its box [x0, y0, x0+s, y0+s]."""
    draw = ImageDraw.Draw(image)
    fill = COLORS[color]
    if shape == "circle":
        draw.ellipse([x0, y0, x0 + s - 1, y0 + s - 1], fill=fill)
    elif shape in POLYGONS:
        pts = [(x0 + u * (s - 1), y0 + v * (s - 1)) for u, v in POLYGONS[shape]]
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return [x0, y0, x0 + s, y0 + s]


def place_boxes(
    rng: np.random.Generator, n: int, image_size: int, min_size: int, max_size: int, gap: int = 2
) -> list[tuple[int, int, int]]:
    """``n`` non-overlapping squares (x0, y0, s) with sides in [min_size, max_size], ``gap`` pixels apart.

    Rejection sampling; when a square does not fit after 200 tries its side shrinks by 10% (never below
    ``min_size``: then a ValueError says the canvas is too small for ``n`` shapes).
    """
    placed: list[tuple[int, int, int]] = []
    for _ in range(n):
        hi = max_size
        for _attempt in range(2000):
            s = int(rng.integers(min_size, hi + 1))
            x0 = int(rng.integers(0, image_size - s + 1))
            y0 = int(rng.integers(0, image_size - s + 1))
            if all(
                x0 + s + gap <= px or px + ps + gap <= x0 or y0 + s + gap <= py or py + ps + gap <= y0
                for px, py, ps in placed
            ):
                placed.append((x0, y0, s))
                break
            if _attempt % 200 == 199:
                hi = max(min_size, int(hi * 0.9))
        else:
            raise ValueError(
                f"cannot place {n} shapes of side >= {min_size} px on a {image_size} px canvas; "
                "lower min_size_frac or the number of shapes"
            )
    return placed
