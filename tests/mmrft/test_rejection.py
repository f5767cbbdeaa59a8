"""Rejection-sampling fine-tuning on the tiny model: with a reward whose acceptance is known in advance
(every answer to an even-numbered record, none to an odd one), the DART budget, the accepted counts and
the written set are exactly as computed by hand; a round's SFT raises the accepted answers' log-prob; a
run resumed after the stage does not redo it."""

import json
from pathlib import Path

import torch

from data_pipelines.dataset import JsonlDataset
from mmrft import rejection
from mmrft.config import load_config
from mmrft.data import encode_targets, sft_target
from mmrft.evaluation.answers import ParseOptions
from mmrft.evaluation.records import Scorer
from mmrft.models.forward import completion_logprobs, encode_vision
from mmrft.rollout import encode_prompts
from mmrft.trainer import Trainer

PLUGINS = Path(__file__).with_name("reward_plugins.py")
EVEN = f"{PLUGINS}:even_record_reward"


def _cfg(tmp_path, shapes_dir, tiny_model_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=2", "rollout.max_completion_length=6",
        "train.prompts_per_step=2", "train.micro_batch_size=4",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=4", "eval.batch_size=4",
        f"rewards=[{{name: '{EVEN}'}}]",
        "rejection.records=6", "rejection.k=2", "rejection.batch_size=8",
        "rejection.keep_truncated=true", "rejection.dedup=false",
        *extra,
    ])  # fmt: skip


def _even(rid: str) -> bool:
    return int(rid.rsplit("-", 1)[-1]) % 2 == 0


def _sample(t: Trainer, r: int = 0) -> rejection.RoundResult:
    scorer = Scorer(t.rewards, ParseOptions.from_rewards(t.cfg.rewards))
    idx = rejection.round_indices(t.cfg, len(t.data.train), r)
    return rejection.sample_round(t.policy, t.processor, t.data.train, idx, scorer, t.cfg, t.info, r)


def test_dart_budget_and_accepted_counts_are_exact(tmp_path, shapes_dir, tiny_model_dir):
    # k 2, min_correct 3, max_samples 5: an even record has 2 accepted after pass 1 (< 3), 4 after pass 2
    # -> 4 drawn; an odd one never gets any: 2 + 2 + 1 (what the budget leaves) = 5 drawn, in 3 passes
    t = Trainer(
        _cfg(tmp_path, shapes_dir, tiny_model_dir, "rejection.min_correct=3", "rejection.max_samples=5")
    )
    res = _sample(t)
    even = [r for r in res.records if _even(r.id)]
    odd = [r for r in res.records if not _even(r.id)]
    assert len(res.records) == 6 and even and odd
    assert all((r.drawn, r.correct, r.kept, r.first_pass_rate) == (4, 4, 4, 1.0) for r in even)
    assert all((r.drawn, r.correct, r.kept, r.first_pass_rate) == (5, 0, 0, 0.0) for r in odd)
    assert res.passes == 3 and len(res.accepted) == 4 * len(even)
    assert [a.id for a in res.accepted] == [r.id for r in even for _ in range(4)]  # record order kept
    s = res.stats()
    assert s["samples"] == 4 * len(even) + 5 * len(odd)
    assert s["acceptance_rate"] == 4 * len(even) / (4 * len(even) + 5 * len(odd))
    assert s["records_unsolved"] == len(odd) and s["records_resampled"] == 6
    assert s["records_pass_0"] == len(odd) and s["records_pass_75-100"] == len(even)
    assert s["samples_per_record_pass_0"] == 5 and s["accepted_per_record_pass_75-100"] == 4
    # min_correct 0: one uniform pass of k, whatever was accepted
    one = _sample(Trainer(_cfg(tmp_path / "b", shapes_dir, tiny_model_dir, "rejection.min_correct=0")))
    assert one.passes == 1 and all(r.drawn == 2 for r in one.records)
    # the first pass is seeded alike: the same two answers per even record as the budgeted run's first two
    first = [(a.id, a.text) for r in even for a in [x for x in res.accepted if x.id == r.id][:2]]
    assert [(a.id, a.text) for a in one.accepted] == first


def test_dedup_keeps_each_distinct_answer_once(tmp_path, shapes_dir, tiny_model_dir):
    extra = (
        "rejection.k=6",
        "rejection.max_samples=6",
        "rollout.max_completion_length=2",
        "rejection.temperature=0.05",
    )
    full = _sample(Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, *extra)))
    dedup = _sample(Trainer(_cfg(tmp_path / "b", shapes_dir, tiny_model_dir, *extra, "rejection.dedup=true")))
    want = []  # sampling is seeded per record and pass: the same completions, the repeats left out
    for rid in dict.fromkeys(a.id for a in full.accepted):
        seen = set()
        for a in full.accepted:
            if a.id == rid and rejection.normalise(a.text) not in seen:
                seen.add(rejection.normalise(a.text))
                want.append((a.id, a.text))
    assert [(a.id, a.text) for a in dedup.accepted] == want
    assert len(want) < len(full.accepted)  # near-greedy: the answers repeat
    assert [r.correct for r in dedup.records] == [
        r.correct for r in full.records
    ]  # the budget counts samples


def _mean_logprob(t: Trainer, accepted) -> float:
    samples = [t.data.train[a.index] for a in accepted]
    with torch.no_grad():
        pb = encode_prompts(t.policy, t.processor, samples, 1024, t.info.device)
        ids, mask = encode_targets(t.processor.tokenizer, [a.text for a in accepted], t.info.device)
        lp = completion_logprobs(
            t.policy, pb, encode_vision(t.policy, pb), torch.arange(len(samples)), ids, mask
        )
    return float((lp * mask).sum() / mask.sum())


def test_round_writes_the_accepted_set_and_its_sft_raises_their_logprob(tmp_path, shapes_dir, tiny_model_dir):
    cfg = _cfg(
        tmp_path, shapes_dir, tiny_model_dir, "rejection.rounds=1", "rejection.sft_steps=4",
        "rejection.sft_lr=3e-3", "rejection.sft_batch_size=4", "grpo.steps=0",
    )  # fmt: skip
    t = Trainer(cfg)
    expected = _sample(t)  # what the round will sample (seeded): same weights, same completions
    before = _mean_logprob(t, expected.accepted)
    t.run()
    after = _mean_logprob(t, expected.accepted)
    assert after > before + 0.1, (before, after)
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "rejection" / "round_0.jsonl").read_text().splitlines()]
    assert [(x["source_id"], x["response"]) for x in lines] == [(a.id, a.text) for a in expected.accepted]
    assert len({x["id"] for x in lines}) == len(lines) and all(x["rft_round"] == 0 for x in lines)
    assert (run / "rejection" / "accepted.jsonl").read_text() == (
        run / "rejection" / "round_0.jsonl"
    ).read_text()
    ds = JsonlDataset(run / "rejection" / "round_0.jsonl")  # an SFT file as it is: images resolve
    assert [sft_target(ds[i], "answer_only") for i in range(len(ds))] == [a.text for a in expected.accepted]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r["stage"] == "rejection"]
    assert row["accepted"] == len(expected.accepted) and row["sft_steps"] == 4
    assert row["sft_loss_last"] < row["sft_loss_first"] and "eval_reward" in row
    assert (run / "eval" / "rejection_0" / "eval.json").is_file()


def test_resume_after_the_stage_does_not_redo_it(tmp_path, shapes_dir, tiny_model_dir, monkeypatch):
    common = ("rejection.rounds=1", "rejection.sft_steps=2", "grpo.steps=2", "train.save_every=1")
    a = Trainer(_cfg(tmp_path / "a", shapes_dir, tiny_model_dir, *common))
    a.run()
    part = _cfg(tmp_path / "b", shapes_dir, tiny_model_dir, *common)
    assert Trainer(part).run(stop_after=1) == {"stopped_at": 1}  # rejection, GRPO step 0, a "crash"
    b = Trainer(part, resume=True)
    assert b.state["rejection_rounds"] == 1 and b.state["step"] == 1

    def fail(*args, **kwargs):
        raise AssertionError("the rejection round ran again")

    monkeypatch.setattr(rejection, "sample_round", fail)
    b.run()
    rows = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["stage"] == "rejection" for r in rows) == 1
    for (n, p), (_, q) in zip(a.policy.named_parameters(), b.policy.named_parameters()):
        assert torch.equal(p, q), n


def test_rejection_is_off_by_default():
    cfg = load_config(None, ["model.tiny=tiny"])
    assert cfg.rejection.rounds == 0 and cfg.grpo.guidance == "none"
