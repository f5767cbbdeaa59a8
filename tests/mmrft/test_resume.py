"""A resumed run's weights and logs equal an uninterrupted run's: rows written after the checkpoint are cut
from metrics.jsonl and samples.jsonl (a torn last line too), TensorBoard purges them; both checkpoint
layouts resume bit for bit. Wall-clock fields (step_time) are the only ones left out of the comparison."""

import json
from pathlib import Path

import pytest
import torch

from mmrft.config import load_config
from mmrft.tracking import cut_jsonl, plot_rewards, read_jsonl
from mmrft.trainer import Trainer

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"
WALL_CLOCK = {"step_time"}


def _measured(name: str) -> bool:
    """Wall-clock time and peak memory: measurements that differ from run to run."""
    return name in WALL_CLOCK or name.startswith("mem/")


def _cfg(run: Path, tiny_model_dir, shapes_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}", f"train.output_dir={run}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        "sft.steps=1", "sft.batch_size=4", "grpo.steps=3", "train.save_every=2", "train.sample_every=1",
        "train.eval_every=1", "rollout.group_size=4", "rollout.max_completion_length=6",
        "train.prompts_per_step=4", "train.micro_batch_size=8", "train.lr=1e-3", "grpo.num_iterations=2",
        "train.progress_bar=false", "train.tensorboard=true", "train.plot=false", "eval.max_samples=4",
        "eval.batch_size=4", f"rewards=[{{name: '{PLUGIN}'}}, accuracy]",
        *extra,
    ])  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not _measured(k)} for r in read_jsonl(path)]


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return {
        tag: [(e.step, e.value) for e in acc.Scalars(tag)]
        for tag in acc.Tags()["scalars"]
        if not _measured(tag.split("/", 1)[-1])  # "<stage>/<metric>"
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_model_dir, shapes_dir):
    run = tmp_path_factory.mktemp("whole") / "run"
    trainer = Trainer(_cfg(run, tiny_model_dir, shapes_dir))
    trainer.run()
    return run, {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}


@pytest.mark.parametrize("layout", ["full", "sharded"])
def test_resume_after_a_crash_gives_the_uninterrupted_weights_and_logs(
    tmp_path, tiny_model_dir, shapes_dir, uninterrupted, layout
):
    whole, weights = uninterrupted
    run = tmp_path / "run"
    cfg = _cfg(run, tiny_model_dir, shapes_dir, f"train.checkpoint_format={layout}")
    # a "crash" after global step 3: the last checkpoint is step 2, step 3's rows are already logged
    assert Trainer(cfg).run(stop_after=3) == {"stopped_at": 3}
    ckpt = run / "checkpoints" / "step_0000002"
    assert (ckpt / ("model.pt" if layout == "full" else "dcp/__0_0.distcp")).is_file()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "stage": "grpo", "rew')  # and a torn line from the kill
    assert (
        len(_rows(run / "metrics.jsonl")) > json.loads((ckpt / "trainer_state.json").read_text())["logs"][0]
    )
    resumed = Trainer(cfg, resume=True)
    assert resumed.state["step"] == 2
    resumed.run()
    for n, p in resumed.policy.named_parameters():
        assert torch.equal(p, weights[n]), n
    assert _rows(run / "metrics.jsonl") == _rows(whole / "metrics.jsonl")
    assert _rows(run / "samples.jsonl") == _rows(whole / "samples.jsonl")
    assert (run / "metrics.jsonl").read_bytes().endswith(b"}\n")
    assert _scalars(run) == _scalars(whole)
    assert len(_scalars(whole)["grpo/eval_reward"]) == 4  # before GRPO, after GRPO steps 1 and 2, at the end


def test_a_rerun_of_a_run_that_never_saved_starts_clean(tmp_path, tiny_model_dir, shapes_dir, uninterrupted):
    whole, _ = uninterrupted
    run = tmp_path / "run"
    cfg = _cfg(run, tiny_model_dir, shapes_dir, "train.save_every=0")
    Trainer(cfg).run(stop_after=2)  # killed before its first checkpoint
    assert not (run / "checkpoints").exists() and read_jsonl(run / "metrics.jsonl")
    Trainer(cfg).run()  # no --resume needed; the logs start again from nothing
    assert _rows(run / "metrics.jsonl") == _rows(whole / "metrics.jsonl")
    assert _scalars(run) == _scalars(whole)


def test_cut_jsonl_keeps_complete_rows_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3}\n{"a": 4, "b')
    assert cut_jsonl(path, 5) == 3  # fewer rows than asked: all complete ones, the torn tail dropped
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n{"a": 3}\n'
    assert cut_jsonl(path, 2) == 2 and path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert cut_jsonl(tmp_path / "absent.jsonl", 3) == 0


def test_the_plot_survives_a_torn_or_garbled_metrics_file(tmp_path):
    rows = [{"step": i, "stage": "grpo", "reward": i / 10} for i in range(5)] + [
        {"step": 5, "eval_reward": 0.5}
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "metrics.jsonl").write_text(
        text + '[1, 2]\n{"step": "x", "stage": "grpo", "reward": "high"}\n\xff\xfe\n{"step": 6, "stage": "gr'
    )
    out = plot_rewards(tmp_path, tmp_path / "reward_curve.png")
    assert out is not None and out.read_bytes().startswith(b"\x89PNG")
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [0, 1, 2, 3, 4, 5, "x"]


def test_build_tiny_is_atomic_and_never_replaces_a_foreign_folder(tmp_path, monkeypatch):
    from transformers import Qwen2_5_VLProcessor

    from mmrft.models.tiny import build_tiny, is_tiny_build

    out = tmp_path / "model_init"

    def killed(*a, **k):
        raise KeyboardInterrupt  # stands in for a kill while the processor is being written

    monkeypatch.setattr(Qwen2_5_VLProcessor, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        build_tiny(out, seed=1)
    assert not out.exists()  # nothing half-built under the real name
    monkeypatch.undo()
    build_tiny(out, seed=1)
    assert is_tiny_build(out, seed=1, preset="tiny") and not is_tiny_build(out, seed=2, preset="tiny")
    assert not (tmp_path / ".model_init.tmp").exists()
    build_tiny(out, seed=2)  # an earlier tiny build is replaced whole
    assert is_tiny_build(out, seed=2, preset="tiny")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="exists and is not a tiny-model folder"):
        build_tiny(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_replace_dir_recovers_from_a_kill_between_its_renames(tmp_path):
    from mmrft.checkpoint.files import recover_dir, replace_dir, tmp_dir_for

    final = tmp_path / "final"
    final.mkdir()
    (final / "v").write_text("old")
    final.rename(tmp_path / ".final.old")  # the first rename happened, the second did not
    recover_dir(final)
    assert (final / "v").read_text() == "old"
    tmp = tmp_dir_for(final)
    (tmp / "v").write_text("new")
    replace_dir(tmp, final)
    assert (final / "v").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_final_export_replaces_the_folder_whole(tmp_path, tiny_model_dir, shapes_dir):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "stale.bin").write_bytes(b"from an older export")
    Trainer(_cfg(run, tiny_model_dir, shapes_dir, "sft.steps=0", "grpo.steps=1", "train.eval_every=0")).run()
    names = {p.name for p in (run / "final").iterdir()}
    assert "stale.bin" not in names and {"config.json", "model.safetensors"} <= names
    assert not [p for p in run.iterdir() if p.name.startswith(".")]
