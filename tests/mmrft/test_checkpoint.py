"""Checkpoint verification and the choice of what to resume: damaged, truncated and missing files are
found by the manifest and skipped with a warning naming them, never loaded; nothing to resume is an
error; retention keeps the newest K plus the best by an eval metric."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from mmrft import checkpoint
from mmrft.checkpoint import store
from mmrft.config import ConfigError, load_config
from mmrft.distributed import DistInfo
from mmrft.trainer import Trainer

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"
ONE = DistInfo()


def _cfg(run: Path, tiny_model_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}", f"train.output_dir={run}",
        "data.synthetic.n_train=16", "data.synthetic.n_eval=4", "data.synthetic.sft_examples=8",
        "sft.steps=1", "sft.batch_size=4", "grpo.steps=3", "train.save_every=1", "train.keep_last=0",
        "rollout.group_size=4", "rollout.max_completion_length=6", "train.prompts_per_step=4",
        "train.micro_batch_size=8", "train.lr=1e-3", "train.progress_bar=false", "train.tensorboard=false",
        "train.plot=false", "eval.max_samples=4", "eval.batch_size=4", f"rewards=[{{name: '{PLUGIN}'}}, accuracy]",
        *extra,
    ])  # fmt: skip


BEST = ["train.eval_every=1", "train.keep_best_metric=eval/reward/length_reward", "train.keep_best_mode=min"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """A finished run (1 SFT + 3 GRPO steps, an evaluation after each) with every checkpoint kept:
    step_0000001 .. step_0000004."""
    run = tmp_path_factory.mktemp("finished") / "run"
    Trainer(_cfg(run, tiny_model_dir, *BEST)).run()
    return run


@pytest.fixture
def run(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:07d}"


def test_a_finished_run_has_verified_checkpoints_with_manifests(finished_run):
    assert [s for s, _ in checkpoint.step_dirs(finished_run / "checkpoints")] == [4, 3, 2, 1]
    assert (finished_run / "checkpoints" / "latest").read_text() == "step_0000004"
    man = json.loads((_ckpt(finished_run, 4) / "manifest.json").read_text())
    assert man["step"] == 4 and man["layout"] == "full" and man["world_size"] == 1
    assert set(man["files"]) == {"model.pt", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                                 "config.yaml", "rng_rank0.pt"}  # fmt: skip
    size = (_ckpt(finished_run, 4) / "model.pt").stat().st_size
    assert man["files"]["model.pt"]["size"] == size and len(man["files"]["model.pt"]["sha256"]) == 64
    assert checkpoint.find_resumable(finished_run, ONE).path == _ckpt(finished_run, 4)


def _flip_4kib(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 4096):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))  # same size: only the checksum can tell


def test_flipped_bits_in_model_pt_are_detected_and_the_previous_checkpoint_is_resumed(
    run, tiny_model_dir, capsys
):
    _flip_4kib(_ckpt(run, 4) / "model.pt")
    step3 = torch.load(_ckpt(run, 3) / "model.pt", weights_only=True)
    trainer = Trainer(_cfg(run, tiny_model_dir, *BEST), resume=True)
    err = capsys.readouterr().err
    assert "resume: warning: skipped checkpoints/step_0000004: model.pt fails its SHA-256 check" in err
    assert "resume: resuming checkpoints/step_0000003: step 3 of 4 (grpo step 2 of 3)" in err
    assert trainer.state["step"] == 3
    for name, p in trainer.policy.state_dict().items():
        assert torch.equal(p, step3[name]), name  # the step-3 weights, not the damaged ones
    # the damaged checkpoint is kept for inspection, out of the way of retention and later resumes
    assert (
        not _ckpt(run, 4).exists()
        and (run / "checkpoints" / "rejected" / "step_0000004" / "model.pt").is_file()
    )


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda c: (c / "optimizer.pt").write_bytes((c / "optimizer.pt").read_bytes()[:1000]),
         r"optimizer.pt is 1000 bytes, the manifest says \d+ \(truncated or replaced\)"),
        (lambda c: (c / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda c: (c / "manifest.json").unlink(), r"manifest.json is missing \(the checkpoint was never finished\)"),
        (lambda c: (c / "manifest.json").write_text('{"files": '), "manifest.json is unreadable"),
        (lambda c: _flip_4kib(c / "rng_rank0.pt"), "rng_rank0.pt fails its SHA-256 check"),
    ],
)  # fmt: skip
def test_damaged_newest_checkpoint_falls_back_with_the_reason(run, damage, reason):
    damage(_ckpt(run, 4))
    sel = checkpoint.find_resumable(run, ONE)
    assert sel.path == _ckpt(run, 3)
    ((path, why),) = sel.skipped
    assert path == _ckpt(run, 4)
    assert __import__("re").match(reason, why), why


def test_missing_latest_pointer_or_missing_step_folder_resume_the_newest_valid_one(run):
    (run / "checkpoints" / "latest").unlink()
    sel = checkpoint.find_resumable(run, ONE)
    assert sel.path == _ckpt(run, 4) and sel.notes == [
        "checkpoints/latest is missing; taking the newest checkpoint that verifies"
    ]
    (run / "checkpoints" / "latest").write_text("step_0000004")
    shutil.rmtree(_ckpt(run, 4))  # the newest folder is gone; latest still names it
    sel = checkpoint.find_resumable(run, ONE)
    assert sel.path == _ckpt(run, 3) and sel.skipped == []
    assert sel.notes == [
        "checkpoints/latest points to step_0000004, which does not exist; taking the newest checkpoint that verifies"
    ]


def test_latest_behind_a_complete_newer_checkpoint_is_noted(run):
    (run / "checkpoints" / "latest").write_text("step_0000003")  # killed between the rename and the pointer
    sel = checkpoint.find_resumable(run, ONE)
    assert sel.path == _ckpt(run, 4)
    assert sel.notes == ["checkpoints/latest points to step_0000003, but step_0000004 is newer and complete"]


def test_no_valid_checkpoint_is_an_error_listing_each_one(run):
    for s in (1, 2, 3, 4):
        (_ckpt(run, s) / "scheduler.pt").write_bytes(b"")
    with pytest.raises(checkpoint.ResumeError, match=r"^no valid checkpoint to resume in .*checkpoints: "
                       r"step_0000004: scheduler.pt is 0 bytes.*; step_0000001: scheduler.pt is 0 bytes"):  # fmt: skip
        checkpoint.find_resumable(run, ONE)


def test_resume_with_nothing_to_resume_says_so_in_one_line(tmp_path, tiny_model_dir, capsys):
    from mmrft.cli import main

    for where in (tmp_path / "never-created", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        assert main(["train", "--resume", "--output-dir", str(where), f"model.path={tiny_model_dir}"]) == 1
        msg = capsys.readouterr().err.rstrip("\n")
        assert msg == (
            f"resume error: nothing to resume in {where}: {where / 'checkpoints'} holds no checkpoint; run "
            "without --resume to start this run (a folder left by a run that never saved is reused)"
        )
    assert not (tmp_path / "never-created").exists()  # a refused resume creates nothing


def test_rerun_without_resume_refuses_a_folder_with_checkpoints(run, tiny_model_dir):
    (run / "checkpoints" / "latest").unlink()  # even without the pointer: the step folders count
    with pytest.raises(FileExistsError, match="already holds checkpoints; pass --resume"):
        Trainer(_cfg(run, tiny_model_dir, *BEST))


# ---- a changed config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, listed",
    [
        ("rollout.group_size=2", "rollout.group_size: 4 -> 2"),
        ("sft.steps=3", "sft.steps: 1 -> 3"),
        ("train.lr=1e-2", "train.lr: 0.001 -> 0.01"),
        ("data.synthetic.n_train=128", "data.synthetic.n_train: 16 -> 128"),
        ("rewards=[accuracy]", "rewards: 2 -> 1; rewards[0].name:"),
    ],
)
def test_a_changed_config_stops_the_resume_listing_the_fields(run, tiny_model_dir, override, listed):
    config_before = (run / "config.yaml").read_bytes()
    data_before = {p: p.stat().st_mtime_ns for p in (run / "data").rglob("*")}
    with pytest.raises(checkpoint.ResumeError) as e:
        Trainer(_cfg(run, tiny_model_dir, *BEST, override, "train.log_every=2"), resume=True)
    msg = str(e.value)
    assert msg.startswith("the config differs from the one checkpoints/step_0000004 was written with, in ")
    assert listed in msg and "pass --resume-force" in msg
    assert "log_every" not in msg  # safe to change: not listed among the blockers
    assert (run / "config.yaml").read_bytes() == config_before  # the original config is kept
    assert {p: p.stat().st_mtime_ns for p in (run / "data").rglob("*")} == data_before  # data untouched
    assert not list(run.glob("config.resume-*.yaml")) and _ckpt(run, 4).is_dir()


def test_safe_fields_may_change_and_are_recorded(run, tiny_model_dir, capsys):
    config_before = (run / "config.yaml").read_bytes()
    trainer = Trainer(_cfg(run, tiny_model_dir, *BEST, "train.log_every=2", "train.keep_last=3"), resume=True)
    assert trainer.state["step"] == 4
    err = capsys.readouterr().err
    assert ("resume: warning: config changed (all safe to change): train.keep_last: 0 -> 3; "
            "train.log_every: 1 -> 2; recorded in config.resume-4.yaml") in err  # fmt: skip
    assert (run / "config.yaml").read_bytes() == config_before
    record = (run / "config.resume-4.yaml").read_text()
    assert record.startswith(
        "# resumed at step 4; changed from the checkpoint's config:\n#   train.keep_last"
    )
    assert load_config(run / "config.resume-4.yaml").train.log_every == 2


def test_resume_force_continues_with_the_new_learning_rate(run, tiny_model_dir, capsys):
    # resume at step 3 = GRPO step 2 of 3; the cosine schedule (no warmup, min ratio 0.1) gives
    # lr = 1e-2 * (0.1 + 0.9 * 0.5 * (1 + cos(pi * 2/3))) = 1e-2 * (0.1 + 0.45 * 0.5) = 3.25e-3
    shutil.rmtree(_ckpt(run, 4))
    with pytest.raises(checkpoint.ResumeError):
        Trainer(_cfg(run, tiny_model_dir, *BEST, "train.lr=1e-2"), resume=True)
    trainer = Trainer(_cfg(run, tiny_model_dir, *BEST, "train.lr=1e-2"), resume_force=True)
    assert "(--resume-force: 1 of these change training): train.lr: 0.001 -> 0.01" in capsys.readouterr().err
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(3.25e-3)
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(3.25e-3)
    assert "train.lr: 0.001 -> 0.01   (forced)" in (run / "config.resume-3.yaml").read_text()
    trainer.run()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    (last,) = [r for r in rows if r["stage"] == "grpo" and r["step"] == 2 and "lr" in r]
    assert last["lr"] == pytest.approx(3.25e-3)
    # the next checkpoint records the config the run now follows, so a plain --resume accepts it
    assert checkpoint.find_resumable(run, ONE).config["train"]["lr"] == 0.01


# ---- retention -------------------------------------------------------------------------------------


def _fake_ckpt(root: Path, step: int, metric: dict) -> None:
    d = root / f"step_{step:07d}"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"format": 1, "step": step, "files": {}, "metric": metric}))


@pytest.mark.parametrize(
    "mode, kept, best",
    [("max", [2, 5, 6], 2), ("min", [4, 5, 6], 4)],
)
def test_retention_keeps_the_newest_k_and_the_best_earliest_on_a_tie(tmp_path, mode, kept, best):
    root = tmp_path / "checkpoints"
    values = {1: 0.5, 2: 0.9, 3: 0.9, 4: 0.1, 5: 0.3, 6: None}  # 2 and 3 tie at the max: 2 came first
    for s, v in values.items():
        _fake_ckpt(root, s, {} if v is None else {"eval_reward": v, "eval/other": 5.0})
    (root / "step_0000000").mkdir()  # no manifest: not something retention wrote; never deleted
    store.apply_retention(root, store.Retention(keep_last=2, best_metric="eval_reward", best_mode=mode))
    assert sorted(s for s, _ in checkpoint.step_dirs(root)) == [0, *kept]
    assert (root / "best").read_text() == f"step_{best:07d}"
    assert not list(root.glob(".*"))  # deletions leave nothing half-removed behind


def test_retention_without_a_best_metric_keeps_only_the_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for s in range(1, 5):
        _fake_ckpt(root, s, {})
    store.apply_retention(root, store.Retention(keep_last=1))
    assert [s for s, _ in checkpoint.step_dirs(root)] == [4]
    store.apply_retention(root, store.Retention(keep_last=0))  # 0 keeps all
    assert [s for s, _ in checkpoint.step_dirs(root)] == [4]


def test_a_run_records_the_eval_metric_in_its_checkpoints_and_keeps_the_best(run):
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    # evaluations after GRPO steps 1, 2 (eval_every) and 3 (the end) = global steps 2, 3, 4; the one
    # before GRPO (grpo step 0) comes after the step-1 checkpoint was written, so step 1 has no metric
    name = "eval/reward/length_reward"
    evals = {r["step"] + 1: r[name] for r in rows if name in r and r["step"] > 0}
    assert sorted(evals) == [2, 3, 4]
    for s in (1, 2, 3, 4):
        man = json.loads((_ckpt(run, s) / "manifest.json").read_text())
        assert man["metric"] == ({name: evals[s]} if s > 1 else {})
    best = min(sorted(evals), key=lambda s: evals[s])  # keep_best_mode=min; the earliest on a tie
    assert (run / "checkpoints" / "best").read_text() == f"step_{best:07d}"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["best_checkpoint"] == {
        "path": f"checkpoints/step_{best:07d}",
        "step": best,
        name: evals[best],
    }
    store.apply_retention(run / "checkpoints", store.Retention(1, name, "min"))
    assert sorted(s for s, _ in checkpoint.step_dirs(run / "checkpoints")) == sorted({best, 4})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.keep_last=-1"], "train.keep_last: must be >= 0 (0 keeps every checkpoint), got -1"),
        (["train.keep_best_metric=reward"], "train.keep_best_metric: 'reward' is not an eval metric"),
        (["train.keep_best_metric=eval_reward", "train.save_every=2", "train.eval_every=3"],
         "train.keep_best_metric needs a checkpoint at every evaluation: train.eval_every=3 and sft.steps=0 "
         "must be multiples of train.save_every=2"),
        (["train.checkpoint_format=zip"], "train.checkpoint_format: 'zip' is not allowed; choose from auto, full, sharded"),
    ],
)  # fmt: skip
def test_retention_fields_are_validated_at_load(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, ["model.tiny=tiny", *overrides])
    assert str(e.value).startswith(message)


def test_a_checkpoint_past_the_end_of_the_new_config_is_refused_even_forced(run, tiny_model_dir):
    with pytest.raises(checkpoint.ResumeError, match=r"^checkpoints/step_0000004 is past the end of this "
                       r"config's run \(sft.steps \+ grpo.steps = 3\); give at least 4 steps"):  # fmt: skip
        Trainer(_cfg(run, tiny_model_dir, *BEST, "grpo.steps=2"), resume_force=True)


def test_the_safe_fields_are_real_config_fields_and_documented():
    from mmrft.checkpoint.resume import flatten
    from mmrft.config import Config, to_dict

    fields = set(flatten(to_dict(Config())))
    doc = (Path(__file__).resolve().parents[2] / "docs" / "resuming.md").read_text()
    for name in checkpoint.SAFE_TO_CHANGE:
        assert name in fields, name
        assert f"`{name}`" in doc, name
