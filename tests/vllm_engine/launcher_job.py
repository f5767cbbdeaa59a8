"""torchrun job for test_external_launcher.py: one vLLM engine per process (``external_launcher``), each
generating its share of the prompts; then a training step on the FSDP2-sharded policy, a weight sync
from the shards, and a check that each rank's engine generates as the trained policy.

    python -m torch.distributed.run --standalone --nproc_per_node=2 launcher_job.py MODEL_DIR OUT_PREFIX
(also runs as one plain process). Writes OUT_PREFIX.RANK.json.
"""

import json
import sys

import torch
from PIL import Image, ImageDraw

from data_pipelines.sample import Sample
from mmrft import distributed
from mmrft.data import encode_targets, sample_seed
from mmrft.models.forward import VLMOps, completion_logprobs, encode_vision
from mmrft.models.loading import load_model, load_processor
from mmrft.rollout import SamplingParams, encode_prompts, generate
from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig, sync_weights

CPU = torch.device("cpu")
B = 4


def _samples() -> list[Sample]:
    out = []
    for i in range(B):
        im = Image.new("RGB", (112, 84 + 28 * (i % 2)), "white")
        ImageDraw.Draw(im).ellipse((10 + 5 * i, 10, 60, 60), fill=(200, 30 * i, 30))
        prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}]
        out.append(Sample(id=f"rec-{i}", task="classification", prompt=prompt, images=[im]))
    return out


def main(model_dir: str, out_prefix: str) -> None:
    info = distributed.init(strategy="fsdp", device="cpu")
    mine = list(range(info.rank * B // info.world_size, (info.rank + 1) * B // info.world_size))
    batch = [_samples()[i] for i in mine]
    lm = load_model(model_dir, device=CPU)
    ops = distributed.wrap(VLMOps(lm.policy), info)
    cfg = VLLMEngineConfig(enforce_eager=True, kv_cache_gb=0.25)
    engine = VLLMEngine(model_dir, load_processor(model_dir), cfg, max_prompt_length=256, max_new_tokens=8,
                        distributed=info.world_size > 1)  # fmt: skip
    prompts = encode_prompts(ops, lm.processor, batch, 256, CPU)
    seeds = [sample_seed(0, i) for i in mine]
    sampled = engine.generate(batch, prompts, 2, SamplingParams(max_new_tokens=8), seeds)

    # one AdamW step on the same loss on every rank (FSDP2 averages the identical gradients)
    opt = torch.optim.AdamW(ops.parameters(), lr=5e-2)
    all_prompts = encode_prompts(ops, lm.processor, _samples()[:2], 256, CPU)
    ids, mask = encode_targets(lm.processor.tokenizer, ["<answer>square</answer>"] * 2, CPU)
    lp = completion_logprobs(ops, all_prompts, encode_vision(ops, all_prompts), torch.arange(2), ids, mask)
    (-(lp * mask).sum() / mask.sum()).backward()
    opt.step()

    stats = sync_weights(engine, ops)  # every rank gathers each shard, pushes into its own engine
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    after = engine.generate(batch, prompts, 1, greedy, seeds)
    with torch.no_grad():
        hf = generate(
            ops, lm.processor, prompts, 1, greedy, seeds, all_done=lambda d: distributed.all_true(d, info)
        )
        ref = completion_logprobs(ops, prompts, encode_vision(ops, prompts), after.rollout.seq_to_prompt,
                                  after.rollout.completion_ids, after.rollout.completion_mask)  # fmt: skip
    m = after.rollout.completion_mask.bool()
    result = {
        "texts": sampled.rollout.texts,
        "logprobs": sampled.engine_logprobs.tolist(),
        "greedy_equal": after.rollout.completion_ids.tolist() == hf.completion_ids.tolist(),
        "greedy_logprob_diff": float((after.engine_logprobs - ref).abs()[m].max()),
        "synced_tensors": stats.tensors,
        "sync_seconds": stats.seconds,
    }
    with open(f"{out_prefix}.{info.rank}.json", "w") as f:
        json.dump(result, f)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
