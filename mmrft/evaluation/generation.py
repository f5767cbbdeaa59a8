"""Getting completions for this rank's share of the records: generated with the model, or read from a
predictions file; then parsed and scored (:class:`~mmrft.evaluation.records.Scorer`).

Records are split over ranks (rank r takes every W-th). Each rank runs the same number of batches
(shorter shards generate for a padding record whose output is dropped), so every rank runs the same
collectives. Sampling noise is seeded per record (``sample_seed(seed, -1 - index)``), so the
completions do not depend on the batch size, the rank or the world size. A record that fails to load
(missing or corrupt file) or to encode (prompt over ``max_prompt_length``) becomes a failed result.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from data_pipelines.records import RecordError
from data_pipelines.sample import Sample
from mmrft import distributed
from mmrft.data import sample_seed
from mmrft.evaluation.records import ChartTally, RecordResult, Scorer, failed_result
from mmrft.rollout import SamplingParams, encode_prompts, generate


@dataclass
class Decoding:
    """How completions are drawn (recorded in eval.json). temperature 0 is greedy; k completions each."""

    k: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    seed: int = 0

    @property
    def mode(self) -> str:
        return "greedy" if self.temperature <= 0 else "sampled"

    def params(self) -> SamplingParams:
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k)

    def check(self) -> None:
        if self.k < 1:
            raise ValueError(f"eval.k: must be >= 1, got {self.k}")
        if self.k > 1 and self.temperature <= 0:
            raise ValueError(
                f"eval.k={self.k} with eval.temperature={self.temperature}: greedy decoding gives {self.k} "
                "identical answers; set eval.temperature > 0 to sample"
            )

    def to_json(self) -> dict:
        return {"mode": self.mode, **asdict(self)}


def shard(indices: list[int], info: distributed.DistInfo, batch_size: int) -> list[list[int]]:
    """This rank's batches of ``indices``: every W-th, in batches of ``batch_size``, padded with empty
    batches so that every rank has ``ceil(ceil(n / W) / batch_size)`` of them."""
    mine = indices[info.rank :: info.world_size]
    n_batches = math.ceil(math.ceil(len(indices) / info.world_size) / batch_size) if indices else 0
    return [mine[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]


def load(dataset, j: int) -> Sample | str:
    """Record ``j`` loaded, or the one-line reason it cannot be (``FILE:LINE: record ID: problem``)."""
    try:
        return dataset.load(j)
    except RecordError as e:
        return f"{dataset.location(j)}: {e.message}"


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def _encode(model, processor, samples, max_prompt_length, device):
    """(PromptBatch of the samples that encode or None, their positions, {position: error} of the rest)."""
    if not samples:
        return None, [], {}
    try:
        return (
            encode_prompts(model, processor, samples, max_prompt_length, device),
            list(range(len(samples))),
            {},
        )
    except ValueError:
        good, bad = [], {}
        for b, s in enumerate(samples):
            try:
                encode_prompts(model, processor, [s], max_prompt_length, device)
                good.append(b)
            except ValueError as e:
                bad[b] = (str(e).splitlines() or [type(e).__name__])[0]
        kept = [samples[b] for b in good]
        pb = encode_prompts(model, processor, kept, max_prompt_length, device) if kept else None
        return pb, good, bad


def _first_loadable(dataset) -> Sample | None:
    for j in range(len(dataset)):
        s = load(dataset, j)
        if not isinstance(s, str):
            return s
    return None


@torch.no_grad()
def collect_generated(
    model,
    processor,
    dataset,
    indices: list[int],
    scorer: Scorer,
    decoding: Decoding,
    max_prompt_length: int,
    batch_size: int,
    info: distributed.DistInfo,
    progress: bool = False,
) -> tuple[list[RecordResult], ChartTally]:
    """Generate ``decoding.k`` completions for this rank's share of ``indices`` and score them."""
    batches = shard(indices, info, batch_size)
    was_training = model.training
    model.eval()
    results: list[RecordResult] = []
    tally = ChartTally()
    pad: list[Sample | None] = []  # the dataset's first loadable record, found when first needed
    bar = _progress(len(batches), progress and info.is_main, "eval")
    for idx in batches:
        loaded: list[tuple[int, Sample]] = []
        for j in idx:
            s = load(dataset, j)
            if isinstance(s, str):
                results.append(failed_result(j, dataset.records[j], "load_failed", s))
            else:
                loaded.append((j, s))
        pb, good, bad = _encode(model, processor, [s for _, s in loaded], max_prompt_length, info.device)
        for b, msg in bad.items():
            j = loaded[b][0]
            results.append(failed_result(j, dataset.records[j], "generate_failed", msg))
        run = [loaded[b] for b in good]
        seeds = [sample_seed(decoding.seed, -1 - j) for j, _ in run]
        if not run:  # keep step with the other ranks; the output is not used
            if not pad:
                pad.append(_first_loadable(dataset))
            if pad[0] is None:
                bar.update()
                continue  # no record of the dataset loads: every rank skips alike
            pb = encode_prompts(model, processor, [pad[0]], max_prompt_length, info.device)
            seeds = [0]
        ro = generate(
            model,
            processor,
            pb,
            decoding.k,
            decoding.params(),
            seeds,
            all_done=lambda f: distributed.all_true(f, info),
        )
        if run:
            K = decoding.k
            lengths = ro.completion_mask.sum(1).tolist()
            truncated = ro.truncated.tolist()
            items = [(j, s, ro.texts[b * K : (b + 1) * K]) for b, (j, s) in enumerate(run)]
            toks = [[int(x) for x in lengths[b * K : (b + 1) * K]] for b in range(len(run))]
            trunc = [[bool(x) for x in truncated[b * K : (b + 1) * K]] for b in range(len(run))]
            scored, t = scorer.score(items, toks, trunc)
            results += scored
            tally.add(t)
        bar.update()
    bar.close()
    if was_training:
        model.train()
    return results, tally


def collect_given(
    dataset,
    indices: list[int],
    completions_of: Callable[[str], list[str] | None],
    scorer: Scorer,
    batch_size: int,
    info: distributed.DistInfo,
    progress: bool = False,
) -> tuple[list[RecordResult], ChartTally]:
    """Score completions made elsewhere (``completions_of(record id)``, None when it has none)."""
    results: list[RecordResult] = []
    tally = ChartTally()
    batches = shard(indices, info, batch_size)
    bar = _progress(len(batches), progress and info.is_main, "score")
    for idx in batches:
        items = []
        for j in idx:
            rec = dataset.records[j]
            comps = completions_of(str(rec["id"]))
            if comps is None:
                results.append(failed_result(j, rec, "missing_prediction", "no prediction for this id"))
                continue
            s = load(dataset, j)
            if isinstance(s, str):
                results.append(failed_result(j, rec, "load_failed", s))
            else:
                items.append((j, s, comps))
        scored, t = scorer.score(items)
        results += scored
        tally.add(t)
        bar.update()
    bar.close()
    return results, tally


def gather(results: list[RecordResult], tally: ChartTally) -> tuple[list[RecordResult], ChartTally]:
    """Every rank's results (in record order) and the summed tally, on every rank."""
    parts = distributed.gather_objects((results, tally))
    merged: list[RecordResult] = []
    total = ChartTally()
    for rs, t in parts:
        merged += rs
        total.add(t)
    merged.sort(key=lambda r: r.index)
    return merged, total
