"""Choosing the checkpoint to resume, and comparing the config it was written with to the new one.

``find_resumable`` tries the step folders newest first and takes the first one whose manifest verifies;
every folder it skips is named with the reason. Nothing to resume, or nothing valid, is a
``ResumeError`` (one line), never a silent restart from step 0. ``config_changes`` lists the fields that
differ from the checkpoint's ``config.yaml``; the fields in ``SAFE_TO_CHANGE`` cannot change the trained
weights, the data or what is measured, so they may differ without ``--resume-force``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mmrft import distributed
from mmrft.checkpoint import manifest
from mmrft.checkpoint.files import fsync_dir, write_text_atomic
from mmrft.checkpoint.store import step_dirs
from mmrft.errors import UserError

# field -> why it is safe to change when resuming (documented in docs/resuming.md)
SAFE_TO_CHANGE = {
    "train.output_dir": "the run directory may be moved or renamed",
    "train.log_every": "how often metrics are written",
    "train.sample_every": "how often samples are written",
    "train.eval_every": "how often the held-out set is evaluated (evaluation never touches training state)",
    "train.save_every": "how often checkpoints are written",
    "train.keep_last": "checkpoint retention",
    "train.keep_best_metric": "checkpoint retention",
    "train.keep_best_mode": "checkpoint retention",
    "train.checkpoint_format": "the layout of later checkpoints (either layout loads)",
    "train.tensorboard": "an extra log",
    "train.plot": "an extra artefact",
    "train.progress_bar": "display only",
    "distributed.strategy": "how the run is laid out on processes (checkpoints load on any world size)",
    "distributed.backend": "the collective library",
    "distributed.timeout_s": "how long a collective may wait (a time limit, not the training)",
    "train.max_bad_steps": "when the non-finite guard stops a diverging run (skipped updates change nothing)",
    "watchdog.generation_s": "a time limit",
    "watchdog.reward_s": "a time limit",
    "watchdog.update_s": "a time limit",
    "watchdog.collective_s": "a time limit",
    "watchdog.eval_s": "a time limit",
    "watchdog.grace_s": "a time limit",
}


class ResumeError(UserError, RuntimeError):
    """Why a run cannot be resumed, in one line naming the folder, file or config field."""

    label = "resume error"


def say(message: str) -> None:
    """A resume message for the user (rank 0 calls it)."""
    print(f"resume: {message}", file=sys.stderr, flush=True)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted leaves of a config tree; lists of mappings (rewards) are indexed, other lists are leaves."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        out = {f"{prefix}": len(tree)} if prefix else {}
        for i, v in enumerate(tree):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: tree}


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of the fields that are not safe to change: equal hashes, nothing that matters differs."""
    kept = {k: v for k, v in flatten(config).items() if k not in SAFE_TO_CHANGE}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any

    @property
    def safe(self) -> bool:
        return self.field in SAFE_TO_CHANGE

    def __str__(self) -> str:
        return f"{self.field}: {self.old!r} -> {self.new!r}"


_ABSENT = "<absent>"


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Every field whose value differs (train.output_dir excluded), sorted by name."""
    a, b = flatten(old), flatten(new)
    keys = sorted((set(a) | set(b)) - {"train.output_dir"})
    return [
        Change(k, a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in keys
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    ]


def mismatch_message(name: str, changes: list[Change]) -> str:
    unsafe = [c for c in changes if not c.safe]
    return (
        f"the config differs from the one {name} was written with, in {len(unsafe)} field(s) that change "
        f"training: {'; '.join(map(str, unsafe))}. Restore them, or pass --resume-force to continue with "
        "the new values (the fields safe to change are listed in docs/resuming.md)"
    )


@dataclass
class Selection:
    """The checkpoint chosen for resuming and what was found on the way."""

    path: Path
    step: int
    config: dict[str, Any]
    skipped: list[tuple[Path, str]]  # newer folders that failed verification, and why
    notes: list[str]  # warnings about the ``latest`` pointer


def has_checkpoints(run_dir: Path) -> bool:
    return bool(step_dirs(run_dir / "checkpoints"))


def find_resumable(run_dir: Path, info: distributed.DistInfo) -> Selection:
    """The newest checkpoint of ``run_dir`` that verifies (collective: every rank gets the same)."""
    root = run_dir / "checkpoints"
    dirs = step_dirs(root)
    if not dirs:
        raise ResumeError(
            f"nothing to resume in {run_dir}: {root} holds no checkpoint; run without --resume to start "
            "this run (a folder left by a run that never saved is reused)"
        )
    notes = []
    pointer = root / "latest"
    target = pointer.read_text().strip() if pointer.is_file() else None
    if target is None:
        notes.append("checkpoints/latest is missing; taking the newest checkpoint that verifies")
    elif not (root / target).is_dir():
        notes.append(f"checkpoints/latest points to {target}, which does not exist; taking the newest "
                     "checkpoint that verifies")  # fmt: skip
    skipped: list[tuple[Path, str]] = []
    for step, path in dirs:
        reason = manifest.verify(path, step, info)
        if reason is None:
            if (
                target
                and target != path.name
                and (root / target).is_dir()
                and target not in {p.name for p, _ in skipped}
            ):
                notes.append(f"checkpoints/latest points to {target}, but {path.name} is newer and complete")
            config = yaml.safe_load((path / "config.yaml").read_text())
            return Selection(path, step, config, skipped, notes)
        skipped.append((path, reason))
    raise ResumeError(
        f"no valid checkpoint to resume in {root}: "
        + "; ".join(f"{p.name}: {r}" for p, r in skipped)
        + ". Restore the files, or start the run again in another directory"
    )


def set_aside(skipped: list[tuple[Path, str]], root: Path) -> list[Path]:
    """Move skipped checkpoints (newer than the one resumed) to ``checkpoints/rejected/`` (rank 0), out
    of the way of retention and of later resumes; they are kept for inspection, never deleted."""
    moved = []
    if not skipped:
        return moved
    dest_root = root / "rejected"
    dest_root.mkdir(exist_ok=True)
    for path, _ in skipped:
        dest = dest_root / path.name
        n = 1
        while dest.exists():
            n += 1
            dest = dest_root / f"{path.name}-{n}"
        os.replace(path, dest)
        moved.append(dest)
    fsync_dir(root)
    return moved


def record_changes(run_dir: Path, step: int, changes: list[Change], config: dict[str, Any]) -> Path:
    """Write the config a resumed run continues with as ``config.resume-<step>.yaml`` (the original
    ``config.yaml`` is never rewritten); its header lists what changed."""
    path = run_dir / f"config.resume-{step}.yaml"
    n = 1
    while path.exists():
        n += 1
        path = run_dir / f"config.resume-{step}-{n}.yaml"
    header = [f"# resumed at step {step}; changed from the checkpoint's config:"]
    header += [f"#   {c}{'' if c.safe else '   (forced)'}" for c in changes]
    write_text_atomic(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def open_run(
    run_dir: Path,
    config: dict[str, Any],
    info: distributed.DistInfo,
    *,
    resume: bool,
    force: bool,
    stages: tuple[int, int],
) -> Selection | None:
    """Start a new run (writing ``config.yaml``) or choose the checkpoint to resume and check its config
    (collective). ``stages``: (sft steps, grpo steps) of the new config. Every refusal (checkpoints
    present without ``resume``, nothing to resume, nothing valid, a changed config without ``force``) is
    raised before anything in the run directory is touched."""
    if not resume:
        if has_checkpoints(run_dir):
            raise FileExistsError(
                f"train.output_dir={str(run_dir)!r} already holds checkpoints; pass --resume to continue "
                "that run or choose another output directory (nothing is overwritten)"
            )
        if info.is_main:  # a new run; a folder left by a run that never saved is reused
            run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        distributed.barrier()
        return None
    sel = find_resumable(run_dir, info)
    sft, grpo = stages
    if sel.step > sft + grpo:
        raise ResumeError(
            f"checkpoints/{sel.path.name} is past the end of this config's run (sft.steps + grpo.steps = "
            f"{sft + grpo}); give at least {sel.step} steps, or start a new run"
        )
    changes = config_changes(sel.config, config)
    if info.is_main:
        for note in sel.notes:
            say(f"warning: {note}")
        for path, reason in sel.skipped:
            say(f"warning: skipped checkpoints/{path.name}: {reason}")
    if any(not c.safe for c in changes) and not force:
        raise ResumeError(mismatch_message(f"checkpoints/{sel.path.name}", changes))
    if info.is_main:
        for dest in set_aside(sel.skipped, run_dir / "checkpoints"):
            say(f"moved the skipped checkpoint to {dest.relative_to(run_dir)} (kept, never loaded)")
        if changes:
            record = record_changes(run_dir, sel.step, changes, config)
            forced = sum(not c.safe for c in changes)
            kind = f"--resume-force: {forced} of these change training" if forced else "all safe to change"
            say(
                f"warning: config changed ({kind}): {'; '.join(map(str, changes))}; recorded in {record.name}"
            )
        stage, k, n = ("sft", sel.step, sft) if sel.step < sft else ("grpo", sel.step - sft, grpo)
        done = (
            "; the run is complete: final/ and summary.json are written again"
            if sel.step == sft + grpo
            else ""
        )
        say(
            f"resuming checkpoints/{sel.path.name}: step {sel.step} of {sft + grpo} ({stage} step {k} of {n}){done}"
        )
    distributed.barrier()
    return sel
