"""Export a matplotlib figure's low-level elements (ChartMimic-style) and its PNG; runs inside the sandbox.

Elements, all JSON:

- ``texts``: every visible non-empty text: suptitle and figure texts, axes titles, axis labels, tick
  labels, legend title and entries, annotations and ``ax.text`` strings.
- ``types``: one entry per drawing call: ``line``, ``bar`` / ``barh``, ``scatter``, ``pie``, ``fill``,
  ``errorbar``, ``heatmap``, ``image``, ``patch`` or the lower-cased collection class.
- ``colors``: ``[type, "#rrggbb"]`` for each drawn element (each bar, wedge, line, scatter colour).
- ``layout``: ``[nrows, ncols, row0, row1, col0, col1]`` of each axes' grid cell (its position rounded
  to a 10x10 grid when the axes was placed by hand).
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.collections import LineCollection, PathCollection, PolyCollection, QuadMesh
from matplotlib.colors import to_hex, to_rgba
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.patches import Rectangle, Wedge

MAX_ITEMS = 512  # per element kind; a chart with more is truncated (its score is still meaningful)


def _hex(color: Any) -> str | None:
    try:
        rgba = to_rgba(color)
    except (ValueError, TypeError):
        return None
    if rgba[3] == 0:
        return None
    return to_hex(rgba, keep_alpha=False)


def _texts(fig: Any) -> list[str]:
    out: list[str] = []

    def add(t: Any) -> None:
        if t is not None and t.get_visible():
            s = t.get_text().strip()
            if s:
                out.append(s)

    if getattr(fig, "_suptitle", None) is not None:
        add(fig._suptitle)
    for t in fig.texts:
        add(t)
    for ax in fig.axes:
        for t in (ax.title, getattr(ax, "_left_title", None), getattr(ax, "_right_title", None)):
            add(t)
        add(ax.xaxis.label)
        add(ax.yaxis.label)
        for t in ax.get_xticklabels() + ax.get_yticklabels():
            add(t)
        for t in ax.texts:
            add(t)
        leg = ax.get_legend()
        if leg is not None:
            add(leg.get_title())
            for t in leg.get_texts():
                add(t)
    for leg in getattr(fig, "legends", []):
        for t in leg.get_texts():
            add(t)
    return out[:MAX_ITEMS]


def _drawn(ax: Any) -> tuple[list[str], list[list[str]]]:
    types: list[str] = []
    colors: list[list[str]] = []
    in_container: set[int] = set()
    for c in ax.containers:
        if isinstance(c, BarContainer):
            kind = "barh" if getattr(c, "orientation", "vertical") == "horizontal" else "bar"
            types.append(kind)
            for p in c.patches:
                in_container.add(id(p))
                h = _hex(p.get_facecolor())
                if h:
                    colors.append([kind, h])
        elif isinstance(c, ErrorbarContainer):
            types.append("errorbar")
            for a in c.get_children():
                in_container.add(id(a))
    for line in ax.lines:
        if id(line) in in_container or not line.get_visible() or len(line.get_xdata()) < 1:
            continue
        types.append("line")
        h = _hex(line.get_color())
        if h:
            colors.append(["line", h])
    wedges = [p for p in ax.patches if isinstance(p, Wedge)]
    if wedges:
        types.append("pie")
        colors += [["pie", h] for h in (_hex(w.get_facecolor()) for w in wedges) if h]
    for p in ax.patches:
        if id(p) in in_container or isinstance(p, Wedge) or not p.get_visible():
            continue
        kind = "rect" if isinstance(p, Rectangle) else "patch"
        types.append(kind)
        h = _hex(p.get_facecolor())
        if h:
            colors.append([kind, h])
    for coll in ax.collections:
        if id(coll) in in_container or not coll.get_visible():
            continue
        if isinstance(coll, PathCollection):
            kind = "scatter"
        elif isinstance(coll, QuadMesh):
            kind = "heatmap"
        elif isinstance(coll, PolyCollection):
            kind = "fill"
        elif isinstance(coll, LineCollection):
            kind = "lines"
        else:
            kind = type(coll).__name__.lower()
        types.append(kind)
        if kind != "heatmap":
            seen: list[str] = []
            for fc in list(coll.get_facecolor())[:MAX_ITEMS] or list(coll.get_edgecolor())[:MAX_ITEMS]:
                h = _hex(fc)
                if h and h not in seen:
                    seen.append(h)
            colors += [[kind, h] for h in seen]
    types += ["image"] * len(ax.images)
    return types, colors


def _layout(ax: Any) -> list[int]:
    spec = ax.get_subplotspec() if hasattr(ax, "get_subplotspec") else None
    if spec is not None:
        nrows, ncols = spec.get_gridspec().get_geometry()
        rows, cols = spec.rowspan, spec.colspan
        return [nrows, ncols, rows.start, rows.stop, cols.start, cols.stop]
    x0, y0, x1, y1 = ax.get_position().extents
    return [0, 0, round(y0 * 10), round(y1 * 10), round(x0 * 10), round(x1 * 10)]


def export_figure(fig: Any, width_px: int, height_px: int, dpi: int) -> tuple[bytes, dict[str, Any]]:
    """Render ``fig`` to a PNG of exactly ``width_px`` x ``height_px`` and export its elements."""
    fig.set_dpi(dpi)
    fig.set_size_inches(width_px / dpi, height_px / dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # also draws, so tick labels are final below
    types: list[str] = []
    colors: list[list[str]] = []
    layout: list[list[int]] = []
    for ax in fig.axes:
        t, c = _drawn(ax)
        types += t
        colors += c
        if ax.get_visible() and ax.axison:
            layout.append(_layout(ax))
    elements = {
        "texts": _texts(fig),
        "types": types[:MAX_ITEMS],
        "colors": colors[:MAX_ITEMS],
        "layout": layout[:MAX_ITEMS],
    }
    return buf.getvalue(), elements
