"""Rejection-sampling fine-tuning (RFT, STaR / DART-Math style): rounds between the SFT warm-up and GRPO.

One round (``rejection.*``, docs/rft.md):

1. take ``records`` training records (a new seeded slice of the training set each round);
2. sample ``k`` completions for each with the current model (the batched rollout of evaluation,
   seeded per record and pass, so the result does not depend on the batch size or the world size) and
   score them with the config's rewards;
3. DART budget: while a record has fewer than ``min_correct`` accepted samples, sample another ``k``
   for it, up to ``max_samples`` in all (the hard records get the samples a uniform K would deny them);
4. accept a completion when its total reward is >= ``threshold`` (and it stopped before
   ``rollout.max_completion_length``, unless ``keep_truncated``); deduplicate each record's accepted
   answers (``dedup``);
5. write them to ``<output_dir>/rejection/round_<r>.jsonl`` (and all rounds so far to
   ``accepted.jsonl``): the record with its answer as the ``response`` column, an SFT file as it is;
6. fine-tune on them with the SFT loss (``sft_steps`` steps of ``sft_batch_size``, a fresh AdamW at
   ``sft_lr``), evaluate on the held-out set, log the round (stage ``rejection``, step = round).

The trainer calls :func:`run_stage` once SFT is done; it runs the rounds not done yet (the count is in
the checkpointed state, and a checkpoint is written after each round when ``train.save_every > 0``), so
a resumed run never redoes a finished round.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from mmrft import distributed
from mmrft.checkpoint.files import write_text_atomic
from mmrft.config import ConfigError
from mmrft.data import step_indices
from mmrft.evaluation.answers import ParseOptions
from mmrft.evaluation.generation import Decoding, collect_generated, gather
from mmrft.evaluation.records import Scorer
from mmrft.selection import rebase_media_paths

# first-pass pass-rate buckets: (label, lo, hi), lo < rate <= hi (the first one is "exactly 0")
BUCKETS = (
    ("0", -1.0, 0.0),
    ("0-25", 0.0, 0.25),
    ("25-50", 0.25, 0.5),
    ("50-75", 0.5, 0.75),
    ("75-100", 0.75, 1.0),
)


@dataclass
class Accepted:
    """One accepted answer: the dataset index and id of its record, the completion and its total reward."""

    index: int
    id: str
    text: str
    reward: float


@dataclass
class RecordTally:
    """One record in one round: samples drawn, samples accepted (before dedup), answers kept (after it),
    the pass rate of its first ``k`` samples (the difficulty the buckets use) and the passes it got."""

    index: int
    id: str
    drawn: int = 0
    correct: int = 0
    kept: int = 0
    first_pass_rate: float = 0.0
    passes: int = 0


@dataclass
class RoundResult:
    """What one round's sampling found: the accepted answers (record order, then draw order), each
    sampled record's tally, the records that failed to load or encode, and the passes run."""

    accepted: list[Accepted]
    records: list[RecordTally]
    failed: int = 0
    passes: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def stats(self) -> dict[str, float]:
        """Acceptance rate, unsolved records, DART spending and, per first-pass bucket, records, samples
        and kept answers per record."""
        drawn = sum(r.drawn for r in self.records)
        out = {
            "records": float(len(self.records)),
            "samples": float(drawn),
            "accepted_samples": float(sum(r.correct for r in self.records)),
            "accepted": float(len(self.accepted)),
            "acceptance_rate": sum(r.correct for r in self.records) / drawn if drawn else 0.0,
            "records_unsolved": float(sum(r.correct == 0 for r in self.records)),
            "failed_records": float(self.failed),
            "passes": float(self.passes),
        }
        out["records_resampled"] = float(sum(r.passes > 1 for r in self.records))  # DART's extra passes
        for label, lo, hi in BUCKETS:
            rows = [r for r in self.records if lo < r.first_pass_rate <= hi]
            out[f"records_pass_{label}"] = float(len(rows))
            out[f"samples_per_record_pass_{label}"] = sum(r.drawn for r in rows) / len(rows) if rows else 0.0
            out[f"accepted_per_record_pass_{label}"] = sum(r.kept for r in rows) / len(rows) if rows else 0.0
        return out


def normalise(text: str) -> str:
    """The dedup key of an answer: its whitespace runs collapsed (linear time)."""
    return " ".join(text.split())


def pass_seed(seed: int, round_index: int, pass_index: int) -> int:
    """The sampling seed of one pass of one round (records are told apart inside it by their index)."""
    return (seed * 1_000_003 + (round_index + 1) * 65_537 + pass_index * 257 + 11) % (2**62)


def round_indices(cfg, n_train: int, round_index: int) -> list[int]:
    """The training records of a round: ``rejection.records`` (0 = all) positions of a seeded stream of
    epochs (the GRPO sampler's, with its own seed); the same list on every rank."""
    n = cfg.rejection.records or n_train
    idx, _ = step_indices(round_index, n, n_train, cfg.train.seed + 7, 0, 1, cfg.data.shuffle)
    return list(dict.fromkeys(idx))  # a slice larger than the dataset wraps around: each record once


def sample_round(
    model, processor, dataset, indices: list[int], scorer: Scorer, cfg, info: distributed.DistInfo,
    round_index: int,
) -> RoundResult:  # fmt: skip
    """Sample, score and accept for ``indices`` of ``dataset`` with the DART budget (collective under
    torchrun: every rank gets the whole result)."""
    rj = cfg.rejection
    tallies = {j: RecordTally(j, str(dataset.records[j]["id"])) for j in indices}
    answers: dict[int, list[Accepted]] = {j: [] for j in indices}
    seen: dict[int, set[str]] = {j: set() for j in indices}
    failed: set[int] = set()
    pending, passes = list(indices), 0
    while pending:
        n = min(rj.k, rj.max_samples - passes * rj.k)  # every pending record has drawn passes * k
        decoding = Decoding(
            n, rj.temperature, cfg.rollout.top_p, cfg.rollout.top_k, cfg.rollout.max_completion_length,
            pass_seed(cfg.train.seed, round_index, passes),
        )  # fmt: skip
        local, tally = collect_generated(
            model, processor, dataset, pending, scorer, decoding, cfg.rollout.max_prompt_length,
            rj.batch_size, info,
        )  # fmt: skip
        results, _ = gather(local, tally)
        for r in results:
            if r.status != "ok":
                failed.add(r.index)
                continue
            t = tallies[r.index]
            ok = [
                tot is not None and tot >= rj.threshold - 1e-6 and (rj.keep_truncated or not trunc)
                for tot, trunc in zip(r.total, r.truncated or [False] * len(r.total))
            ]
            if passes == 0:
                t.first_pass_rate = sum(ok) / len(ok)
            t.drawn += len(ok)
            t.passes += 1
            t.correct += sum(ok)
            for text, tot, good in zip(r.completions, r.total, ok):
                key = normalise(text)
                if good and not (rj.dedup and key in seen[r.index]):
                    seen[r.index].add(key)
                    answers[r.index].append(Accepted(r.index, t.id, text, float(tot)))
        passes += 1
        pending = [
            j
            for j in pending
            if j not in failed and tallies[j].correct < rj.min_correct and tallies[j].drawn < rj.max_samples
        ]
    accepted = [a for j in indices for a in answers[j]]
    for j in indices:
        tallies[j].kept = len(answers[j])
    return RoundResult(accepted, [tallies[j] for j in indices if j not in failed], len(failed), passes)


def write_accepted(path: Path, dataset, accepted: list[Accepted], round_index: int) -> None:
    """The accepted answers as an SFT JSONL (atomically): each line the record (media paths rebased to
    ``path``'s folder) with ``response`` = the answer, a unique ``id`` (``<record id>#r<round>-<n>``),
    ``source_id``, ``rft_round`` and ``rft_reward``."""
    base = Path(getattr(dataset, "base_dir", "."))
    lines, count = [], {}
    for a in accepted:
        n = count[a.index] = count.get(a.index, -1) + 1
        rec = rebase_media_paths(dataset.records[a.index], base, path.parent)
        rec = {**rec, "id": f"{a.id}#r{round_index}-{n}", "source_id": a.id, "response": a.text,
               "rft_round": round_index, "rft_reward": a.reward}  # fmt: skip
        lines.append(json.dumps(rec) + "\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(lines))


def _sft_round(trainer, accepted: list[Accepted], round_index: int) -> dict[str, float]:
    """``rejection.sft_steps`` SFT steps on the accepted answers (the same loss as the warm-up)."""
    from mmrft.trainer import make_optimizer

    cfg, info, rj = trainer.cfg, trainer.info, trainer.cfg.rejection
    trainer.optimizer, trainer.scheduler = make_optimizer(trainer.policy, cfg, "rejection")
    trainer.state["optimizer_stage"] = "rejection"
    losses = []
    for s in range(rj.sft_steps if accepted else 0):
        trainer._where = f"rejection round {round_index} sft step {s}"
        trainer._phase("update")
        idx, _ = step_indices(
            s, rj.sft_batch_size, len(accepted), cfg.train.seed + 11 + round_index, info.rank,
            info.world_size, cfg.data.shuffle,
        )  # fmt: skip
        picked = [accepted[i] for i in idx]
        samples = [trainer.data.train[a.index] for a in picked]
        loss = trainer.sft_update(samples, [a.text for a in picked])["loss"]
        losses.append(loss)
        trainer._phase(None)
        trainer._stop_if_diverged(trainer.state["step"] - 1, "rejection")  # saves at the current step
    return {
        "sft_steps": float(len(losses)),
        "sft_loss_first": losses[0] if losses else 0.0,
        "sft_loss_last": losses[-1] if losses else 0.0,
    }


def run_stage(trainer) -> None:
    """Run the rounds ``trainer.state["rejection_rounds"]`` .. ``rejection.rounds - 1`` (none once done)."""
    from mmrft.trainer import eval_metrics

    cfg, info = trainer.cfg, trainer.info
    rj = cfg.rejection
    done = trainer.state.get("rejection_rounds", 0)
    if done >= rj.rounds:
        return
    if rj.sft_batch_size % info.world_size:
        raise ConfigError(
            f"rejection.sft_batch_size={rj.sft_batch_size} must be divisible by the {info.world_size} processes"
        )
    out_dir = trainer.run_dir / "rejection"
    scorer = Scorer(trainer.rewards, ParseOptions.from_rewards(cfg.rewards), cfg.eval.pass_threshold)
    for r in range(done, rj.rounds):
        t0 = time.time()
        trainer._where = f"rejection round {r}"
        trainer._phase("generation")
        indices = round_indices(cfg, len(trainer.data.train), r)
        result = sample_round(
            trainer.policy, trainer.processor, trainer.data.train, indices, scorer, cfg, info, r
        )
        trainer._phase(None)
        if info.is_main:
            write_accepted(out_dir / f"round_{r}.jsonl", trainer.data.train, result.accepted, r)
            parts = [(out_dir / f"round_{i}.jsonl").read_text() for i in range(r + 1)]
            write_text_atomic(out_dir / "accepted.jsonl", "".join(parts))
        distributed.barrier()
        metrics = {**result.stats(), **_sft_round(trainer, result.accepted, r)}
        trainer._phase("eval", f"the evaluation after rejection round {r}")
        ev = trainer.evaluate(tag=f"rejection_{r}")
        trainer._phase(None)
        metrics.update(eval_metrics(ev))
        metrics["round_time"] = time.time() - t0
        trainer.tracker.log(r, "rejection", metrics)
        trainer.state["rejection_rounds"] = r + 1
        if info.is_main:
            tqdm.write(
                f"rejection round {r}: accepted {int(metrics['accepted'])} answers from "
                f"{int(metrics['samples'])} samples of {int(metrics['records'])} records (acceptance "
                f"{metrics['acceptance_rate']:.3f}, {int(metrics['records_unsolved'])} unsolved) -> "
                f"{out_dir / f'round_{r}.jsonl'}",
                file=sys.stderr,
            )
        if cfg.train.save_every:
            trainer.save(trainer.state["step"])
