"""The manifest of a checkpoint: what a finished checkpoint holds, and the check that it still does.

``manifest.json`` is the last file written into a checkpoint folder before the folder is renamed into
place. It records the step, the config hash, the layout, the world size that wrote it, the eval metric
measured at that step (for retention), and the size and SHA-256 of every other file. ``verify`` rereads
every file; the work is split over the ranks (rank r hashes every W-th file), so a sharded checkpoint is
checked in parallel and no rank reads it all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mmrft import distributed
from mmrft.checkpoint.files import fsync_dir, fsync_file, sha256_file, write_text_atomic

MANIFEST = "manifest.json"
FORMAT = 1
# files every checkpoint has, besides its layout's weight files
COMMON = ("trainer_state.json", "config.yaml", "scheduler.pt")
LAYOUT_FILES = {"full": ("model.pt", "optimizer.pt"), "sharded": ("dcp/.metadata",)}


def _files_under(root: Path) -> list[str]:
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            if rel != MANIFEST and not name.startswith(f".{MANIFEST}.tmp"):
                out.append(rel)
    return sorted(out)


def write(folder: Path, step: int, meta: dict[str, Any], info: distributed.DistInfo) -> None:
    """Hash every file of the (complete) checkpoint in ``folder`` and write its manifest (collective:
    each rank fsyncs and hashes its share; rank 0 writes)."""
    names = distributed.broadcast_object(_files_under(folder) if info.is_main else None)
    mine = {}
    for name in distributed.my_share(names, info):
        path = folder / name
        fsync_file(path)
        mine[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    parts = distributed.gather_objects(mine)
    if info.is_main:
        files = {k: v for part in parts for k, v in part.items()}
        manifest = {"format": FORMAT, "step": step, **meta, "files": dict(sorted(files.items()))}
        write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
        fsync_dir(folder)


def read(folder: Path) -> dict[str, Any]:
    """The manifest of ``folder`` (raises OSError / ValueError when it is missing or unreadable)."""
    data = json.loads((folder / MANIFEST).read_text())
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
        raise ValueError("not a manifest (no 'files' mapping)")
    return data


def _structure_problem(manifest: dict[str, Any], step: int) -> str | None:
    if manifest.get("format") != FORMAT:
        return f"{MANIFEST} has format {manifest.get('format')!r}, this mmrft reads format {FORMAT}"
    if manifest.get("step") != step:
        return f"{MANIFEST} is for step {manifest.get('step')!r}, not {step}"
    layout = manifest.get("layout")
    if layout not in LAYOUT_FILES:
        return f"{MANIFEST} names an unknown layout {layout!r}"
    for name in COMMON + LAYOUT_FILES[layout]:
        if name not in manifest["files"]:
            return f"{MANIFEST} does not list {name}"
    return None


def _file_problem(folder: Path, name: str, entry: dict[str, Any]) -> str | None:
    path = folder / name
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != entry.get("size"):
        return f"{name} is {size} bytes, the manifest says {entry.get('size')} (truncated or replaced)"
    if sha256_file(path) != entry.get("sha256"):
        return f"{name} fails its SHA-256 check (the file is corrupt)"
    return None


def verify(folder: Path, step: int, info: distributed.DistInfo) -> str | None:
    """None when every file of the checkpoint is there with its recorded size and checksum, else the
    first problem found, in one line (collective; every rank returns the same answer)."""
    head: tuple[dict | None, str | None] = (None, None)
    if info.is_main:
        if not (folder / MANIFEST).is_file():
            head = (None, f"{MANIFEST} is missing (the checkpoint was never finished)")
        else:
            try:
                manifest = read(folder)
                head = (manifest, _structure_problem(manifest, step))
            except (OSError, ValueError) as e:
                head = (None, f"{MANIFEST} is unreadable ({type(e).__name__}: {e})")
    manifest, problem = distributed.broadcast_object(head)
    if problem is not None:
        return problem
    assert manifest is not None
    names = sorted(manifest["files"])
    mine = [
        p for n in distributed.my_share(names, info) if (p := _file_problem(folder, n, manifest["files"][n]))
    ]
    problems = [p for part in distributed.gather_objects(mine) for p in part]
    return min(problems) if problems else None
