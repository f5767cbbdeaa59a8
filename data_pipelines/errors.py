"""``RecordError``: a record that breaks the schema or cannot be loaded (shared by records and tasks)."""

from __future__ import annotations

from typing import Any

from data_pipelines.geometry import BOX_PROBLEMS, is_finite_number


class RecordError(ValueError):
    """A record that breaks the schema or cannot be loaded.

    reason: short code counted in skip mode (``missing_file``, ``corrupt_image``, ``box_reversed`` ...).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


def fail(reason: str, message: str) -> None:
    """Raise ``RecordError(reason, message)``."""
    raise RecordError(reason, message)


def is_number(v: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def box_error(field: str, box: Any, reason: str) -> None:
    """Raise the ``RecordError`` of a box that ``geometry.check_box`` rejected for ``reason``."""
    fail(reason, f"{field} {box!r} {BOX_PROBLEMS.get(reason, 'is not a valid xyxy box')}")


def check_segment(seg: Any) -> None:
    """``[start_s, end_s]`` with finite 0 <= start < end, else ``RecordError``."""
    if not (isinstance(seg, list) and len(seg) == 2 and all(is_number(v) for v in seg)):
        fail("bad_type", f"solution.segment must be [start_s, end_s], got {seg!r}")
    if not all(is_finite_number(v) for v in seg):
        fail("non_finite", f"solution.segment {seg!r} has a NaN or infinite time")
    if not 0 <= seg[0] < seg[1]:
        fail("segment_reversed", f"solution.segment {seg} needs 0 <= start < end")
