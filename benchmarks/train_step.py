"""Benchmark: one GRPO training step on CPU, mmrft's ``Trainer`` against TRL 1.16's ``GRPOTrainer``, side by side.

Both sides train the same tiny Qwen2.5-VL (``mmrft.models.tiny.build_tiny``, seed 0, loaded twice from one
directory) on the same synthetic shape-classification records (PNGs written by ``write_shapes_dataset``, read
through mmrft's ``JsonlDataset``, whose Samples feed BOTH sides, so the pixels are identical), in the same
records order (no shuffling on either side, so rollout k sees records 8k .. 8k+7 on both), with the same GRPO
settings: 8 prompts a rollout x G 8 = 64 completions, temperature 1 (top-p 1, top-k off), token-mean (DAPO)
loss, group reward scaling, clip 0.2, AdamW lr 1e-5 (betas 0.9/0.99, no weight decay, cosine to 10%),
grad-norm clip 1, fp32, SDPA attention, the ``accuracy`` reward, logging every step, and the same torch
thread count, in ONE process. A row's settings change both sides alike:

- ``--max-completion`` new tokens; ``--beta`` (> 0 loads a reference model on both sides); ``--mu``
  (num_iterations: updates per rollout, old log-probs stored on both sides);
- ``--image-size`` (square images), ``--images-per-prompt``, ``--video-frames`` (an MP4 of that many 112 px
  frames at 2 fps per prompt, sampled whole; TRL 1.16's GRPOTrainer takes no video, so its side gets every
  second frame as an image: frames/2 images = the same vision patches and the same number of vision tokens
  in the prompt, since Qwen2.5-VL merges 2 video frames into one temporal patch and an image is one);
- ``--gradient-checkpointing`` (both sides, non-reentrant); ``--lora`` (rank 16, alpha 32, dropout 0.05 on
  q/k/v/o of the language model, both sides; with beta 0 neither side has a reference model).

The two run interleaved, rollout by rollout (TRL's mu steps of rollout k, then mmrft's step k, ...): a TRL
callback runs the mmrft step at the end of every mu-th TRL step, so both see the same machine load. TRL's time
is the interval between those callbacks minus the time spent in the mmrft step (everything TRL does: data
loading, generation, reward, loss, backward, optimizer, logging); mmrft's is ``Trainer.grpo_step`` plus its
metrics log line. The first ``--warmup`` rollouts are not timed; one more rollout after the timed ones
measures each side's peak memory (on CPU: the peak RSS during that side's step above its RSS at the start,
after returning freed heap to the OS; Linux only), so the timed steps run undisturbed.

Forward hooks on ``model.model.visual`` and ``model.model.language_model`` count vision-tower calls, images and
patches, decoder calls and the tokens they process (batch x length), per rollout.

The script sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before importing torch: on a shared CPU,
OpenMP spin-waiting turns 2-thread steps into multi-second stalls and the comparison into noise.

Run::

    python benchmarks/train_step.py [--preset tiny] [--steps 8]          # the 12-token row, both presets
    python benchmarks/train_step.py --preset tiny --max-completion 64 --beta 0.04 --json /tmp/row.json
    python benchmarks/train_step.py --matrix                           # every row of the target list

Prints a markdown table; writes ``benchmarks/results/train_step.json`` and ``.md`` for ``--matrix``, else
``train_step_row.json`` and ``.md``, unless ``--no-write``; ``--json PATH`` also writes that run's rows to PATH.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

# On a shared, oversubscribed CPU, OpenMP's default spin-waiting makes 2-thread torch steps stall for whole
# scheduler slices (measured here: the same mmrft tiny step took 0.4-8.5 s instead of 0.2 s). Passive waiting
# removes that noise for both sides alike. It must be set before torch loads libgomp; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from train_step_sides import (  # noqa: E402
    MATRIX,
    PROMPTS_PER_STEP,
    Counter,
    G,
    PeakMemory,
    Setting,
    make_inputs,
    mmrft_trainer,
    trl_trainer,
)

RESULTS = Path(__file__).resolve().parent / "results"


def _stats(times: list[float]) -> dict[str, float]:
    return {
        "median_s": statistics.median(times),
        "mean_s": statistics.fmean(times),
        "min_s": min(times),
        "max_s": max(times),
        "stdev_s": statistics.stdev(times) if len(times) > 1 else 0.0,
    }


def _per_step(counts: list[dict[str, int]]) -> dict[str, float]:
    return {k: statistics.fmean(c[k] for c in counts) for k in counts[0]}


def _labelled(label, fn, grad_mode: bool = False):
    """``fn`` inside a profiler range named ``label`` (with ``grad_mode``: its grad mode appended)."""
    from torch.profiler import record_function

    @functools.wraps(fn)
    def inner(*args, **kwargs):
        name = f"{label} ({'grad' if torch.is_grad_enabled() else 'no grad'})" if grad_mode else label
        with record_function(f"phase: {name}"):
            return fn(*args, **kwargs)

    return inner


def profile_mmrft(mm, k: int, rows: int = 18) -> dict:
    """One more mmrft rollout under torch.profiler: seconds per phase and the top ops by self CPU time.

    Phases are profiler ranges around the trainer's building blocks (the trainer itself is untouched;
    the benchmark swaps labelled wrappers into ``mmrft.trainer`` for this one step): prompt encoding,
    generation, vision tower, log-prob forwards (no grad: reference / old policy; grad: the policy),
    reward scoring, optimizer; the rest of the step is mostly backward.
    """
    from torch.profiler import ProfilerActivity, profile

    import mmrft.trainer as tr

    names = ("encode_prompts", "generate", "encode_vision", "completion_logprobs")
    saved = {n: getattr(tr, n) for n in names}
    saved_opt, saved_rewards = mm._optimizer_step, mm.rewards
    try:
        for n in names:
            setattr(tr, n, _labelled(n, saved[n], grad_mode=n == "completion_logprobs"))
        mm._optimizer_step = _labelled("optimizer_step", saved_opt)
        mm.rewards = _labelled("rewards", saved_rewards)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            mm.grpo_step(k, k)
            wall = time.perf_counter() - t0
    finally:
        for n in names:
            setattr(tr, n, saved[n])
        mm._optimizer_step, mm.rewards = saved_opt, saved_rewards
    averages = prof.key_averages()
    phases = {e.key[7:]: e.cpu_time_total / 1e6 for e in averages if e.key.startswith("phase: ")}
    # vision runs inside generate / the log-prob forwards: report it, but do not count it twice
    nested = phases.get("encode_vision", 0.0)
    phases["rest: backward, loss, bookkeeping"] = wall - (sum(phases.values()) - nested)
    return {
        "wall_s_profiled": wall,
        "phases_s": dict(sorted(phases.items(), key=lambda kv: -kv[1])),
        "top_ops": averages.table(sort_by="self_cpu_time_total", row_limit=rows),
    }


def run_setting(
    preset: str, s: Setting, steps: int, warmup: int, work: Path, profile: float | None = None
) -> dict:
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from mmrft.data import step_indices

    total = warmup + steps + 1  # + the memory rollout
    mem_k = total - 1
    model_dir, train_file = make_inputs(work, preset, PROMPTS_PER_STEP * total, s)
    mm = mmrft_trainer(model_dir, train_file, work / f"mmrft_{preset}_{abs(hash(s))}", total, s)
    samples = [mm.data.train[i] for i in range(len(mm.data.train))]  # the very pixels mmrft trains on
    mm_counter = Counter(mm.policy.hf)
    keys = ("trl_s", "mm_s", "trl_counts", "mm_counts", "load1", "mm_len", "mm_reward")
    rec: dict[str, list] = {k: [] for k in keys}
    memory = {"trl": None, "mmrft": None}
    peak = PeakMemory()

    class Interleave(TrainerCallback):
        """After every mu-th TRL step: close TRL's window, run one mmrft rollout step, reopen the window."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.mark = time.perf_counter()
            self.trl_counter = Counter(kwargs["model"])

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % s.mu:
                return
            k = state.global_step // s.mu - 1
            rec["trl_s"].append(time.perf_counter() - self.mark)
            if k == mem_k:
                memory["trl"] = peak.peak_mb()
            rec["trl_counts"].append(self.trl_counter.take())
            rec["load1"].append(os.getloadavg()[0])
            if k == mem_k:
                peak.start()
            t0 = time.perf_counter()
            metrics, _ = mm.grpo_step(k, k)
            mm.tracker.log(k, "grpo", metrics)
            rec["mm_s"].append(time.perf_counter() - t0)
            if k == mem_k:
                memory["mmrft"] = peak.peak_mb()
            rec["mm_counts"].append(mm_counter.take())
            rec["mm_len"].append(metrics["completion_len"])
            rec["mm_reward"].append(metrics["reward"])
            if k + 1 == mem_k:
                peak.start()
            self.mark = time.perf_counter()

    trl_ids: list[list[str]] = []
    trl = trl_trainer(model_dir, samples, work / f"trl_{preset}", total, [Interleave()], s, trl_ids)
    if not s.lora:  # same starting weights (with LoRA: same base; each side initialises its own adapter)
        mm_params = dict(mm.policy.hf.named_parameters())
        for name, p in trl.model.named_parameters():
            assert torch.equal(p, mm_params[name]), f"weights differ at the start: {name}"
    trl.remove_callback(PrinterCallback)  # TRL prints every log dict when tqdm is off
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    trl.train()
    wall = time.perf_counter() - t0
    assert len(rec["trl_s"]) == total == len(rec["mm_s"]), (len(rec["trl_s"]), len(rec["mm_s"]))
    assert torch.get_num_threads() == threads, "thread count changed during the run"
    # Same prompts each rollout: rollout k scores records 8k .. 8k+7 on both sides (TRL: each repeated G times).
    ids = [r["id"] for r in mm.data.train.records]
    assert len(trl_ids) == total, f"TRL generated {len(trl_ids)} times for {total} rollouts"
    for k in range(total):
        idx, _ = step_indices(k, PROMPTS_PER_STEP, len(ids), mm.cfg.train.seed, 0, 1, mm.cfg.data.shuffle)
        assert trl_ids[k] == [ids[i] for i in idx for _ in range(G)], (
            f"rollout {k}: the sides saw different prompts"
        )
    logs = [e for e in trl.state.log_history if "completions/mean_length" in e]
    trl_len = [e["completions/mean_length"] for e in logs]  # logged at the steps that generated
    timed = slice(warmup, warmup + steps)
    sides = {}
    for side, times, counts, lengths in (
        ("trl", rec["trl_s"], rec["trl_counts"], trl_len),
        ("mmrft", rec["mm_s"], rec["mm_counts"], rec["mm_len"]),
    ):
        st = _stats(times[timed])
        sides[side] = {
            **st,
            "completions_per_s": PROMPTS_PER_STEP * G / st["median_s"],
            "peak_step_mem_mb": memory[side],
            "per_step_counts": _per_step(counts[timed]),
            "counts_by_step": counts,
            "step_times_s": times,
            "completion_len_mean": statistics.fmean(lengths[timed]) if len(lengths) >= total else None,
        }
    speedup = sides["trl"]["median_s"] / sides["mmrft"]["median_s"]
    return {
        "row": s.name,
        "settings": dataclasses.asdict(s),
        "preset": preset,
        "params": sum(p.numel() for p in trl.model.parameters()),
        "steps_timed": steps,
        "warmup": warmup,
        "threads": threads,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "load1_by_step": rec["load1"],
        "wall_s": wall,
        "trl_model_is_gradient_checkpointing": bool(getattr(trl.model, "is_gradient_checkpointing", False)),
        "same_weights_at_start": not s.lora,
        "same_prompts_each_step": True,
        "speedup": speedup,
        "speedup_mean": sides["trl"]["mean_s"] / sides["mmrft"]["mean_s"],
        "mmrft_reward_mean": statistics.fmean(rec["mm_reward"]),
        "trl_reward_mean": statistics.fmean(e["reward"] for e in logs) if logs else None,
        "sides": sides,
        "mmrft_profile": profile_mmrft(mm, total) if profile is not None and speedup < profile else None,
    }


def _mem(v: float | None) -> str:
    return "" if v is None else f"{v:.0f}"


def table(results: list[dict]) -> str:
    head = (
        "| row | preset | side | median s/rollout | min-max s | completions/s | TRL/mmrft (median) | peak step MB "
        "| vision calls | images through vision | decoder calls | decoder tokens | mean completion len |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        for side in ("trl", "mmrft"):
            s = r["sides"][side]
            c = s["per_step_counts"]
            name = "TRL 1.16 GRPOTrainer" if side == "trl" else "mmrft Trainer"
            ratio = f"**{r['speedup']:.2f}x**" if side == "mmrft" else ""
            length = "" if s["completion_len_mean"] is None else f"{s['completion_len_mean']:.1f}"
            lines.append(
                f"| {r['row'] if side == 'trl' else ''} | {r['preset']} | {name} | {s['median_s']:.3f} "
                f"| {s['min_s']:.3f}-{s['max_s']:.3f} | {s['completions_per_s']:.0f} | {ratio} "
                f"| {_mem(s['peak_step_mem_mb'])} | {c['vision_calls']:g} | {c['vision_images']:g} "
                f"| {c['lm_calls']:g} | {c['lm_tokens']:,.0f} | {length} |"
            )
    return "\n".join(lines)


NOTES = [
    "- *s/rollout*: wall seconds of one rollout and its mu updates (mu 1: one step): data, generation, reward, "
    "loss, backward, optimizer, log. *peak step MB*: peak RSS during that side's step above its RSS at the start "
    "(one extra, untimed rollout). Counts are per rollout.",
    "- *vision calls*, *images through vision*: forward calls of `model.model.visual` and the images (or videos) "
    "they encoded. *decoder calls*, *decoder tokens*: forward calls of `model.model.language_model` and batch x "
    "length of their inputs (generation prefill + decode steps + training forwards).",
    "- Both sides: same weights, records (the same decoded pixels), order, G, sampling, loss, optimizer and threads; "
    "the row's setting on both (see the script's docstring). 8-frame video: TRL 1.16 takes no video, so its side "
    "gets frames 0, 2, 4, 6 as 4 images: the same 256 vision patches and 64 vision tokens a prompt as mmrft's "
    "8-frame clip (2 frames per temporal patch).",
    "- Why TRL does more work: its sampler repeats each prompt G times, so its processor, vision tower and prompt "
    "prefill see G copies of every image and prompt, in generation and again in each training forward (the "
    "*images* and *decoder tokens* columns); it also decodes each record's images G times and computes per-token "
    "entropy in the training forward. mmrft encodes each image once per forward and shares each prompt's prefill "
    "among its G completions, in generation (KV cache) and in training (the prompt's keys/values, also with "
    "gradient checkpointing).",
    "- The random tiny model writes junk, so the `accuracy` reward is 0 everywhere: advantages are 0 and both sides "
    "back-propagate a zero loss (the same compute as a real step; the weights do not move).",
    "- `OMP_WAIT_POLICY=PASSIVE` (set by the script): with OpenMP's default spin-waiting on a shared, "
    "oversubscribed 2-core machine, 2-thread steps stall at random.",
]


def environment(threads: int) -> dict:
    import transformers
    import trl

    return {
        "device": "cpu",
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "threads": threads,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }


def profiles_md(results: list[dict]) -> list[str]:
    out = []
    for r in results:
        prof = r.get("mmrft_profile")
        if not prof:
            continue
        out += ["", f"## Where mmrft's time goes: {r['row']} ({r['preset']}, {r['speedup']:.2f}x)", "",
                f"One rollout under torch.profiler ({prof['wall_s_profiled']:.2f} s with the profiler on):", "",
                "| phase | s |", "|---|---|"]  # fmt: skip
        out += [f"| {k} | {v:.3f} |" for k, v in prof["phases_s"].items()]
        out += ["", "Top ops by self CPU time:", "", "```", prof["top_ops"], "```"]
    return out


def markdown(results: list[dict], env: dict, cmd: str, args) -> str:
    loads = [x for r in results for x in r["load1_by_step"]]
    md = [
        "# GRPO train step: mmrft vs TRL GRPOTrainer (CPU)",
        "",
        f"`{cmd}` on {env}; {PROMPTS_PER_STEP} prompts x G {G} = {PROMPTS_PER_STEP * G} completions a rollout, "
        f"temperature 1, fp32, one process, sides interleaved rollout by rollout; {args.warmup} warm-up rollouts, "
        f"then {args.steps} timed rollouts a side (medians), then one memory rollout.",
        "",
        table(results),
        "",
        f"Load average (1 min) during the runs: {min(loads):.2f}-{max(loads):.2f} on {env['cores']} cores.",
        "",
        *NOTES,
        *profiles_md(results),
    ]
    return "\n".join(md) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["tiny", "small", "both"], default=None,
                    help="tiny model size(s); default both for a single row, tiny for --matrix")  # fmt: skip
    ap.add_argument("--steps", type=int, default=8, help="timed rollouts per side (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rollouts per side first")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (both sides share the process)")
    d = Setting()
    ap.add_argument("--max-completion", type=int, default=d.max_completion, help="new tokens per completion")
    ap.add_argument("--beta", type=float, default=d.beta, help="KL coefficient (> 0 loads a reference model)")
    ap.add_argument("--mu", type=int, default=d.mu, help="num_iterations: updates per rollout")
    ap.add_argument("--image-size", type=int, default=d.image_size, help="side of the square images (px)")
    ap.add_argument(
        "--images-per-prompt", type=int, default=d.images_per_prompt, help="images in each prompt"
    )
    ap.add_argument(
        "--video-frames", type=int, default=d.video_frames, help="a video of this many frames instead"
    )
    ap.add_argument(
        "--gradient-checkpointing", action="store_true", help="gradient checkpointing on both sides"
    )
    ap.add_argument("--lora", action="store_true", help="LoRA (r 16) on both sides")
    ap.add_argument(
        "--matrix", action="store_true", help="run every row of the target list (ignores the above)"
    )
    ap.add_argument("--profile", type=float, nargs="?", const=2.0, default=None, metavar="X",
                    help="profile the mmrft side of rows under X-fold speedup (default 2)")  # fmt: skip
    ap.add_argument(
        "--json", type=Path, default=None, help="also write this run's rows (settings, speedup) here"
    )
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args()
    if args.image_size % 28:
        ap.error(f"--image-size must be a multiple of 28 (patch 14 x merge 2), got {args.image_size}")
    if args.video_frames and (args.video_frames % 2 or args.images_per_prompt != 1):
        ap.error(
            "--video-frames must be even (2 frames a temporal patch) and used without --images-per-prompt"
        )
    for flag in ("max_completion", "mu", "images_per_prompt", "steps"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    preset = args.preset or ("tiny" if args.matrix else "both")
    presets = ["tiny", "small"] if preset == "both" else [preset]
    if args.matrix:
        settings = MATRIX
    else:
        settings = [Setting("cli", args.max_completion, args.beta, args.mu, args.image_size, args.images_per_prompt,
                            args.video_frames, args.gradient_checkpointing, args.lora)]  # fmt: skip
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        for p in presets:
            for s in settings:
                r = run_setting(p, s, args.steps, args.warmup, Path(tmp), args.profile)
                results.append(r)
                print(
                    f"[{p}] {s.name}: TRL {r['sides']['trl']['median_s']:.3f} s, mmrft "
                    f"{r['sides']['mmrft']['median_s']:.3f} s ({r['speedup']:.2f}x), wall {r['wall_s']:.0f} s, "
                    f"load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}",
                    flush=True,
                )
    env = environment(args.threads)
    cmd = ("python benchmarks/train_step.py " + " ".join(sys.argv[1:])).strip()
    payload = json.dumps({"command": cmd, "env": env, "results": results}, indent=2) + "\n"
    print()
    print(table(results))
    if args.json:
        args.json.write_text(payload)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        stem = "train_step" if args.matrix else "train_step_row"
        (RESULTS / f"{stem}.json").write_text(payload)
        (RESULTS / f"{stem}.md").write_text(markdown(results, env, cmd, args))
        print(f"\nwrote {RESULTS / stem}.json and .md")


if __name__ == "__main__":
    main()
