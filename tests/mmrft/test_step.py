"""The typed step: one group layout, micro-batches of whole groups, vision features once per step (equal
to recomputing them per micro-batch), and the LoRA reference as the policy with its adapter disabled."""

import gc

import pytest
import torch

from mmrft.grpo import policy_loss
from mmrft.models.forward import completion_logprobs, encode_vision
from mmrft.models.loading import load_model, vision_tower
from mmrft.step import (
    GroupLayout,
    micro_batches,
    policy_logprobs,
    reference_features,
    reference_logprobs,
    step_features,
)
from tests.mmrft.test_forward_levers import _batch

CPU = torch.device("cpu")


def test_group_layout_is_the_one_place_of_the_index_arithmetic():
    lay = GroupLayout(prompts=5, group_size=3)
    assert lay.sequences == 15 and lay.seq(2, 1) == 7
    assert lay.seqs_of([2, 0]).tolist() == [6, 7, 8, 0, 1, 2]
    assert lay.seq_to_prompt(2).tolist() == [0, 0, 0, 1, 1, 1]
    assert lay.per_sequence(torch.tensor([True, False])).tolist() == [True] * 3 + [False] * 3
    assert lay.groups(torch.arange(15.0))[1].tolist() == [3.0, 4.0, 5.0]
    assert lay.chunks(2) == [[0, 1], [2, 3], [4]]
    assert lay.chunks(0) == [[0], [1], [2], [3], [4]]


def _step(model, pb, ids, mask, adv, feats):
    """The micro-batches of a 3-prompt, G-2 step cut 2 prompts at a time ([0, 1], [2])."""
    layout = GroupLayout(pb.size, 2)
    return micro_batches(layout, pb, ids, mask, mask.float(), adv, 2, feats, temperature=0.7)


def _straightforward(model, pb, ids, mask, adv):
    """The old trainer's path: each micro-batch's features recomputed in every forward."""
    layout = GroupLayout(pb.size, 2)
    old, lps, losses = [], [], []
    for chunk in layout.chunks(2):
        seqs, sub = layout.seqs_of(chunk), pb.select(chunk)
        s2p = layout.seq_to_prompt(len(chunk))
        with torch.no_grad():
            old.append(
                completion_logprobs(model, sub, encode_vision(model, sub), s2p, ids[seqs], mask[seqs], 0.7)
            )
        lp = completion_logprobs(model, sub, encode_vision(model, sub), s2p, ids[seqs], mask[seqs], 0.7)
        out = policy_loss(lp, old[-1] + 0.05, adv[seqs], mask[seqs], total_tokens=float(mask.sum()))
        out.loss.backward()
        lps.append(lp.detach())
        losses.append(float(out.loss.detach()))
    return old, lps, losses


@pytest.mark.parametrize("freeze", [True, False])
def test_features_once_per_step_equal_the_straightforward_path(tiny_model_dir, freeze):
    lm = load_model(tiny_model_dir, device=CPU, freeze_vision=freeze)
    model = lm.policy
    pb, _, ids, mask = _batch(model, lm.processor, video=True)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    model.zero_grad(set_to_none=True)
    want_old, want_lp, want_loss = _straightforward(model, pb, ids, mask, adv)
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    calls = []
    handle = vision_tower(model).register_forward_hook(lambda *a: calls.append(1))
    feats = step_features(model, pb)  # images and the video: two tower calls
    mbs = _step(model, pb, ids, mask, adv, feats)
    assert [mb.prompt_index for mb in mbs] == [[0, 1], [2]]
    assert mbs[1].seqs.tolist() == [4, 5] and mbs[1].seq_to_prompt.tolist() == [0, 0]
    assert torch.equal(mbs[1].completion_ids, ids[4:]) and torch.equal(mbs[1].advantages, adv[4:])
    with torch.no_grad():
        old = [policy_logprobs(model, mb) for mb in mbs]
    losses, lps = [], []
    for mb, o in zip(mbs, old):
        lp = policy_logprobs(model, mb)
        out = policy_loss(lp, o + 0.05, mb.advantages, mb.loss_mask, total_tokens=float(mask.sum()))
        out.loss.backward()
        lps.append(lp.detach())
        losses.append(float(out.loss.detach()))
    handle.remove()
    # frozen: the step's two calls serve every forward; trainable: the policy forwards with grad
    # recompute each micro-batch's features ([0, 1] images; [2] its video)
    assert len(calls) == (2 if freeze else 4)
    for a, b in zip(old + lps, want_old + want_lp):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert losses == pytest.approx(want_loss, rel=1e-5, abs=1e-7)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == want_grads.keys()
    assert any(".visual." in n for n in grads) == (not freeze)
    for n, g in grads.items():
        torch.testing.assert_close(g, want_grads[n], atol=1e-6, rtol=1e-4, msg=n)


def _lora(model, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at 0 (the adapter a no-op): make it change the output
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return peft


def test_lora_reference_is_the_base_model_with_the_adapter_disabled(tiny_model_dir):
    base = load_model(tiny_model_dir, device=CPU, freeze_vision=True).policy  # an un-adapted copy
    lm = load_model(tiny_model_dir, device=CPU, freeze_vision=True)
    policy = _lora(lm.policy)
    pb, _, ids, mask = _batch(policy, lm.processor)
    feats = step_features(policy, pb)
    (mb,) = micro_batches(GroupLayout(pb.size, 2), pb, ids, mask, mask.float(), torch.zeros(6), 3, feats)
    ref = reference_logprobs(policy, None, mb, reference_features(policy, None, pb, feats))
    with torch.no_grad():
        want = completion_logprobs(base, pb, encode_vision(base, pb), mb.seq_to_prompt, ids, mask)
        adapted = policy_logprobs(policy, mb)
    torch.testing.assert_close(ref, want, atol=1e-6, rtol=1e-5)
    assert (adapted - want).abs().max() > 1e-3  # the adapter matters, and is back on afterwards
    assert not ref.requires_grad


def test_lora_with_a_kl_term_keeps_one_model_in_memory(tmp_path, shapes_dir, tiny_model_dir):
    from mmrft.trainer import Trainer
    from tests.mmrft.test_train import _cfg

    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=1", "grpo.beta=0.1", "model.lora_r=4",
               "model.lora_alpha=8", "model.lora_dropout=0.0")  # fmt: skip
    from transformers import Qwen2_5_VLForConditionalGeneration as Model

    def models() -> int:  # Qwen2.5-VL models alive in the process (other tests' included)
        gc.collect()
        return sum(type(o) is Model for o in gc.get_objects())

    before = models()
    trainer = Trainer(cfg)
    assert trainer.reference is None and type(trainer.policy.hf.get_base_model()) is Model
    assert models() == before + 1  # the policy; no reference copy
    calls = []
    handle = vision_tower(trainer.policy).register_forward_hook(lambda *a: calls.append(1))
    metrics, _ = trainer.grpo_step(0, 0)
    handle.remove()
    assert len(calls) == 1  # the step's images once: generation, reference and update reuse them
    assert metrics["kl"] == pytest.approx(
        0.0, abs=1e-7
    )  # before any update the adapter (B = 0) is a no-op: KL to the base is 0
    metrics, _ = trainer.grpo_step(1, 1)
    assert metrics["kl"] > 0  # after one update the adapted policy moved away from the base
