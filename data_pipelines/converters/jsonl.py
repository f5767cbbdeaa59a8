"""Validate and normalise a user's own JSONL records: the check to run before training.

Every record is schema-checked and (with ``check_media``) loaded the way training loads it: images
decoded and resized, videos sampled, boxes checked against the image. Good records are written back
normalised: prompts as chat messages, media paths relative to the output file's folder.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.converters.common import ConvertResult, finish, output_path
from data_pipelines.dataset import JsonlDataset
from data_pipelines.records import RecordError
from data_pipelines.tasks import get_task
from data_pipelines.vision import VisionSpec


def rebase_media_paths(path: str, ds: JsonlDataset, out_dir: Path) -> str:
    src = ds.resolve(path).resolve()
    try:
        return os.path.relpath(src, out_dir.resolve())
    except ValueError:  # another drive on Windows
        return str(src)


def convert_jsonl(
    src: str | os.PathLike,
    out: str | os.PathLike,
    on_bad_record: str = "skip",
    vision: VisionSpec | None = None,
    check_media: bool = True,
) -> ConvertResult:
    """Check ``src`` and write its good records, normalised, to ``out`` (a .jsonl path or a folder)."""
    src = Path(src)
    ds = JsonlDataset(src, vision=vision, on_bad_record=on_bad_record)
    out_path, out_dir = output_path(out, src.name)
    if out_path.resolve() == src.resolve():
        raise ValueError(f"output {out_path} would overwrite the input; choose another path")
    skipped: Counter[str] = Counter(ds.skipped)
    tasks: Counter[str] = Counter()
    records: list[dict[str, Any]] = []
    for j, rec in enumerate(ds.records):
        if check_media:
            try:
                ds.load(j)
            except RecordError as e:
                if on_bad_record == "error":
                    raise RecordError(e.reason, f"{ds.location(j)}: {e.message}") from None
                skipped[e.reason] += 1
                continue
        norm = {k: v for k, v in rec.items() if v is not None}
        norm["images"] = [rebase_media_paths(p, ds, out_dir) for p in rec["images"]]
        if not norm["images"]:
            del norm["images"]
        if rec.get("video"):
            norm["video"] = dict(rec["video"], path=rebase_media_paths(rec["video"]["path"], ds, out_dir))
        paths = {
            k: rebase_media_paths(v, ds, out_dir)
            for k in get_task(rec["task"]).path_keys
            if (v := rec["solution"].get(k))
        }
        if paths:
            norm["solution"] = dict(rec["solution"], **paths)
        if norm.get("coord_space") == "pixel":
            del norm["coord_space"]
        records.append(norm)
        tasks[rec["task"]] += 1
    return finish(out_path, records, tasks, skipped)
