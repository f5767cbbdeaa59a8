"""Chart similarity: ChartMimic-style low-level element F1 and a masked SSIM visual score.

Element score (ChartMimic's low-level metric): the weighted mean of four F1 scores between the reference
and the candidate figure's exported elements (see ``rewards.sandbox.export``):

- text: multiset F1 of the exact text strings;
- type: multiset F1 of drawing types (``bar``, ``line``, ``scatter``, ...);
- color: soft F1 of ``(type, colour)`` pairs, matched one-to-one within a type by the Hungarian
  algorithm on ``max(0, 1 - CIEDE2000 / color_scale)``;
- layout: multiset F1 of the axes' grid cells.

A component that is empty in both figures is left out of the mean. Visual score: SSIM (Wang et al. 2004,
Gaussian window sigma 1.5, K1 0.01, K2 0.03) per RGB channel, averaged over the pixels where either render
has ink (dilated), so the white margins every chart shares do not inflate it.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Any, NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from rewards.chart.color import color_similarity

COMPONENTS = ("text", "type", "color", "layout")
MAX_ITEMS = 512  # per element kind, as exported; a forged export cannot make scoring slow
MAX_PIXELS = 40_000_000  # larger images are refused before decoding (decompression bombs)


class ElementScore(NamedTuple):
    """Per-component F1 (None where both figures have none) and their weighted mean."""

    text: float | None
    type: float | None
    color: float | None
    layout: float | None
    total: float


def _f1(matched: float, n_ref: int, n_pred: int) -> float | None:
    if n_ref == 0 and n_pred == 0:
        return None
    if n_ref == 0 or n_pred == 0 or matched <= 0:
        return 0.0
    p, r = matched / n_pred, matched / n_ref
    return 2 * p * r / (p + r)


def multiset_f1(ref: list[Any], pred: list[Any]) -> float | None:
    """F1 of two multisets (elements compared exactly; lists are compared as tuples)."""
    key = lambda x: tuple(x) if isinstance(x, list) else x  # noqa: E731
    cr, cp = Counter(map(key, ref)), Counter(map(key, pred))
    return _f1(sum((cr & cp).values()), len(ref), len(pred))


def color_f1(ref: list[list[str]], pred: list[list[str]], scale: float = 100.0) -> float | None:
    """Soft F1 of ``[type, "#rrggbb"]`` pairs: one-to-one matching within each type."""
    matched = 0.0
    for kind in {r[0] for r in ref} & {p[0] for p in pred}:
        rc = [r[1] for r in ref if r[0] == kind]
        pc = [p[1] for p in pred if p[0] == kind]
        sim = color_similarity(rc, pc, scale)
        rows, cols = linear_sum_assignment(-sim)
        matched += float(sim[rows, cols].sum())
    return _f1(matched, len(ref), len(pred))


def _items(elements: dict[str, Any], key: str) -> list[Any]:
    value = elements.get(key) if isinstance(elements, dict) else None
    return list(value[:MAX_ITEMS]) if isinstance(value, list) else []


def _strings(elements: dict[str, Any], key: str) -> list[str]:
    return [str(t)[:500] for t in _items(elements, key) if isinstance(t, (str, int, float))]


def _colors(elements: dict[str, Any]) -> list[list[str]]:
    return [
        [str(c[0])[:50], str(c[1])[:20]]
        for c in _items(elements, "colors")
        if isinstance(c, (list, tuple)) and len(c) == 2
    ]


def _layout(elements: dict[str, Any]) -> list[tuple[int, ...]]:
    out = []
    for cell in _items(elements, "layout"):
        if isinstance(cell, list) and len(cell) <= 8 and all(isinstance(v, (int, float)) for v in cell):
            out.append(tuple(int(v) for v in cell))
    return out


def element_score(
    ref: dict[str, Any],
    pred: dict[str, Any],
    weights: dict[str, float] | None = None,
    color_scale: float = 100.0,
) -> ElementScore:
    """Compare exported elements; ``weights`` per component (default equal). Untrusted ``pred`` is fine."""
    weights = {c: 1.0 for c in COMPONENTS} | dict(weights or {})
    text = multiset_f1(_strings(ref, "texts"), _strings(pred, "texts"))
    kind = multiset_f1(_strings(ref, "types"), _strings(pred, "types"))
    color = color_f1(_colors(ref), _colors(pred), color_scale)
    layout = multiset_f1(_layout(ref), _layout(pred))
    parts = {"text": text, "type": kind, "color": color, "layout": layout}
    num = sum(weights[c] * v for c, v in parts.items() if v is not None)
    den = sum(weights[c] for c, v in parts.items() if v is not None)
    return ElementScore(text, kind, color, layout, num / den if den > 0 else 1.0)


def load_rgb(data: bytes | str, size: tuple[int, int]) -> np.ndarray:
    """A PNG (bytes or path) as float RGB [H, W, 3] in [0, 1], composited on white and resized to ``size``
    (width, height). Raises ``ValueError`` when it is not a readable image."""
    try:
        im = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable image ({type(e).__name__})") from e
    if im.size[0] * im.size[1] > MAX_PIXELS:
        raise ValueError(f"image of {im.size[0]}x{im.size[1]} pixels is too large")
    try:
        im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ValueError(f"unreadable image ({type(e).__name__})") from e
    im = im.convert("RGBA")
    bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
    im = Image.alpha_composite(bg, im).convert("RGB")
    if im.size != size:
        im = im.resize(size, Image.BILINEAR)
    return np.asarray(im, dtype=np.float64) / 255.0


def ssim_map(a: np.ndarray, b: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """SSIM of two grey images [H, W] in [0, 1] at every pixel (Gaussian window), [H, W]."""
    c1, c2 = 0.01**2, 0.03**2
    f = lambda x: ndimage.gaussian_filter(x, sigma, mode="reflect")  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    var_a = f(a * a) - mu_a**2
    var_b = f(b * b) - mu_b**2
    cov = f(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def visual_score(ref: np.ndarray, pred: np.ndarray, ink: float = 0.03, dilate: int = 3) -> float:
    """Mean per-channel SSIM over the (dilated) pixels where either RGB image [H, W, 3] is not white."""
    if ref.shape != pred.shape:
        raise ValueError(f"image shapes differ: {ref.shape} vs {pred.shape}")
    mask = ((1 - ref).max(axis=2) > ink) | ((1 - pred).max(axis=2) > ink)
    if not mask.any():
        return 1.0
    mask = ndimage.binary_dilation(mask, iterations=dilate)
    per_channel = np.mean([ssim_map(ref[..., c], pred[..., c]) for c in range(3)], axis=0)
    return float(np.clip(per_channel[mask].mean(), 0.0, 1.0))
