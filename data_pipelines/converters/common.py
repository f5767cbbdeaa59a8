"""What every converter shares: the result summary, media placement, k-shot sampling, prompt text."""

from __future__ import annotations

import os
import random
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipelines.io import write_jsonl

MEDIA_MODES = ("link", "copy", "absolute")


@dataclass
class ConvertResult:
    """What a converter wrote: the JSONL path, record and class counts, and skips by reason."""

    path: Path
    records: int
    classes: dict[str, int] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        """Lines for the terminal: where, how many, per class (first 10), skipped with reasons."""
        lines = [f"wrote {self.records} records to {self.path}"]
        if self.classes:
            top = sorted(self.classes.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{k} {v}" for k, v in top[:10])
            more = f" (+{len(top) - 10} more)" if len(top) > 10 else ""
            lines.append(f"{len(self.classes)} classes: {shown}{more}")
        total = sum(self.skipped.values())
        reasons = ", ".join(f"{r} {c}" for r, c in self.skipped.most_common())
        lines.append(f"skipped {total}" + (f": {reasons}" if total else ""))
        return "\n".join(lines)


class MediaPlacer:
    """Puts source media files where the output records can reach them.

    mode ``link``: a symlink per file under ``out_dir/subdir`` (falls back to a copy where links are
    not allowed); ``copy``: a copy; ``absolute``: no file is placed, records hold absolute paths.
    Returns the path to write in the record (relative to ``out_dir``, or absolute).
    """

    def __init__(self, out_dir: Path, subdir: str, mode: str = "link"):
        if mode not in MEDIA_MODES:
            raise ValueError(f"media mode must be one of {MEDIA_MODES}, got {mode!r}")
        self.out_dir, self.subdir, self.mode = out_dir, subdir, mode
        self._done: dict[Path, str] = {}

    def place(self, src: Path, name: str | None = None) -> str:
        src = src.resolve()
        if src in self._done:
            return self._done[src]
        if self.mode == "absolute":
            rel = str(src)
        else:
            rel = f"{self.subdir}/{name or src.name}"
            dst = self.out_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.is_symlink() or dst.exists():
                dst.unlink()
            if self.mode == "link":
                try:
                    os.symlink(src, dst)
                except OSError:
                    shutil.copy2(src, dst)
            else:
                shutil.copy2(src, dst)
        self._done[src] = rel
        return rel


def k_shot(groups: dict[str, Sequence[Any]], k: int | None, seed: int) -> dict[str, list[Any]]:
    """At most ``k`` items per group, drawn without replacement by a seeded shuffle (all when k is None).

    Groups are visited in sorted order and each shuffled by its own ``random.Random(f"{seed}:{name}")``,
    so adding a class never changes the shots of another.
    """
    out = {}
    for name in sorted(groups):
        items = list(groups[name])
        if k is not None:
            random.Random(f"{seed}:{name}").shuffle(items)
            items = items[:k]
        out[name] = items
    return out


def finish(
    out_path: Path, records: list[dict[str, Any]], classes: Counter[str], skipped: Counter[str]
) -> ConvertResult:
    """Write the records atomically and build the result."""
    write_jsonl(out_path, records)
    return ConvertResult(out_path, len(records), dict(classes), skipped)


def output_path(out: str | os.PathLike, default_name: str) -> tuple[Path, Path]:
    """(jsonl path, folder): ``out`` ending in ``.jsonl`` is the file, else a folder holding ``default_name``."""
    out = Path(out)
    if out.suffix == ".jsonl":
        return out, out.parent
    return out / default_name, out
