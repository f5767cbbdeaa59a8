"""Reading the trainer's columns: completion text, per-record solution, task, coordinate frame.

TRL passes only the dataset's columns, as lists (one entry per completion); a Hugging Face
``datasets`` table unifies dict keys across rows, so absent keys arrive as ``None``. Everything here
treats a missing column, a ``None`` entry and a ``None`` key alike.
"""

from __future__ import annotations

import json
import math
from typing import Any


def completion_text(completion: Any) -> str:
    """The text of one completion: a string, or TRL's ``[{"role": "assistant", "content": ...}]``.

    Content given as a list of parts (``[{"type": "text", "text": ...}]``) is joined. Anything else
    (``None``, bytes, numbers) becomes a string without raising.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, bytes):
        return completion.decode("utf-8", errors="replace")
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        msgs = [m for m in completion if isinstance(m, dict)]
        assistant = [m for m in msgs if m.get("role", "assistant") == "assistant"]
        return "".join(_content_text(m.get("content")) for m in (assistant or msgs))
    return "" if completion is None else str(completion)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return "" if content is None else str(content)


def column(columns: dict[str, Any], name: str, n: int) -> list[Any]:
    """Column ``name`` as a list of length ``n`` (``None`` entries where missing or too short)."""
    values = columns.get(name)
    if values is None:
        return [None] * n
    if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__len__"):
        return [values] * n  # a scalar broadcast to every completion
    values = list(values)
    return values[:n] + [None] * (n - len(values))


def solutions(columns: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The ``solution`` column as ``n`` dicts (``{}`` where missing; a JSON string is decoded)."""
    out = []
    for sol in column(columns, "solution", n):
        if isinstance(sol, str):
            try:
                sol = json.loads(sol)
            except (ValueError, RecursionError):
                sol = None
        out.append(sol if isinstance(sol, dict) else {})
    return out


def frame_size(coord_space: Any, image_size: Any) -> tuple[float, float] | None:
    """(width, height) to clip boxes to: 1000x1000 for ``norm1000``, else the image size, else None."""
    if coord_space == "norm1000":
        return (1000.0, 1000.0)
    if coord_space == "norm1":
        return (1.0, 1.0)
    if isinstance(image_size, (list, tuple)) and len(image_size) == 2:
        try:
            w, h = float(image_size[0]), float(image_size[1])
        except (TypeError, ValueError, OverflowError):
            return None
        if math.isfinite(w) and math.isfinite(h) and w > 0 and h > 0:
            return (w, h)
    return None


def resolve_device(device: Any) -> Any:
    """``device`` as a ``torch.device`` (CPU when None)."""
    import torch

    return torch.device("cpu") if device is None else torch.device(device)
