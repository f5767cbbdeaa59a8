"""The training-forward levers give the numbers of the straightforward path: prefix sharing with and
without gradient checkpointing, chunked LM-head log-probs, the packed (padding-free) forward, and vision
features computed once and reused."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from data_pipelines.sample import Sample, VideoClip
from mmrft.models.forward import completion_logprobs, encode_vision, vision_frozen
from mmrft.models.loading import load_model, vision_tower
from mmrft.rollout import SamplingParams, encode_prompts, generate
from tests.mmrft.test_rollout import _sample

CPU = torch.device("cpu")


def _video_sample(i: int) -> Sample:
    frames = np.zeros((4, 56, 56, 3), np.uint8)
    for k in range(4):
        frames[k, 8 + 6 * k : 28 + 6 * k, 10:30] = (200, 40 + 40 * i, 30)  # a square moving down
    clip = VideoClip(frames=frames, timestamps=[0.0, 0.5, 1.0, 1.5], fps=2.0, duration=2.0)
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Where is it?"}]}]
    return Sample(id=f"vid-{i}", task="temporal_grounding", prompt=prompt, video=clip,
                  solution={"segment": [0.0, 1.0], "duration": 2.0})  # fmt: skip


def _completions(lengths: list[int], T: int, seed: int = 0):
    """Right-padded completions of the given lengths (ordinary byte tokens)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, 900, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def _batch(model, proc, video: bool = False):
    """3 prompts of different lengths (left padding), G 2: 6 completions of lengths 1..7."""
    samples = [
        _sample(0),
        _sample(1, (168, 112), words=3),
        _video_sample(0) if video else _sample(2, (112, 56)),
    ]
    pb = encode_prompts(model, proc, samples, 512, CPU)
    s2p = torch.arange(3).repeat_interleave(2)
    ids, mask = _completions([5, 1, 7, 3, 6, 2], 7)
    return pb, s2p, ids, mask


def _lp_and_grads(model, pb, s2p, ids, mask, **kwargs):
    model.zero_grad(set_to_none=True)
    lp = completion_logprobs(model, pb, encode_vision(model, pb), s2p, ids, mask, **kwargs)
    w = torch.linspace(-1.0, 2.0, lp.numel()).view_as(lp)  # token weights, so every gradient is live
    (lp * w * mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return lp.detach(), grads


def _assert_same(a, b):
    (lp_a, g_a), (lp_b, g_b) = a, b
    torch.testing.assert_close(lp_a, lp_b, atol=1e-5, rtol=0)
    assert g_a.keys() == g_b.keys() and any(".visual." in n for n in g_a)
    for n in g_a:
        torch.testing.assert_close(g_a[n], g_b[n], atol=1e-5, rtol=1e-4, msg=n)


def _lm_batch_sizes(model):
    sizes = []
    handle = model.model.language_model.register_forward_hook(
        lambda mod, args, kwargs, out: sizes.append(kwargs["inputs_embeds"].shape[:2]), with_kwargs=True
    )
    return sizes, handle


def test_shared_prefix_is_exact_with_gradient_checkpointing(tiny_model_dir):
    plain = load_model(tiny_model_dir, device=CPU)
    ckpt = load_model(tiny_model_dir, device=CPU, gradient_checkpointing=True)
    layers = ckpt.policy.model.language_model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    pb, s2p, ids, mask = _batch(plain.policy, plain.processor, video=True)
    want = _lp_and_grads(plain.policy, pb, s2p, ids, mask, share_prefix=False)  # the plain full path
    _assert_same(_lp_and_grads(plain.policy, pb, s2p, ids, mask), want)

    sizes, handle = _lm_batch_sizes(ckpt.policy)
    replays = []
    hook = layers[0].self_attn.register_forward_hook(lambda *a: replays.append(1))  # inside the checkpoint
    try:
        shared = _lp_and_grads(ckpt.policy, pb, s2p, ids, mask)
    finally:
        handle.remove(), hook.remove()
    # one prompt pass over the 3 prompts, one completion pass over the 6 sequences (not 6 full ones)
    assert [s[0] for s in sizes] == [3, 6] and sizes[1][1] == 6
    assert len(replays) == 4  # layer 0 ran in both passes, then again for each in backward: checkpointed
    _assert_same(shared, want)
    _assert_same(_lp_and_grads(ckpt.policy, pb, s2p, ids, mask, share_prefix=False), want)


class _LargestLogits(TorchDispatchMode):
    """The largest tensor any op creates (views of existing memory aside, e.g. the head weight
    transposed) whose last dimension is the vocabulary."""

    def __init__(self, vocab: int):
        super().__init__()
        self.vocab, self.largest = vocab, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in [] if func.is_view else tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_head_logprobs_are_exact_and_bounded(tiny_model_dir, temperature):
    lm = load_model(tiny_model_dir, device=CPU)
    model = lm.policy
    V = model.lm_head.out_features
    pb, s2p, ids, mask = _batch(model, lm.processor)
    M = int(mask.sum())  # 24 completion tokens reach the head
    runs = {}
    for chunk in (None, 5):
        with _LargestLogits(V) as seen:
            runs[chunk] = _lp_and_grads(
                model, pb, s2p, ids, mask, temperature=temperature, chunk_tokens=chunk
            )
        runs[chunk] += (seen.largest,)
    # unchunked: the logits of all 24 masked-in tokens at once (never of the 42 padded positions)
    assert runs[None][2] == M * V
    assert runs[5][2] == 5 * V  # chunked: 5 tokens' logits at most, forward and backward
    _assert_same(runs[5][:2], runs[None][:2])
    assert (runs[5][0][mask == 0] == 0).all()


def test_packed_forward_equals_padded(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU)
    model = lm.policy
    pb, s2p, ids, mask = _batch(model, lm.processor, video=True)
    assert not pb.attention_mask.all() and pb.position_ids[1:].ne(pb.position_ids[0]).any()  # 3D M-RoPE
    sizes, handle = _lm_batch_sizes(model)
    try:
        packed = _lp_and_grads(model, pb, s2p, ids, mask, share_prefix=False, packed=True)
    finally:
        handle.remove()
    real = int(pb.attention_mask[s2p].sum() + mask.sum())
    assert sizes == [torch.Size([1, real])]  # one row, no padding
    _assert_same(packed, _lp_and_grads(model, pb, s2p, ids, mask, share_prefix=False))
    with pytest.raises(ValueError, match="share_prefix=False"):
        completion_logprobs(model, pb, encode_vision(model, pb), s2p, ids, mask, packed=True)


def test_vision_features_computed_once_serve_every_forward(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU, with_reference=True, freeze_vision=True)
    policy, reference = lm.policy, lm.reference
    assert vision_frozen(policy) and vision_frozen(reference)
    pb, s2p, ids, mask = _batch(policy, lm.processor, video=True)
    calls = []
    handle = vision_tower(policy).register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        once = encode_vision(policy, pb)  # the step's one vision pass
        ref = completion_logprobs(reference, pb, once, s2p, ids, mask)
        old = completion_logprobs(policy, pb, once, s2p, ids, mask)
        params = SamplingParams(max_new_tokens=4)
        ro = generate(policy, lm.processor, pb, 2, params, seeds=[1, 2, 3], feats=once)
        assert len(calls) == 2  # images, video; nothing more for generation and the two forwards
        assert ro.texts == generate(policy, lm.processor, pb, 2, params, seeds=[1, 2, 3]).texts
        torch.testing.assert_close(
            ref, completion_logprobs(reference, pb, encode_vision(reference, pb), s2p, ids, mask)
        )
        torch.testing.assert_close(
            old, completion_logprobs(policy, pb, encode_vision(policy, pb), s2p, ids, mask)
        )
    handle.remove()
    # the policy's forward with grad: the same log-probs and gradients as recomputing the features
    policy.zero_grad(set_to_none=True)
    lp = completion_logprobs(policy, pb, once, s2p, ids, mask)
    (lp * mask).sum().backward()
    reused = {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}
    policy.zero_grad(set_to_none=True)
    want = completion_logprobs(policy, pb, encode_vision(policy, pb), s2p, ids, mask)
    (want * mask).sum().backward()
    torch.testing.assert_close(lp, want)
    assert reused.keys() == {n for n, p in policy.named_parameters() if p.grad is not None}
    assert not any(".visual." in n for n in reused)
    for n, g in reused.items():
        torch.testing.assert_close(g, dict(policy.named_parameters())[n].grad, msg=n)
    # sub-batches: the features of prompts [2, 0] are those of PromptBatch.select([2, 0])
    sub = once.select([2, 0])
    with torch.no_grad():
        mine = encode_vision(policy, pb.select([2, 0]))
    assert sub.image_feats[0] is None and sub.video_feats[1] is None
    torch.testing.assert_close(sub.video_feats[0], mine.video_feats[0])
    torch.testing.assert_close(sub.image_feats[1], mine.image_feats[1])


def test_no_grad_features_cannot_train_a_vision_tower(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU)
    pb, s2p, ids, mask = _batch(lm.policy, lm.processor)
    with torch.no_grad():
        feats = encode_vision(lm.policy, pb)
    with pytest.raises(ValueError, match="cannot train the vision tower.*model.freeze_vision"):
        completion_logprobs(lm.policy, pb, feats, s2p, ids, mask)
