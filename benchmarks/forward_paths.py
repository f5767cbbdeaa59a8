"""Benchmark: the three training-forward paths of ``completion_logprobs`` on CPU, forward + backward.

- ``shared prefix`` (the default): each prompt once, its G completions attend to its keys/values;
- ``padded``: the N full sequences (prompt + completion), right-padded to the longest completion;
- ``packed``: the N full sequences without padding in one row (block-diagonal causal attention).

Same tiny Qwen2.5-VL, 8 prompts (112 px image each) x G 8, completion lengths drawn uniformly from 1..T
(the spread a trained policy's rollouts show), with and without gradient checkpointing. Each cell is the
median of ``--repeats`` forward+backward passes (CPU process time, so a loaded machine inflates it less than
wall time), interleaved path by path. All three give the same log-probs and gradients
(tests/mmrft/test_forward_levers.py).

    python benchmarks/forward_paths.py [--lengths 64 256] [--repeats 5]

Prints a markdown table and writes ``benchmarks/results/forward_paths.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_step.py

import torch  # noqa: E402

PATHS = {
    "shared prefix": {},
    "padded": {"share_prefix": False},
    "packed": {"share_prefix": False, "packed": True},
}


def run(lengths: list[int], repeats: int, preset: str) -> list[dict]:
    from data_pipelines.dataset import JsonlDataset
    from data_pipelines.synthetic import write_shapes_dataset
    from mmrft.models.forward import completion_logprobs, encode_vision
    from mmrft.models.loading import load_model
    from mmrft.models.tiny import build_tiny
    from mmrft.rollout import encode_prompts

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(Path(tmp) / "model", seed=0, preset=preset)
        data = write_shapes_dataset(Path(tmp) / "data", task="classification", n=8, seed=0)
        samples = [s for s in JsonlDataset(data)]
        for ckpt in (False, True):
            lm = load_model(model_dir, device=torch.device("cpu"), gradient_checkpointing=ckpt)
            model = lm.policy
            pb = encode_prompts(model, lm.processor, samples, 4096, torch.device("cpu"))
            s2p = torch.arange(8).repeat_interleave(8)
            for T in lengths:
                g = torch.Generator().manual_seed(T)
                n_tok = torch.randint(1, T + 1, (64,), generator=g)
                ids = torch.randint(100, 900, (64, T), generator=g)
                mask = (torch.arange(T)[None] < n_tok[:, None]).long()
                times: dict[str, list[float]] = {k: [] for k in PATHS}
                for _ in range(repeats + 1):  # the first pass of each path warms up
                    for name, kwargs in PATHS.items():
                        model.zero_grad(set_to_none=True)
                        t0 = time.process_time()
                        lp = completion_logprobs(
                            model, pb, encode_vision(model, pb), s2p, ids, mask, **kwargs
                        )
                        (lp * mask).sum().backward()
                        times[name].append(time.process_time() - t0)
                med = {k: statistics.median(v[1:]) for k, v in times.items()}
                rows.append({
                    "gradient_checkpointing": ckpt, "max_completion": T, "tokens": int(mask.sum()),
                    "prompt_len": pb.input_ids.shape[1], "cpu_s": med, "loadavg": os.getloadavg()[0],
                })  # fmt: skip
                print(
                    f"ckpt={ckpt} T={T}: " + ", ".join(f"{k} {v:.3f} s" for k, v in med.items()), flush=True
                )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 256], help="longest completion T")
    ap.add_argument("--repeats", type=int, default=5, help="timed passes per path and cell")
    ap.add_argument("--preset", choices=["tiny", "small"], default="tiny")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.lengths, args.repeats, args.preset)
    head = (
        "| gradient checkpointing | T | completion tokens | " + " | ".join(f"{k} CPU s" for k in PATHS) + " |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = " | ".join(f"{r['cpu_s'][k]:.3f}" for k in PATHS)
        lines.append(
            f"| {'on' if r['gradient_checkpointing'] else 'off'} | {r['max_completion']} | {r['tokens']} | {cells} |"
        )
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        cmd = ("python benchmarks/forward_paths.py " + " ".join(sys.argv[1:])).strip()
        loads = [r["loadavg"] for r in rows]
        (_HERE / "results" / "forward_paths.json").write_text(
            json.dumps({"command": cmd, "rows": rows}, indent=2) + "\n"
        )
        (_HERE / "results" / "forward_paths.md").write_text(
            f"# Training-forward paths (CPU, {args.preset}, 8 prompts x G 8, 112 px)\n\n`{cmd}`, "
            f"{args.threads} threads, load average {min(loads):.1f}-{max(loads):.1f}; CPU process seconds of one "
            f"forward + backward, median of {args.repeats}.\n\n{text}\n"
        )


if __name__ == "__main__":
    main()
