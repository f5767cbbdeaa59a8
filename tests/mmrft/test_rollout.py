import pytest
import torch
from PIL import Image, ImageDraw

from data_pipelines.sample import Sample
from mmrft.models.forward import completion_logprobs, encode_vision, selected_logprobs
from mmrft.models.loading import load_model, vision_tower
from mmrft.rollout import FORBIDDEN_TOKENS, SamplingParams, encode_prompts, generate

CPU = torch.device("cpu")


def _sample(i: int, size=(112, 112), words: int = 1) -> Sample:
    im = Image.new("RGB", size, "white")
    ImageDraw.Draw(im).ellipse((10 + i, 10, 60 + i, 60), fill=(200, 30, 30))
    text = " ".join(["What shape is in the image?"] * words)
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return Sample(
        id=f"rec-{i}", task="classification", prompt=prompt, images=[im], solution={"label": "circle"}
    )


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    torch.manual_seed(0)
    lm = load_model(tiny_model_dir, device=CPU)
    lm.policy.eval()
    return lm


def _count_vision_calls(model):
    calls = []
    handle = vision_tower(model).register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    return calls, handle


def test_prompts_are_left_padded_and_positions_continue(loaded):
    samples = [_sample(0), _sample(1, (168, 112), words=3), _sample(2, (112, 56))]
    pb = encode_prompts(loaded.policy, loaded.processor, samples, 512, CPU)
    lengths = pb.attention_mask.sum(1)
    assert pb.attention_mask[:, -1].all()  # left padding: every prompt ends at the last column
    assert (pb.attention_mask[lengths.argmin(), 0] == 0).item()
    assert pb.image_grid_thw.tolist() == [[1, 8, 8], [1, 8, 12], [1, 4, 8]]
    # the first completion position is one past the largest M-RoPE position of the prompt
    for b in range(3):
        valid = pb.position_ids[:, b][:, pb.attention_mask[b].bool()]
        assert pb.next_position[b] == valid.max() + 1


def test_vision_tower_runs_once_per_image_in_generation_and_training(loaded):
    model, proc = loaded.policy, loaded.processor
    samples = [_sample(i) for i in range(3)]
    pb = encode_prompts(model, proc, samples, 512, CPU)
    calls, handle = _count_vision_calls(model)
    try:
        ro = generate(model, proc, pb, 4, SamplingParams(max_new_tokens=6), seeds=[0, 1, 2])
        assert len(calls) == 1 and calls[0] == pb.pixel_values.shape[0]  # one call, 3 images' patches, not 12
        feats = encode_vision(model, pb)
        completion_logprobs(model, pb, feats, ro.seq_to_prompt, ro.completion_ids, ro.completion_mask)
        assert len(calls) == 2  # the training forward of 12 sequences added exactly one more
    finally:
        handle.remove()


def test_logprobs_match_the_plain_hf_forward(loaded):
    model, proc = loaded.policy, loaded.processor
    samples = [_sample(0), _sample(1, (168, 112), words=3)]
    pb = encode_prompts(model, proc, samples, 512, CPU)
    ro = generate(model, proc, pb, 2, SamplingParams(max_new_tokens=8), seeds=[5, 6])
    lp = completion_logprobs(
        model, pb, encode_vision(model, pb), ro.seq_to_prompt, ro.completion_ids, ro.completion_mask
    )
    for n in range(4):
        b = int(ro.seq_to_prompt[n])
        one = encode_prompts(model, proc, [samples[b]], 512, CPU)  # unpadded, alone
        L = int(ro.completion_mask[n].sum())
        ids = torch.cat([one.input_ids, ro.completion_ids[n : n + 1, :L]], 1)
        mm = torch.cat([one.mm_token_type_ids, torch.zeros(1, L, dtype=one.mm_token_type_ids.dtype)], 1)
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=one.pixel_values,
            image_grid_thw=one.image_grid_thw,
            mm_token_type_ids=mm,
        )
        P = one.input_ids.shape[1]
        ref = torch.log_softmax(out.logits[0, P - 1 : P + L - 1].float(), -1)
        ref = ref.gather(-1, ro.completion_ids[n, :L, None]).squeeze(-1)
        torch.testing.assert_close(lp[n, :L], ref, atol=1e-4, rtol=0)


def test_greedy_generation_matches_hf_generate(loaded):
    model, proc = loaded.policy, loaded.processor
    pb = encode_prompts(model, proc, [_sample(0)], 512, CPU)
    ours = generate(model, proc, pb, 1, SamplingParams(max_new_tokens=10, temperature=0.0), seeds=[0])
    theirs = model.generate(
        input_ids=pb.input_ids,
        attention_mask=pb.attention_mask,
        pixel_values=pb.pixel_values,
        image_grid_thw=pb.image_grid_thw,
        mm_token_type_ids=pb.mm_token_type_ids,
        max_new_tokens=10,
        do_sample=False,
    )
    L = int(ours.completion_mask[0].sum())
    assert ours.completion_ids[0, :L].tolist() == theirs[0, pb.input_ids.shape[1] :][:L].tolist()


def test_sampling_is_seeded_per_prompt_not_per_batch(loaded):
    model, proc = loaded.policy, loaded.processor
    a, b, c = _sample(0), _sample(1, (168, 112), words=2), _sample(2)
    p = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50)
    alone = generate(model, proc, encode_prompts(model, proc, [b], 512, CPU), 3, p, seeds=[42])
    mixed = generate(model, proc, encode_prompts(model, proc, [a, b, c], 512, CPU), 3, p, seeds=[7, 42, 9])
    assert alone.texts == mixed.texts[3:6]
    other = generate(model, proc, encode_prompts(model, proc, [b], 512, CPU), 3, p, seeds=[43])
    assert other.texts != alone.texts


def test_stops_at_im_end_and_never_emits_vision_tokens(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU)
    model, proc = lm.policy, lm.processor
    tok = proc.tokenizer
    banned = [tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():  # make the image token overwhelmingly likely, then <|im_end|> next best
        model.lm_head.weight.zero_()
        model.lm_head.weight[banned[3]] = 0  # image pad
        bias = torch.full((model.lm_head.out_features,), -10.0)
        bias[banned] = 10.0
        bias[end] = 5.0
        model.lm_head.bias = torch.nn.Parameter(bias)
    pb = encode_prompts(model, proc, [_sample(0), _sample(1)], 512, CPU)
    ro = generate(model, proc, pb, 2, SamplingParams(max_new_tokens=5, temperature=1.0), seeds=[0, 1])
    assert not torch.isin(ro.completion_ids, torch.tensor(banned)).any()
    assert (ro.completion_ids[:, 0] == end).all() and ro.completion_mask.sum(1).tolist() == [1, 1, 1, 1]
    assert not ro.truncated.any()


def test_a_prompt_too_long_names_the_record(loaded):
    s = _sample(3, words=40)
    with pytest.raises(
        ValueError, match=r"record 'rec-3': prompt is \d+ tokens .* rollout.max_prompt_length=64"
    ):
        encode_prompts(loaded.policy, loaded.processor, [s], 64, CPU)


def test_selected_logprobs_half_precision_matches_fp32():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 50)
    tokens = torch.randint(0, 50, (3, 5))
    ref = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(selected_logprobs(logits, tokens), ref)
    torch.testing.assert_close(selected_logprobs(logits.bfloat16(), tokens), ref, atol=0.05, rtol=0)


def test_shared_prefix_forward_equals_full_sequences_with_gradients(tiny_model_dir):
    """The prompt run once and its cache copied to G completions gives the same log-probs and grads."""
    lm = load_model(tiny_model_dir, device=CPU)
    model, proc = lm.policy, lm.processor
    pb = encode_prompts(model, proc, [_sample(0), _sample(1, (168, 112), words=3)], 512, CPU)
    ro = generate(model, proc, pb, 3, SamplingParams(max_new_tokens=7), seeds=[1, 2])
    results = []
    for share in (False, True):
        model.zero_grad()
        lp = completion_logprobs(model, pb, encode_vision(model, pb), ro.seq_to_prompt, ro.completion_ids,
                                 ro.completion_mask, share_prefix=share)  # fmt: skip
        (lp * ro.completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((lp.detach() * ro.completion_mask, grads))
    (lp_full, g_full), (lp_shared, g_shared) = results
    torch.testing.assert_close(lp_shared, lp_full, atol=1e-5, rtol=0)
    assert g_full.keys() == g_shared.keys() and any(".visual." in n for n in g_full)
    for n in g_full:
        torch.testing.assert_close(g_shared[n], g_full[n], atol=1e-4, rtol=1e-3, msg=n)


def test_qwen2_vl_checkpoints_work_through_the_same_path(tmp_path):
    """Qwen2-VL (no windowed attention, 0-1000 boxes) loads and matches its own HF forward and generate."""
    from mmrft.models.tiny import build_tiny

    lm = load_model(build_tiny(tmp_path / "q2", seed=1, arch="qwen2_vl"), device=CPU)
    assert lm.model_type == "qwen2_vl"
    model, proc = lm.policy, lm.processor
    one = encode_prompts(model, proc, [_sample(0)], 512, CPU)
    ours = generate(model, proc, one, 1, SamplingParams(max_new_tokens=6, temperature=0.0), seeds=[0])
    theirs = model.generate(input_ids=one.input_ids, attention_mask=one.attention_mask, pixel_values=one.pixel_values,
                            image_grid_thw=one.image_grid_thw, mm_token_type_ids=one.mm_token_type_ids,
                            max_new_tokens=6, do_sample=False)  # fmt: skip
    L = int(ours.completion_mask[0].sum())
    assert ours.completion_ids[0, :L].tolist() == theirs[0, one.input_ids.shape[1] :][:L].tolist()
    lp = completion_logprobs(model, one, encode_vision(model, one), ours.seq_to_prompt, ours.completion_ids,
                             ours.completion_mask)  # fmt: skip
    assert torch.isfinite(lp).all()
