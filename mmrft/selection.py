"""Difficulty-aware data selection (``mmrft data filter``): keep the records a model solves sometimes.

ThinkLite-VL and DART-Math select training data by how hard it is for the model: a GRPO group whose
answers are all right or all wrong has zero advantage everywhere, so it teaches nothing. For every
record this samples K answers with the model (the rollout's temperature / top-p / top-k and new-token
budget unless told otherwise), scores them with the config's rewards (the evaluation's
:class:`~mmrft.evaluation.records.Scorer`: an answer passes when its total reward reaches
``pass_threshold`` of the most its rewards can give), and writes each record's ``pass_rate``,
``mean_reward`` and ``pass_samples`` (K) into its line. Records whose pass rate lies in the band
``[lo, hi]`` are kept; the never-solved ones (pass rate 0) can be written apart for a later round.
Sampling is seeded per record, so the result is the same for a seed whatever the batch size or the
number of processes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrft import distributed
from mmrft.evaluation.answers import ParseOptions
from mmrft.evaluation.generation import Decoding, collect_generated, gather
from mmrft.evaluation.records import RecordResult, Scorer
from mmrft.scoring import RewardStack


def parse_band(text: str) -> tuple[float, float]:
    """``"0.1:0.9"`` -> (0.1, 0.9); both ends inclusive, 0 <= lo <= hi <= 1."""
    parts = str(text).split(":")
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"--keep {text!r}: expected LO:HI pass rates, e.g. 0.1:0.9") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"--keep {text!r}: need 0 <= LO <= HI <= 1")
    return lo, hi


@dataclass
class Difficulty:
    """One record's pass rate over its K samples and its mean total reward (None if none applied)."""

    id: str
    pass_rate: float
    mean_reward: float | None
    samples: int


@dataclass
class FilterResult:
    """Per scored record its difficulty (file order), the kept and unsolved ids, and the records that
    could not be scored (failed to load or encode)."""

    scored: list[Difficulty]
    kept: list[str]
    unsolved: list[str]
    failed: list[RecordResult] = field(default_factory=list)
    left_out: str = ""  # the dataset's summary of records it could not use at all


def difficulty(results: list[RecordResult]) -> tuple[list[Difficulty], list[RecordResult]]:
    """Pass rates of the scored results, and the failed ones."""
    scored, failed = [], []
    for r in results:
        if r.status != "ok":
            failed.append(r)
            continue
        totals = [t for t in r.total if t is not None]
        mean = sum(totals) / len(totals) if totals else None
        scored.append(Difficulty(r.id, sum(r.passed) / len(r.passed), mean, len(r.passed)))
    return scored, failed


def select(scored: list[Difficulty], band: tuple[float, float]) -> tuple[list[str], list[str]]:
    """(ids with lo <= pass rate <= hi, ids never solved)."""
    lo, hi = band
    eps = 1e-12
    kept = [d.id for d in scored if lo - eps <= d.pass_rate <= hi + eps]
    unsolved = [d.id for d in scored if d.pass_rate == 0.0]
    return kept, unsolved


def histogram(scored: list[Difficulty], k: int, width: int = 40) -> str:
    """Pass rates as text bars: one row per j/K for K <= 16, else ten bins."""
    if k <= 16:
        edges = [(j / k, j / k) for j in range(k + 1)]
        labels = [f"{j:>2}/{k}" for j in range(k + 1)]
    else:
        edges = [(b / 10, (b + 1) / 10) for b in range(10)]
        labels = [f"{a:.1f}-{b:.1f}" for a, b in edges]
    counts = []
    for b, (a, z) in enumerate(edges):
        if k <= 16:
            counts.append(sum(abs(d.pass_rate - a) < 1e-9 for d in scored))
        else:
            last = b == len(edges) - 1
            counts.append(sum(a <= d.pass_rate < z or (last and d.pass_rate == z) for d in scored))
    top = max(counts, default=0) or 1
    rows = [f"pass rate  records  (K={k}, {len(scored)} records)"]
    for label, c in zip(labels, counts):
        rows.append(f"{label:>9}  {c:>7}  {'#' * round(width * c / top)}")
    return "\n".join(rows)


def sample_pass_rates(
    model, processor, dataset, stack: RewardStack, cfg, info: distributed.DistInfo, *,
    k: int, temperature: float, seed: int, pass_threshold: float, progress: bool = False,
) -> FilterResult:  # fmt: skip
    """Sample ``k`` answers per record of ``dataset`` and score them (collective under torchrun)."""
    decoding = Decoding(
        k, temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_completion_length, seed
    )
    decoding.check()
    scorer = Scorer(stack, ParseOptions.from_rewards(cfg.rewards), pass_threshold)
    local, tally = collect_generated(
        model, processor, dataset, list(range(len(dataset))), scorer, decoding,
        cfg.rollout.max_prompt_length, cfg.eval.batch_size, info, progress,
    )  # fmt: skip
    results, _ = gather(local, tally)
    scored, failed = difficulty(results)
    return FilterResult(scored, [], [], failed)


def rebase_media_paths(rec: dict[str, Any], src_dir: Path, out_dir: Path) -> dict[str, Any]:
    """``rec`` with its relative media paths rewritten to resolve from ``out_dir``."""
    if src_dir.resolve() == out_dir.resolve():
        return rec

    def move(p: Any) -> Any:
        if not isinstance(p, str) or os.path.isabs(p):
            return p
        return os.path.relpath(src_dir / p, out_dir)

    out = dict(rec)
    if isinstance(out.get("images"), list):
        out["images"] = [move(p) for p in out["images"]]
    if isinstance(out.get("video"), dict):
        out["video"] = {**out["video"], "path": move(out["video"].get("path"))}
    elif isinstance(out.get("video"), str):
        out["video"] = move(out["video"])
    if isinstance(out.get("solution"), dict) and "image" in out["solution"]:
        out["solution"] = {**out["solution"], "image": move(out["solution"]["image"])}
    return out


def write_selection(
    data: str | Path,
    result: FilterResult,
    band: tuple[float, float],
    out: str | Path,
    unsolved: str | Path | None,
) -> FilterResult:
    """Write the kept records (and the unsolved ones) with their pass rates; returns ``result`` with
    ``kept`` / ``unsolved`` filled in."""
    from data_pipelines.dataset import read_jsonl

    data = Path(data)
    raw, _ = read_jsonl(data)
    by_id: dict[str, dict] = {}
    for rec in raw:
        if isinstance(rec, dict) and rec.get("id") is not None:
            by_id.setdefault(str(rec["id"]), rec)
    result.kept, result.unsolved = select(result.scored, band)
    info = {d.id: d for d in result.scored}

    def write(path: Path, ids: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for rid in ids:
                d = info[rid]
                rec = rebase_media_paths(by_id[rid], data.parent, path.parent)
                rec = {
                    **rec,
                    "pass_rate": d.pass_rate,
                    "mean_reward": d.mean_reward,
                    "pass_samples": d.samples,
                }
                f.write(json.dumps(rec) + "\n")

    write(Path(out), result.kept)
    if unsolved is not None:
        write(Path(unsolved), result.unsolved)
    return result


def report(result: FilterResult, k: int, temperature: float, seed: int, band, out, unsolved) -> str:
    """The histogram and what went where."""
    lines = [
        histogram(result.scored, k),
        f"scored {len(result.scored)} records ({k} samples each, temperature {temperature}, seed {seed}): "
        f"kept {len(result.kept)} with pass rate in [{band[0]}, {band[1]}] -> {out}",
        f"never solved: {len(result.unsolved)}" + (f" -> {unsolved}" if unsolved else ""),
    ]
    if result.failed or result.left_out:
        reasons = "; ".join(r.error for r in result.failed[:3])
        lines.append(
            f"not scored: {len(result.failed)} record(s) that failed to load or encode"
            + (f" ({reasons})" if reasons else "")
            + (f"; the dataset {result.left_out}" if result.left_out else "")
        )
    return "\n".join(lines)


def run_filter(
    cfg, data: str | Path, *, k: int, temperature: float, pass_threshold: float, band: tuple[float, float],
    out: str | Path, unsolved: str | Path | None = None, task_rewards: bool = False,
) -> tuple[FilterResult, distributed.DistInfo]:  # fmt: skip
    """``mmrft data filter``: load ``model.path`` and ``data``, sample, score, write (rank 0).
    task_rewards: score with each task's own reward instead of ``cfg.rewards``."""
    from data_pipelines.dataset import JsonlDataset
    from mmrft.config import RewardSpec
    from mmrft.data import vision_spec
    from mmrft.evaluation.runner import default_rewards
    from mmrft.models.forward import VLMOps
    from mmrft.models.loading import load_model

    if k < 1:
        raise ValueError(f"--k: must be >= 1, got {k}")
    if not Path(data).is_file():
        raise FileNotFoundError(f"--data: file not found: {data}")
    if task_rewards:  # no config names rewards: each task's own reward
        cfg.rewards = [RewardSpec(name) for name in default_rewards(data)]
    info = distributed.init(cfg.distributed.strategy, cfg.distributed.backend, cfg.train.device)
    dataset = JsonlDataset(data, vision=vision_spec(cfg), on_bad_record="skip")
    loaded = load_model(
        cfg.model.path,
        device=info.device,
        dtype=cfg.model.dtype,
        compute_dtype=cfg.model.compute_dtype,
        attn_implementation=cfg.model.attn_implementation,
        min_pixels=cfg.data.min_pixels,
        max_pixels=cfg.data.max_pixels,
    )
    result = sample_pass_rates(
        VLMOps(loaded.policy, loaded.compute_dtype), loaded.processor, dataset,
        RewardStack(cfg.rewards, info.device), cfg, info, k=k, temperature=temperature,
        seed=cfg.train.seed, pass_threshold=pass_threshold, progress=True,
    )  # fmt: skip
    if sum(dataset.skipped.values()):
        result.left_out = dataset.skipped_summary()
    if info.is_main:
        write_selection(data, result, band, out, unsolved)
    return result, info
