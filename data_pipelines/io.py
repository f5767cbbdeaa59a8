"""Atomic file writes: a reader never sees a partial output file.

Everything is written to a temporary name in the destination folder, flushed, then renamed over the
final name (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _umask_mode() -> int:
    """0o666 less the process umask: the mode ``open()`` would give a new file (mkstemp gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def finish_atomic(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Give the temporary file ordinary permissions and rename it over ``path``."""
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)


@contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8", fsync: bool = False
):
    """Open a temporary file next to ``path``; on clean exit rename it to ``path``, on error delete it.

    fsync: also flush to disk before the rename (survives power loss, costs milliseconds per file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    f: IO[Any] = os.fdopen(fd, mode, encoding=None if binary else encoding)
    try:
        yield f
        f.flush()
        if fsync:
            os.fsync(f.fileno())
        f.close()
        finish_atomic(tmp, path)
    except BaseException:
        f.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> int:
    """Write records one JSON object per line, atomically; returns the number written.

    A NaN or infinite number anywhere in a record is a ``ValueError`` naming the record (strict JSON
    has no such numbers, and ground truth must not have them); nothing is written then.
    """
    n = 0
    with atomic_open(path, "w") as f:
        for rec in records:
            try:
                line = json.dumps(rec, ensure_ascii=False, separators=(", ", ": "), allow_nan=False)
            except ValueError:
                rid = rec.get("id") if isinstance(rec, dict) else None
                raise ValueError(
                    f"{path}: record {rid!r} holds a NaN or infinite number; not written"
                ) from None
            f.write(line + "\n")
            n += 1
    return n


def save_image_atomic(image, path: str | os.PathLike, **save_kwargs: Any) -> None:
    """Save a PIL image through a temporary file (the format comes from ``path``'s suffix)."""
    path = Path(path)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}.get(path.suffix.lower(), None)
    with atomic_open(path, "wb") as f:
        image.save(f, format=fmt, **save_kwargs)
