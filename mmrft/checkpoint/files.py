"""Atomic writes: a file or a folder is either the old one or the new one, whenever the process dies.

Files are written under a temporary name in the same folder, flushed to disk and renamed over the
target (``os.replace`` is atomic on POSIX). A folder is built under ``.NAME.tmp`` and swapped in: the old
one is renamed to ``.NAME.old``, the new one renamed into place, the old one deleted. A kill between the
two renames leaves ``.NAME.old`` and no ``NAME``; ``recover_dir`` (called before every swap and by the
readers) renames it back, so a reader always finds the old folder or the new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

CHUNK = 1 << 20


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(root: Path, files: bool = True) -> None:
    """fsync every folder under ``root`` (``root`` included) and, with ``files``, every file."""
    for dirpath, _, names in os.walk(root):
        if files:
            for name in names:
                fsync_file(Path(dirpath) / name)
        fsync_dir(Path(dirpath))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode())


def tmp_dir_for(final: Path) -> Path:
    """A fresh, empty build folder next to ``final`` (a stale one from a killed build is removed)."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def recover_dir(final: Path) -> None:
    """Undo a swap that was killed between its two renames (``.NAME.old`` present, ``NAME`` absent)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)
            fsync_dir(final.parent)


def replace_dir(tmp: Path, final: Path, files_synced: bool = False) -> None:
    """Swap the finished folder ``tmp`` in as ``final`` (durably), replacing any folder already there.
    ``files_synced``: the files were already fsynced (only the folders are, here)."""
    fsync_tree(tmp, files=not files_synced)
    recover_dir(final)
    old = final.with_name(f".{final.name}.old")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()
