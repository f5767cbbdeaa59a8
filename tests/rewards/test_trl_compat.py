"""mmrft rewards passed straight into TRL's GRPOTrainer train the tiny Qwen2.5-VL for two steps.

This proves the compatibility claim: no wrapper, no adapter; TRL's conversational completions,
its extra kwargs (``trainer_state``, ``log_metric``, ...), dataset columns unified by ``datasets``
(absent solution keys arrive as None), None for records a reward does not apply to, and our
``Scores`` list subclass all work. The random tiny model writes junk, which every mmrft reward
scores 0 by design, so a length bonus rides along to give the groups reward variance and the update
a non-zero gradient.
"""

import pytest

pytest.importorskip("trl")


def _dataset(n: int = 8):
    from datasets import Dataset
    from PIL import Image, ImageDraw

    rows = []
    for k in range(n):
        img = Image.new("RGB", (56, 56), "white")
        x = 4 + 3 * k
        ImageDraw.Draw(img).rectangle([x, 10, x + 20, 30], fill="red")
        grounding = k % 2 == 0
        text = "Give the bbox_2d of the red square." if grounding else "Which shape is it?"
        rows.append(
            {
                "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                "image": img,
                # datasets unifies the struct: the other task's key is None in every row
                "solution": {"box": [x, 10, x + 20, 30]} if grounding else {"label": "square"},
                "task": "grounding" if grounding else "classification",
                "coord_space": "pixel",
                "id": f"trl-{k}",
            }
        )
    return Dataset.from_list(rows)


@pytest.mark.slow
def test_grpo_trainer_trains_two_steps_with_mmrft_rewards(tmp_path):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from mmrft.models.tiny import build_tiny

    torch.manual_seed(0)
    model_dir = build_tiny(tmp_path / "tiny", seed=0)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    calls = []

    def spy(fn):
        def wrapped(*args, **kwargs):
            out = fn(*args, **kwargs)
            calls.append((fn.reward_name, kwargs, out))
            return out

        wrapped.__name__ = fn.__name__
        return wrapped

    def length_bonus(completions, **kwargs):
        """Junk from a random model scores 0 on every mmrft reward; this gives the groups variance."""
        return [min(len(c[0]["content"]), 40) / 40 for c in completions]

    reward_funcs = [spy(rewards.get(name)) for name in ("format", "accuracy", "iou")] + [length_bonus]
    args = GRPOConfig(
        output_dir=str(tmp_path / "out"),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=_dataset(),
        processing_class=processor,
    )
    trainer.train()

    assert trainer.state.global_step == 2
    names = {name for name, _, _ in calls}
    assert names == {"format", "accuracy", "iou"}
    for name, kwargs, out in calls:
        completions = kwargs["completions"]
        assert isinstance(completions[0], list) and completions[0][0]["role"] == "assistant"  # TRL's form
        assert len(out) == len(completions)
        assert all(v is None or 0.0 <= v <= 1.0 for v in out)
        if name == "iou":  # not applicable to the classification rows
            tasks = kwargs["task"]
            assert all((v is None) == (t == "classification") for v, t in zip(out, tasks))
    logged = {k for entry in trainer.state.log_history for k in entry}
    # TRL names reward columns after __name__ (= the registry name) and receives our metrics through
    # its log_metric hook
    assert {"rewards/format/mean", "rewards/accuracy/mean", "rewards/iou/mean"} <= logged
    assert {"rewards/format/malformed", "rewards/accuracy/parse_fail", "rewards/iou/parse_fail"} <= logged
    # the summed reward (ours plus the length bonus) had variance, so the policy moved
    changed = [
        n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])
    ]
    assert changed, "no parameter moved in two GRPO steps"
