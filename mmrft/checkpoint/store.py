"""Writing one checkpoint, reading it back, and retention (the folder layout is in the package docs)."""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mmrft import distributed
from mmrft.checkpoint import manifest
from mmrft.checkpoint.files import fsync_dir, replace_dir, tmp_dir_for, write_text_atomic

STEP_DIR = re.compile(r"step_(\d+)")


def step_path(root: Path, step: int) -> Path:
    return root / f"step_{step:07d}"


def step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished-looking checkpoint folder under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_DIR.fullmatch(p.name))]
    return sorted(found, reverse=True)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Retention:
    """Which checkpoints survive a save: the newest ``keep_last`` (0 = all), plus the best one by
    ``best_metric`` (an eval metric recorded in the manifests; ``best_mode`` max or min)."""

    keep_last: int = 2
    best_metric: str | None = None
    best_mode: str = "max"


def save(
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    state: dict[str, Any],
    info: distributed.DistInfo,
    *,
    config: dict[str, Any],
    config_hash: str,
    sharded: bool,
    retention: Retention = Retention(),
    metric: dict[str, float] | None = None,
) -> Path | None:
    """Write the checkpoint of ``step`` (collective: every rank calls it); return its folder on rank 0.

    Built in ``checkpoints/.step_N.tmp``, the manifest written last, then renamed into place and
    ``checkpoints/latest`` replaced: a kill at any point leaves the previous checkpoints as they were.
    ``sharded``: model and optimizer through torch.distributed.checkpoint (each rank its own shards), else
    one full state dict written by rank 0. ``metric``: {name: value} measured at this step, for retention.
    """
    root = run_dir / "checkpoints"
    final = step_path(root, step)
    tmp = final.with_name(f".{final.name}.tmp")
    if info.is_main:
        root.mkdir(parents=True, exist_ok=True)
        tmp_dir_for(final)
    distributed.barrier()
    if sharded:
        distributed.save_sharded(model, optimizer, tmp / "dcp")
    else:
        model_sd, optim_sd = distributed.full_state_dict(model, optimizer)
        if info.is_main:
            torch.save(model_sd, tmp / "model.pt")
            torch.save(optim_sd, tmp / "optimizer.pt")
        del model_sd, optim_sd
    if info.is_main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    torch.save(rng_state(), tmp / f"rng_rank{info.rank}.pt")  # the run directory is shared by all ranks
    distributed.barrier()
    meta = {
        "config_hash": config_hash,
        "layout": "sharded" if sharded else "full",
        "world_size": info.world_size,
        "metric": metric or {},
    }
    manifest.write(tmp, step, meta, info)
    if info.is_main:
        replace_dir(tmp, final, files_synced=True)  # manifest.write fsynced every file it hashed
        write_text_atomic(root / "latest", final.name)
        apply_retention(root, retention)
    distributed.barrier()
    return final if info.is_main else None


def _remove(path: Path) -> None:
    """Delete a checkpoint folder so that it vanishes at once (renamed first, then deleted)."""
    doomed = path.with_name(f".{path.name}.del")
    os.replace(path, doomed)
    fsync_dir(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def _metric(man: dict, name: str) -> float | None:
    value = (man.get("metric") or {}).get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def best_of(entries: list[tuple[int, Path, dict]], name: str, mode: str) -> tuple[int, Path, float] | None:
    """(step, folder, value) of the checkpoint with the best recorded ``name``; the earliest on a tie."""
    scored = sorted((s, p, v) for s, p, m in entries if (v := _metric(m, name)) is not None)
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda e: sign * e[2])  # max returns the first maximal entry: the earliest


def apply_retention(root: Path, retention: Retention) -> None:
    """Delete the checkpoints ``retention`` does not keep (rank 0, after a save)."""
    for stale in root.glob(".step_*.del"):
        shutil.rmtree(stale, ignore_errors=True)
    entries = []
    for s, p in step_dirs(root):
        try:
            entries.append((s, p, manifest.read(p)))
        except (OSError, ValueError):
            continue  # not a checkpoint this code wrote: never deleted here
    keep = {p for _, p, _ in (entries[: retention.keep_last] if retention.keep_last > 0 else entries)}
    if retention.best_metric:
        best = best_of(entries, retention.best_metric, retention.best_mode)
        if best is not None:
            keep.add(best[1])
            write_text_atomic(root / "best", best[1].name)
    for _, p, _ in entries:
        if p not in keep:
            _remove(p)


def load(path: Path, model, optimizer, scheduler, info: distributed.DistInfo) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and this rank's RNG from a verified checkpoint; return the
    trainer state. Either layout loads on any number of processes."""
    man = manifest.read(path)
    if man["layout"] == "sharded":
        distributed.load_sharded(model, optimizer, path / "dcp")
    else:
        model_sd = torch.load(path / "model.pt", map_location="cpu", weights_only=True)
        optim_sd = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        distributed.load_full_state_dict(model, optimizer, model_sd, optim_sd)
        del model_sd, optim_sd
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng_file = path / f"rng_rank{info.rank}.pt"
    if rng_file.is_file():  # a rank the writing run did not have keeps its seeded generators
        set_rng_state(torch.load(rng_file, weights_only=False))
    return json.loads((path / "trainer_state.json").read_text())


def best_checkpoint(run_dir: Path, name: str) -> dict[str, Any] | None:
    """{"path", "step", name: value} of the checkpoint ``checkpoints/best`` names, or None."""
    root = run_dir / "checkpoints"
    try:
        folder = root / (root / "best").read_text().strip()
        value = _metric(manifest.read(folder), name)
    except (OSError, ValueError):
        return None
    step = STEP_DIR.fullmatch(folder.name)
    if value is None or step is None:
        return None
    return {"path": f"checkpoints/{folder.name}", "step": int(step.group(1)), name: value}
