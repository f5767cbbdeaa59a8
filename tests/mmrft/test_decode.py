"""The decode levers (preallocated in-place KV cache, compaction, device-side counter-based sampling)
give the completions of the straightforward path."""

import numpy as np
import pytest
import torch

from mmrft.models.cache import DecodeCache
from mmrft.models.forward import completion_logprobs, encode_vision
from mmrft.models.loading import load_model
from mmrft.rollout import FORBIDDEN_TOKENS, SamplingParams, encode_prompts, generate
from mmrft.sampling import draw, mix32, sequence_keys, uniforms
from tests.mmrft.test_rollout import _sample

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def stopping(tiny_model_dir):
    """The tiny model with <|im_end|> made likely enough that completions stop at varied lengths."""
    lm = load_model(tiny_model_dir, device=CPU)
    lm.policy.eval()
    tok = lm.processor.tokenizer
    bias = torch.zeros(lm.policy.lm_head.out_features)
    bias[tok.convert_tokens_to_ids("<|im_end|>")] = 4.0
    lm.policy.lm_head.bias = torch.nn.Parameter(bias)
    return lm


def _batch_sizes(model):
    sizes = []
    handle = model.model.language_model.register_forward_hook(
        lambda mod, args, kwargs, out: sizes.append(kwargs["inputs_embeds"].shape[0]), with_kwargs=True
    )
    return sizes, handle


def test_compaction_drops_finished_sequences_and_changes_nothing(stopping):
    model, proc = stopping.policy, stopping.processor
    pb = encode_prompts(model, proc, [_sample(0), _sample(1, (168, 112), words=3)], 512, CPU)
    p = SamplingParams(max_new_tokens=24, temperature=1.0, top_p=0.9, top_k=50)
    sizes, handle = _batch_sizes(model)
    try:
        full = generate(model, proc, pb, 8, p, seeds=[1, 2], compact=False)
        n_full = list(sizes)
        sizes.clear()
        small = generate(model, proc, pb, 8, p, seeds=[1, 2], compact=True)
    finally:
        handle.remove()
    lengths = full.completion_mask.sum(1)
    assert lengths.min() < 12 and lengths.max() > lengths.min()  # the lengths really vary
    assert n_full[0] == 2 and set(n_full[1:]) == {16}  # prefill of 2 prompts, then all 16 rows
    assert sizes[0] == 2 and min(sizes[1:]) < 16 and sizes[1:] == sorted(sizes[1:], reverse=True)
    assert torch.equal(small.completion_ids, full.completion_ids)
    assert torch.equal(small.completion_mask, full.completion_mask)
    assert small.texts == full.texts and torch.equal(small.truncated, full.truncated)
    torch.testing.assert_close(small.logprobs, full.logprobs, atol=1e-5, rtol=0)


def test_completions_do_not_depend_on_the_batch(stopping):
    model, proc = stopping.policy, stopping.processor
    a, b, c = _sample(0), _sample(1, (168, 112), words=2), _sample(2, (112, 56), words=4)
    p = SamplingParams(max_new_tokens=16, temperature=0.8, top_p=0.95)
    alone = generate(model, proc, encode_prompts(model, proc, [b], 512, CPU), 4, p, seeds=[42])
    mixed = generate(model, proc, encode_prompts(model, proc, [c, b, a], 512, CPU), 4, p, seeds=[9, 42, 7])
    L = alone.completion_ids.shape[1]
    assert torch.equal(mixed.completion_ids[4:8, :L], alone.completion_ids)
    assert torch.equal(mixed.completion_mask[4:8, :L], alone.completion_mask)
    assert not mixed.completion_mask[4:8, L:].any()
    assert alone.texts == mixed.texts[4:8]
    # another seed, other completions; the G completions of one prompt differ from each other
    other = generate(model, proc, encode_prompts(model, proc, [b], 512, CPU), 4, p, seeds=[43])
    assert other.texts != alone.texts and len(set(alone.texts)) > 1


def _full_recompute_greedy(model, proc, sample, steps: int) -> list[int]:
    """The plain path: run the whole sequence (prompt alone, unpadded) through HF every token."""
    tok = proc.tokenizer
    one = encode_prompts(model, proc, [sample], 512, CPU)
    banned = [tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    ids, out = one.input_ids, []
    for _ in range(steps):
        mm = torch.cat([one.mm_token_type_ids, torch.zeros(1, ids.shape[1] - one.input_ids.shape[1],
                                                           dtype=torch.long)], 1)  # fmt: skip
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=one.pixel_values,
                       image_grid_thw=one.image_grid_thw, mm_token_type_ids=mm).logits[0, -1]  # fmt: skip
        logits[banned] = float("-inf")
        nxt = int(logits.argmax())
        out.append(nxt)
        if nxt == end:
            break
        ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    return out


@pytest.mark.parametrize("biased", [False, True])
def test_greedy_equals_full_recompute(loaded_plain, stopping, biased):
    lm = stopping if biased else loaded_plain
    model, proc = lm.policy, lm.processor
    samples = [_sample(0), _sample(1, (168, 112), words=3)]  # different lengths: left padding
    ro = generate(model, proc, encode_prompts(model, proc, samples, 512, CPU), 2,
                  SamplingParams(max_new_tokens=10, temperature=0.0), seeds=[0, 1])  # fmt: skip
    with torch.no_grad():
        for b in range(2):
            want = _full_recompute_greedy(model, proc, samples[b], 10)
            for n in (2 * b, 2 * b + 1):  # greedy: both completions of a prompt are the same
                L = int(ro.completion_mask[n].sum())
                assert ro.completion_ids[n, :L].tolist() == want


@pytest.fixture(scope="module")
def loaded_plain(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU)
    lm.policy.eval()
    return lm


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_rollout_logprobs_equal_the_training_forward(stopping, temperature):
    model, proc = stopping.policy, stopping.processor
    pb = encode_prompts(model, proc, [_sample(0), _sample(1, (168, 112), words=3)], 512, CPU)
    ro = generate(model, proc, pb, 4, SamplingParams(max_new_tokens=12, temperature=temperature, top_k=20),
                  seeds=[3, 4])  # fmt: skip
    with torch.no_grad():
        lp = completion_logprobs(model, pb, encode_vision(model, pb), ro.seq_to_prompt, ro.completion_ids,
                                 ro.completion_mask, temperature)  # fmt: skip
    torch.testing.assert_close(ro.logprobs, lp, atol=1e-5, rtol=0)
    assert (ro.logprobs[ro.completion_mask == 0] == 0).all() and (
        ro.logprobs[ro.completion_mask == 1] < 0
    ).all()


def test_a_rank_that_finished_keeps_stepping_with_the_others(stopping):
    """Under FSDP2 every rank runs the same decode steps: with all_done saying "not yet", a rank whose
    sequences all stopped keeps one row and steps on, and its completions are unchanged."""
    model, proc = stopping.policy, stopping.processor
    pb = encode_prompts(model, proc, [_sample(0)], 512, CPU)
    p = SamplingParams(max_new_tokens=20)
    alone = generate(model, proc, pb, 3, p, seeds=[2])
    assert alone.completion_mask.sum(1).max() < 20  # all stopped early on their own
    calls = []

    def other_rank_runs_to_the_end(finished: bool) -> bool:  # as all_true would with that other rank
        calls.append(finished)
        return len(calls) == 20

    sizes, handle = _batch_sizes(model)
    try:
        synced = generate(model, proc, pb, 3, p, seeds=[2], all_done=other_rank_runs_to_the_end)
    finally:
        handle.remove()
    assert len(sizes) == 20 and sizes[-1] == 1  # prefill + 19 decode steps; the last ones on one row
    assert torch.equal(synced.completion_ids, alone.completion_ids) and synced.texts == alone.texts


def test_decode_cache_writes_in_place_and_compacts():
    cache = DecodeCache(num_layers=1, capacity=5)
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float).view(2, 1, 3, 2)  # B=2 prompts, 3 positions
    keys, _ = cache.update(k, -k, 0)
    assert torch.equal(keys, k) and cache.get_seq_length() == 3 and cache.get_mask_sizes(1, 0) == (4, 0)
    buffer = cache.layers[0].keys
    cache.repeat_rows(2)  # rows: prompt 0, prompt 0, prompt 1, prompt 1
    step = torch.full((4, 1, 1, 2), 100.0) + torch.arange(4.0).view(4, 1, 1, 1)
    keys, values = cache.update(step, step, 0)
    assert keys.shape == (4, 1, 4, 2)
    assert torch.equal(keys[:, :, :3], k.repeat_interleave(2, 0)) and torch.equal(keys[:, :, 3:], step)
    assert torch.equal(values[:, :, :3], -k.repeat_interleave(2, 0))
    assert buffer.data_ptr() != cache.layers[0].keys.data_ptr()  # repeat_rows made the N-row buffer
    buffer = cache.layers[0].keys
    cache.keep_rows(torch.tensor([1, 3]))
    keys, _ = cache.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), 0)
    assert cache.layers[0].keys.data_ptr() == buffer.data_ptr()  # compaction moves rows in place
    assert torch.equal(keys[0, :, :4], torch.cat([k[0], step[1, :, :1]], 1))
    assert torch.equal(keys[1, :, :4], torch.cat([k[1], step[3, :, :1]], 1))
    with pytest.raises(ValueError, match="holds 5 positions"):
        cache.update(torch.zeros(2, 1, 1, 2), torch.zeros(2, 1, 1, 2), 0)


def _lowbias32_numpy(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7FEB352D)  # numpy uint32 arithmetic wraps mod 2**32
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846CA68B)
    x ^= x >> np.uint32(16)
    return x


def test_the_device_hash_is_lowbias32_without_overflow():
    vals = np.array([0, 1, 2, 12345, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1, 0xDEADBEEF], dtype=np.uint64)
    got = mix32(torch.tensor(vals.astype(np.int64)))
    assert got.tolist() == _lowbias32_numpy(vals).astype(np.int64).tolist()
    assert [mix32(int(v)) for v in vals] == got.tolist()  # the host (int) and device paths agree
    assert mix32(0) == 0 and 0 <= int(got.min()) and int(got.max()) < 2**32


def test_uniforms_are_uniform_and_keyed_by_prompt_and_sample():
    keys = sequence_keys([7, 8], 4, CPU)  # 8 sequences
    assert len(set(keys.tolist())) == 8
    assert torch.equal(sequence_keys([8], 4, CPU), keys[4:])  # prompt 8's keys do not depend on prompt 7
    assert torch.equal(sequence_keys([2**62 + 5, -3], 1, CPU), sequence_keys([2**62 + 5, -3], 1, CPU))
    u = torch.stack([uniforms(sequence_keys(list(range(100)), 10, CPU), t) for t in range(20)])  # 20k
    assert 0 < float(u.min()) and float(u.max()) < 1
    hist = torch.histc(u, bins=10, min=0, max=1) / u.numel()
    assert float((hist - 0.1).abs().max()) < 0.01  # each decile holds 10% +- 1% of 20000 draws
    assert abs(float(torch.corrcoef(torch.stack([u[0], u[1]]))[0, 1])) < 0.05  # token t and t+1


def test_draw_is_an_inverse_cdf_that_never_picks_a_filtered_token():
    # probabilities 0.2, 0.3, 0.5: cumulative 0.2, 0.5, 1.0
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]])).expand(4, 3)
    assert draw(logits, torch.tensor([0.1, 0.25, 0.6, 0.999])).tolist() == [0, 1, 2, 2]
    # tokens 0 and 2 filtered: only 1 and 3 are ever drawn, even at u -> 1 (cumulative sum rounding)
    ninf = float("-inf")
    filt = torch.tensor([[ninf, 0.0, ninf, 0.0]]).expand(3, 4)
    assert draw(filt, torch.tensor([0.2, 0.7, 1.0])).tolist() == [1, 3, 3]
    big = torch.tensor([[ninf] * 5 + [0.0, 0.0] + [ninf] * 3])
    assert draw(big, torch.tensor([1.0])).tolist() == [6]  # the target at the very top: last with mass


def test_eager_attention_decodes_like_sdpa(tiny_model_dir, loaded_plain):
    """sdpa gets its decode mask prepared (None or a boolean view); eager builds its own from the 2D mask."""
    eager = load_model(tiny_model_dir, device=CPU, attn_implementation="eager")
    eager.policy.eval()
    assert eager.policy.model.language_model.config._attn_implementation == "eager"
    samples = [_sample(0), _sample(1, (168, 112), words=3)]  # padded
    p = SamplingParams(max_new_tokens=8, temperature=1.0)
    outs = []
    for lm in (loaded_plain, eager):
        pb = encode_prompts(lm.policy, lm.processor, samples, 512, CPU)
        outs.append(generate(lm.policy, lm.processor, pb, 2, p, seeds=[3, 4]))
    assert torch.equal(outs[0].completion_ids, outs[1].completion_ids)
    torch.testing.assert_close(outs[0].logprobs, outs[1].logprobs, atol=1e-5, rtol=0)
