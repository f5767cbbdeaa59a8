"""Whole evaluations: a model's generated answers (:func:`evaluate`, what the trainer and ``mmrft eval
--model`` run) or completions made elsewhere (:func:`evaluate_predictions`), each scored into an
:class:`~mmrft.evaluation.report.EvalReport` on the whole set (every rank's results gathered first)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.tasks import TASKS
from mmrft import distributed
from mmrft.evaluation.answers import ParseOptions
from mmrft.evaluation.generation import Decoding, collect_generated, collect_given, gather
from mmrft.evaluation.metrics import summarize
from mmrft.evaluation.records import ChartTally, RecordResult, Scorer, failed_result
from mmrft.evaluation.report import EvalReport, read_predictions
from mmrft.scoring import RewardStack


def task_rewards(task: str) -> tuple[str, ...]:
    """The rewards that score ``task`` when no config names any (its spec's ``default_rewards``;
    docs/eval.md); none for an unknown task."""
    return TASKS[task].default_rewards if task in TASKS else ()


def default_rewards(data: str | Path) -> list[str]:
    """Each task's own rewards, for the tasks in the JSONL ``data`` (when no config names rewards)."""
    from data_pipelines.dataset import read_jsonl

    records, _ = read_jsonl(data)
    tasks = dict.fromkeys(r.get("task") for r in records if isinstance(r, dict))
    return list(dict.fromkeys(name for t in tasks for name in task_rewards(t))) or ["accuracy"]


def decoding_of(cfg) -> Decoding:
    """The evaluation decoding a config asks for (``eval.*``; new tokens from ``rollout``)."""
    d = Decoding(
        k=cfg.eval.k,
        temperature=cfg.eval.temperature,
        max_new_tokens=cfg.rollout.max_completion_length,
        seed=cfg.train.seed,
    )
    d.check()
    return d


def invalid_results(dataset) -> list[RecordResult]:
    """Failed results for the records a skip-mode JSONL dataset left out (broken schema, missing file),
    each with its one-line reason; lines without a usable id and task are only counted."""
    path = getattr(dataset, "path", None)
    if path is None or not getattr(dataset, "skipped", None):
        return []
    from data_pipelines.dataset import RecordDataset, read_jsonl
    from data_pipelines.records import RecordError

    kept = {str(r["id"]) for r in dataset.records}
    raw, lines = read_jsonl(path)
    out: list[RecordResult] = []
    for rec, line in zip(raw, lines):
        if not isinstance(rec, dict) or rec.get("task") not in TASKS or rec.get("id") is None:
            continue
        if str(rec["id"]) in kept:
            continue
        try:
            RecordDataset([rec], dataset.base_dir, dataset.vision, "error", str(path), [line])
            error = f"{path}:{line}: record {rec['id']!r}: left out by the dataset"
        except RecordError as e:
            error = str(e)
        sol = rec.get("solution") if isinstance(rec.get("solution"), dict) else {}
        out.append(failed_result(len(dataset) + len(out), {**rec, "solution": sol}, "load_failed", error))
    return out


def _in_file_order(results: list[RecordResult], dataset) -> list[RecordResult]:
    """Results sorted as their records appear in the file (left-out records among the others)."""
    path = getattr(dataset, "path", None)
    if path is None or all(r.index < len(dataset) for r in results):
        return results
    from data_pipelines.dataset import read_jsonl

    pos = {}
    for k, rec in enumerate(read_jsonl(path)[0]):
        if isinstance(rec, dict) and rec.get("id") is not None:
            pos.setdefault(str(rec["id"]), k)
    return sorted(results, key=lambda r: pos.get(r.id, len(pos)))


def build_report(
    results: list[RecordResult],
    tally: ChartTally,
    scorer: Scorer,
    k: int,
    dataset,
    decoding: dict[str, Any],
    meta: dict[str, Any],
    unknown_ids: list[str] = (),  # type: ignore[assignment]
) -> EvalReport:
    """Metrics and record counts of gathered results."""
    metrics = summarize(results, scorer.names, k, scorer.options, tally)
    status = Counter(r.status for r in results)
    skipped = dict(getattr(dataset, "skipped", {}) or {})
    records: dict[str, Any] = {
        "in_file": len(dataset) + sum(skipped.values()),
        "evaluated": len(results),
        "ok": status.get("ok", 0),
        "load_failed": status.get("load_failed", 0),
        "generate_failed": status.get("generate_failed", 0),
        "missing_prediction": status.get("missing_prediction", 0),
        "parse_failed": sum(not p.ok for r in results for p in r.predictions),
        # lines left out that name no usable id and task: in no task's metrics, only counted here
        "unusable": sum(skipped.values()) - sum(r.index >= len(dataset) for r in results),
    }
    if skipped:
        records["left_out_reasons"] = skipped
    if unknown_ids:
        records["unknown_prediction_ids"] = len(unknown_ids)
    meta = {**meta}
    if unknown_ids:
        meta["unknown_prediction_ids"] = list(unknown_ids)
    return EvalReport(metrics, results, decoding, records, meta)


def evaluate(
    model, processor, dataset, stack: RewardStack, cfg, info: distributed.DistInfo,
    *, limit: int | None = None, progress: bool = False, meta: dict[str, Any] | None = None,
) -> EvalReport:  # fmt: skip
    """Generate for the first ``limit`` records (every record when None) and score them.

    Collective under torchrun: every rank calls it; every rank gets the same report.
    """
    decoding = decoding_of(cfg)
    n = len(dataset) if limit is None else min(len(dataset), limit)
    scorer = Scorer(stack, ParseOptions.from_rewards(cfg.rewards), cfg.eval.pass_threshold)
    local, tally = collect_generated(
        model, processor, dataset, list(range(n)), scorer, decoding,
        cfg.rollout.max_prompt_length, cfg.eval.batch_size, info, progress,
    )  # fmt: skip
    results, tally = gather(local, tally)
    if limit is None:
        results = _in_file_order(results + invalid_results(dataset), dataset)
    return build_report(results, tally, scorer, decoding.k, dataset, decoding.to_json(), meta or {})


def evaluate_predictions(
    dataset, predictions: str | Path, stack: RewardStack, cfg, info: distributed.DistInfo,
    *, limit: int | None = None, progress: bool = False, meta: dict[str, Any] | None = None,
) -> EvalReport:  # fmt: skip
    """Score the completions of a predictions file against ``dataset`` (no model is loaded).

    A record without a prediction is a ``missing_prediction`` result (wrong); a prediction whose id
    is no record's is listed under ``unknown_prediction_ids``.
    """
    given, k = read_predictions(predictions)
    n = len(dataset) if limit is None else min(len(dataset), limit)
    invalid = invalid_results(dataset) if limit is None else []
    ids = {str(dataset.records[j]["id"]) for j in range(len(dataset))} | {r.id for r in invalid}
    unknown = [rid for rid in given if rid not in ids]
    scorer = Scorer(stack, ParseOptions.from_rewards(cfg.rewards), cfg.eval.pass_threshold)
    local, tally = collect_given(
        dataset, list(range(n)), given.get, scorer, cfg.eval.batch_size, info, progress
    )
    results, tally = gather(local, tally)
    results = _in_file_order(results + invalid, dataset)
    meta = {"predictions": str(predictions), **(meta or {})}
    decoding = {"mode": "external", "k": k}  # made elsewhere: this run cannot know how
    return build_report(results, tally, scorer, k, dataset, decoding, meta, unknown)


def run_eval(
    cfg, *, predictions: str | None = None, limit: int | None = None, config_path: str | None = None
) -> tuple[EvalReport, distributed.DistInfo]:
    """``mmrft eval``: load ``data.eval_file`` (and ``model.path`` unless scoring ``predictions``), score."""
    from data_pipelines.dataset import JsonlDataset
    from mmrft.data import vision_spec

    info = distributed.init(
        cfg.distributed.strategy, cfg.distributed.backend, cfg.train.device, cfg.distributed.timeout_s
    )
    # every record is scored: bad ones are counted and reported, not fatal
    dataset = JsonlDataset(cfg.data.eval_file, vision=vision_spec(cfg), on_bad_record="skip")
    stack = RewardStack(cfg.rewards, info.device)
    meta = {"data": str(cfg.data.eval_file), "config": config_path, "world_size": info.world_size,
            "rewards": [{"name": s.name, "weight": s.weight, "params": s.params} for s in cfg.rewards],
            "pass_threshold": cfg.eval.pass_threshold}  # fmt: skip
    if predictions is not None:
        report = evaluate_predictions(
            dataset, predictions, stack, cfg, info, limit=limit, progress=True, meta={"model": None, **meta}
        )
        return report, info
    from mmrft.models.forward import VLMOps
    from mmrft.models.loading import load_model

    loaded = load_model(
        cfg.model.path,
        device=info.device,
        dtype=cfg.model.dtype,
        compute_dtype=cfg.model.compute_dtype,
        attn_implementation=cfg.model.attn_implementation,
        min_pixels=cfg.data.min_pixels,
        max_pixels=cfg.data.max_pixels,
    )
    model = VLMOps(loaded.policy, loaded.compute_dtype)
    meta = {"model": str(cfg.model.path), **meta}
    report = evaluate(
        model, loaded.processor, dataset, stack, cfg, info, limit=limit, progress=True, meta=meta
    )
    return report, info
