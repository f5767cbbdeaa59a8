"""Benchmark: one GRPO training step on CPU, mmrft's ``Trainer`` against TRL 1.16's ``GRPOTrainer``, side by side.

Both sides train the same tiny Qwen2.5-VL (``mmrft.models.tiny.build_tiny``, seed 0, loaded twice from one
directory) on the same synthetic shape-classification records (``write_shapes_dataset``, 112x112 PNGs, read
by ``data_pipelines.JsonlDataset`` on both sides, so the pixels are identical), in the same records order
(no shuffling on either side, so step k sees records 8k .. 8k+7 on both), with the same GRPO settings:
8 prompts a step x G 8 = 64 completions, max_completion_length 12, temperature 1 (top-p 1, top-k off),
beta 0 (no reference model), mu 1 (one optimizer step per rollout, no old-log-prob pass), token-mean (DAPO)
loss, group reward scaling, clip 0.2, AdamW lr 1e-5 (betas 0.9/0.99, no weight decay, cosine to 10%),
grad-norm clip 1, fp32, SDPA attention, no gradient checkpointing, the ``accuracy`` reward, logging every
step, and the same torch thread count, in ONE process.

The two run interleaved, step by step (TRL step k, then mmrft step k, ...): a TRL callback runs the mmrft
step at the end of each TRL step, so both see the same machine load. TRL's step time is the interval
between its consecutive ``on_step_end`` calls minus the time spent in the mmrft step (so it includes
everything TRL does per step: data loading, generation, reward, loss, backward, optimizer, logging);
mmrft's is ``Trainer.grpo_step`` plus its metrics log line. The first ``--warmup`` steps are not timed.

A forward hook on ``model.model.visual`` counts vision-tower calls and images per step, and one on
``model.model.language_model`` counts decoder calls and the tokens they process (batch x length).

The script sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set) before importing torch: on a shared CPU,
OpenMP spin-waiting turns 2-thread steps into multi-second stalls and the comparison into noise.

Run (about 1 minute for ``tiny``, a few for ``small`` on 2 shared cores)::

    python benchmarks/train_step.py [--preset tiny] [--steps 8]

Prints a markdown table and writes ``benchmarks/results/train_step.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
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

# This folder holds a ``rewards.py`` benchmark named like the package: keep it off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

# On a shared, oversubscribed CPU, OpenMP's default spin-waiting makes 2-thread torch steps stall for whole
# scheduler slices (measured here: the same mmrft tiny step took 0.4-8.5 s instead of 0.2 s). Passive waiting
# removes that noise for both sides alike. It must be set before torch loads libgomp; an explicit value wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
G = 8
PROMPTS_PER_STEP = 8
MAX_COMPLETION = 12
LR = 1e-5


class Counter:
    """Forward hooks on a model's vision tower and decoder: calls, images and tokens since the last ``take``."""

    def __init__(self, hf_model):
        core = hf_model.model
        self.vision_calls = self.images = self.patches = self.lm_calls = self.lm_tokens = 0
        self.handles = [
            core.visual.register_forward_hook(self._vision, with_kwargs=True),
            core.language_model.register_forward_hook(self._lm, with_kwargs=True),
        ]

    def _vision(self, module, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        pixels = args[0] if args else kwargs["hidden_states"]
        self.vision_calls += 1
        self.images += 0 if grid is None else int(grid.shape[0])
        self.patches += int(pixels.shape[0])

    def _lm(self, module, args, kwargs, output):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        self.lm_calls += 1
        self.lm_tokens += int(x.shape[0] * x.shape[1]) if x is not None else 0

    def take(self) -> dict[str, int]:
        out = {
            "vision_calls": self.vision_calls,
            "vision_images": self.images,
            "vision_patches": self.patches,
            "lm_calls": self.lm_calls,
            "lm_tokens": self.lm_tokens,
        }
        self.vision_calls = self.images = self.patches = self.lm_calls = self.lm_tokens = 0
        return out


def make_inputs(work: Path, preset: str, n_records: int) -> tuple[Path, Path]:
    from data_pipelines.synthetic import write_shapes_dataset
    from mmrft.models.tiny import build_tiny

    model_dir = build_tiny(work / f"model_{preset}", seed=0, preset=preset)
    train = write_shapes_dataset(work / "data", task="classification", n=n_records, seed=0, question="shape")
    return Path(model_dir), Path(train)


def mmrft_trainer(model_dir: Path, train_file: Path, out: Path, total_steps: int):
    from mmrft.config import load_config
    from mmrft.trainer import Trainer

    overrides = [
        f"model.path={model_dir}",
        "model.dtype=float32",
        "model.attn_implementation=sdpa",
        "model.gradient_checkpointing=false",
        f"data.train_file={train_file}",
        f"data.eval_file={train_file}",
        "data.shuffle=false",
        f"rollout.group_size={G}",
        f"rollout.max_completion_length={MAX_COMPLETION}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        f"train.prompts_per_step={PROMPTS_PER_STEP}",
        f"train.micro_batch_size={PROMPTS_PER_STEP * G}",
        f"train.lr={LR}",
        "train.adam_betas=[0.9, 0.99]",
        "train.weight_decay=0.0",
        "train.max_grad_norm=1.0",
        "train.device=cpu",
        "train.seed=0",
        "train.progress_bar=false",
        "train.tensorboard=false",
        "train.plot=false",
        "train.sample_every=1000000",
        f"grpo.steps={total_steps}",
        "grpo.beta=0.0",
        "grpo.num_iterations=1",
        "grpo.loss_aggregation=token_mean",
        "grpo.scale_rewards=group",
        "grpo.epsilon_low=0.2",
        "grpo.epsilon_high=0.2",
        "rewards=[accuracy]",
        "eval.max_samples=8",
        f"train.output_dir={out}",
    ]
    return Trainer(load_config(None, overrides))


def trl_trainer(
    model_dir: Path, train_file: Path, out: Path, total_steps: int, callbacks, grad_ckpt: bool, seen_ids: list
):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from data_pipelines.dataset import JsonlDataset

    # The records as mmrft reads them (same loader, same resized pixels), in TRL's conversational form with
    # an "image" column, exactly as tests/rewards/test_trl_compat.py passes them.
    samples = [s for s in JsonlDataset(train_file)]
    rows = [
        {"prompt": s.prompt, "image": s.images[0], "solution": s.solution, "task": s.task, "id": s.id}
        for s in samples
    ]
    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa", local_files_only=True
    )
    processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    accuracy = rewards.get("accuracy")

    @functools.wraps(accuracy)  # keeps TRL's reward name; records which records each step scored
    def accuracy_spy(completions, **columns):
        seen_ids.append(list(columns["id"]))
        return accuracy(completions, **columns)

    args = GRPOConfig(
        output_dir=str(out),
        max_steps=total_steps,
        per_device_train_batch_size=PROMPTS_PER_STEP * G,  # completions per step, one micro-batch
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=G,
        num_iterations=1,
        max_completion_length=MAX_COMPLETION,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        loss_type="dapo",
        scale_rewards="group",
        epsilon=0.2,
        learning_rate=LR,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        max_grad_norm=1.0,
        gradient_checkpointing=grad_ckpt,  # TRL's default is True; mmrft's is False
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[accuracy_spy],
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=processor,
        callbacks=callbacks,
    )


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


def run_preset(preset: str, steps: int, warmup: int, work: Path, grad_ckpt: bool) -> dict:
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback

    from mmrft.models.forward import _inner

    total = warmup + steps
    model_dir, train_file = make_inputs(work, preset, PROMPTS_PER_STEP * total)
    mm = mmrft_trainer(model_dir, train_file, work / f"mmrft_{preset}", total)
    mm_counter = Counter(_inner(mm.policy))
    keys = ("trl_s", "mm_s", "trl_counts", "mm_counts", "load1", "mm_len", "mm_reward")
    rec: dict[str, list] = {k: [] for k in keys}

    class Interleave(TrainerCallback):
        """After each TRL step: close TRL's timing window, run one mmrft step, reopen the window."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.mark = time.perf_counter()
            self.trl_counter = Counter(kwargs["model"])

        def on_step_end(self, args, state, control, **kwargs):
            trl_s = time.perf_counter() - self.mark
            k = state.global_step - 1
            rec["trl_s"].append(trl_s)
            rec["trl_counts"].append(self.trl_counter.take())
            rec["load1"].append(os.getloadavg()[0])
            t0 = time.perf_counter()
            metrics, _ = mm.grpo_step(k, k)
            mm.tracker.log(k, "grpo", metrics)
            rec["mm_s"].append(time.perf_counter() - t0)
            rec["mm_counts"].append(mm_counter.take())
            rec["mm_len"].append(metrics["completion_len"])
            rec["mm_reward"].append(metrics["reward"])
            self.mark = time.perf_counter()

    trl_ids: list[list[str]] = []
    trl = trl_trainer(
        model_dir, train_file, work / f"trl_{preset}", total, [Interleave()], grad_ckpt, trl_ids
    )
    mm_params = dict(_inner(mm.policy).named_parameters())
    for name, p in trl.model.named_parameters():  # same starting weights on both sides
        assert torch.equal(p, mm_params[name]), f"weights differ at the start: {name}"
    trl.remove_callback(PrinterCallback)  # TRL prints every log dict when tqdm is off
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    trl.train()
    wall = time.perf_counter() - t0
    assert len(rec["trl_s"]) == total == len(rec["mm_s"]), (len(rec["trl_s"]), len(rec["mm_s"]))
    assert torch.get_num_threads() == threads, "thread count changed during the run"

    # Same prompts each step: step k scores records 8k .. 8k+7 on both sides (TRL: each repeated G times).
    from mmrft.data import step_indices

    ids = [r["id"] for r in mm.data.train.records]
    for k in range(total):
        idx, _ = step_indices(k, PROMPTS_PER_STEP, len(ids), mm.cfg.train.seed, 0, 1, mm.cfg.data.shuffle)
        assert trl_ids[k] == [ids[i] for i in idx for _ in range(G)], (
            f"step {k}: the sides saw different prompts"
        )
    logs = [e for e in trl.state.log_history if "completions/mean_length" in e]
    trl_len = [e["completions/mean_length"] for e in logs]
    timed = slice(warmup, total)
    sides = {}
    for side, times, counts, lengths in (
        ("trl", rec["trl_s"], rec["trl_counts"], trl_len),
        ("mmrft", rec["mm_s"], rec["mm_counts"], rec["mm_len"]),
    ):
        st = _stats(times[timed])
        sides[side] = {
            **st,
            "completions_per_s": PROMPTS_PER_STEP * G / st["median_s"],
            "per_step_counts": _per_step(counts[timed]),
            "counts_by_step": counts,
            "step_times_s": times,
            "completion_len_mean": statistics.fmean(lengths[timed]) if len(lengths) >= total else None,
        }
    n_params = sum(p.numel() for p in trl.model.parameters())
    return {
        "preset": preset,
        "params": n_params,
        "steps_timed": steps,
        "warmup": warmup,
        "threads": threads,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "load1_by_step": rec["load1"],
        "wall_s": wall,
        "trl_gradient_checkpointing": grad_ckpt,
        "trl_model_is_gradient_checkpointing": bool(getattr(trl.model, "is_gradient_checkpointing", False)),
        "same_weights_at_start": True,
        "same_prompts_each_step": True,
        "speedup_median": sides["trl"]["median_s"] / sides["mmrft"]["median_s"],
        "speedup_mean": sides["trl"]["mean_s"] / sides["mmrft"]["mean_s"],
        "mmrft_reward_mean": statistics.fmean(rec["mm_reward"]),
        "trl_reward_mean": statistics.fmean(e["reward"] for e in logs) if logs else None,
        "sides": sides,
    }


def table(results: list[dict]) -> str:
    head = (
        "| preset | params | side | median s/step | mean s/step | min-max s | completions/s | TRL/mmrft (median) "
        "| vision calls/step | images through vision/step | decoder calls/step | decoder tokens/step "
        "| mean completion len |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        for side in ("trl", "mmrft"):
            s = r["sides"][side]
            c = s["per_step_counts"]
            name = "TRL 1.16 GRPOTrainer" if side == "trl" else "mmrft Trainer"
            if side == "trl" and r["trl_gradient_checkpointing"]:
                name += " (grad ckpt)"
            ratio = f"{r['speedup_median']:.2f}x" if side == "mmrft" else ""
            length = "" if s["completion_len_mean"] is None else f"{s['completion_len_mean']:.1f}"
            lines.append(
                f"| {r['preset']} | {r['params'] / 1e6:.2f} M | {name} | {s['median_s']:.3f} | {s['mean_s']:.3f} "
                f"| {s['min_s']:.3f}-{s['max_s']:.3f} | {s['completions_per_s']:.0f} | {ratio} "
                f"| {c['vision_calls']:g} | {c['vision_images']:g} | {c['lm_calls']:g} | {c['lm_tokens']:,.0f} "
                f"| {length} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=["tiny", "small", "both"], default="both", help="tiny model size(s)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per side (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side first")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (both sides share the process)")
    ap.add_argument(
        "--trl-gradient-checkpointing",
        action="store_true",
        help="leave TRL's default gradient_checkpointing=True on (unfair to TRL; off by default here)",
    )
    ap.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results/")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    presets = ["tiny", "small"] if args.preset == "both" else [args.preset]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_train_step_") as tmp:
        for preset in presets:
            r = run_preset(preset, args.steps, args.warmup, Path(tmp), args.trl_gradient_checkpointing)
            results.append(r)
            print(
                f"[{preset}] TRL {r['sides']['trl']['median_s']:.3f} s/step, mmrft "
                f"{r['sides']['mmrft']['median_s']:.3f} s/step ({r['speedup_median']:.2f}x), wall "
                f"{r['wall_s']:.0f} s, load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}",
                flush=True,
            )

    import trl

    env = {
        "device": "cpu",
        "cpu": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "threads": args.threads,
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
    }
    cmd = "python benchmarks/train_step.py " + " ".join(sys.argv[1:])
    md = [
        "# GRPO train step: mmrft vs TRL GRPOTrainer (CPU)",
        "",
        f"`{cmd.strip()}` on {env}; {PROMPTS_PER_STEP} prompts x G {G} = {PROMPTS_PER_STEP * G} completions "
        f"a step, max_completion_length {MAX_COMPLETION}, temperature 1, beta 0, mu 1, fp32, one process, "
        f"sides interleaved step by step; {args.warmup} warm-up steps, then {args.steps} timed steps a side.",
        "",
        table(results),
        "",
        "Load average (1 min) during the runs: "
        + "; ".join(
            f"{r['preset']}: {min(r['load1_by_step']):.2f}-{max(r['load1_by_step']):.2f} "
            f"on {env['cores']} cores"
            for r in results
        )
        + ".",
        "",
        "- *s/step*: wall seconds of one whole step (data, generation, reward, loss, backward, optimizer, log).",
        "- *vision calls*, *images through vision*: forward calls of `model.model.visual` and the images they "
        "encoded. *decoder calls*, *decoder tokens*: forward calls of `model.model.language_model` and batch x "
        "length of their inputs (generation prefill + decode steps + training forward).",
        "- Both sides: same weights, records, order, G, sampling, loss, optimizer and threads (see the script's "
        "docstring); TRL's gradient checkpointing (its default) is "
        + ("ON" if args.trl_gradient_checkpointing else "OFF")
        + " here.",
        "- Why TRL does more work: its sampler repeats each prompt G times, so its processor, vision tower and "
        "prompt prefill see G copies of every image and prompt, in generation and again in the training forward "
        "(the *images* and *decoder tokens* columns); it also decodes each record's PNG G times and computes "
        "per-token entropy in the training forward. mmrft encodes each image once per phase and shares each "
        "prompt's prefill (KV cache) among its G completions.",
        "- The random tiny model writes junk, so the `accuracy` reward is 0 everywhere: advantages are 0 and both "
        "sides back-propagate a zero loss (the same compute as a real step; the weights do not move).",
        "- `OMP_WAIT_POLICY=PASSIVE` (set by the script): with OpenMP's default spin-waiting on this shared, "
        "oversubscribed 2-core machine, 2-thread steps stalled at random (the same mmrft tiny step took 0.4-8.5 s).",
    ]
    extra = [
        r["sides"]["mmrft"]["per_step_counts"]["lm_calls"]
        - r["sides"]["trl"]["per_step_counts"]["lm_calls"]
        - 1
        for r in results
    ]
    if max(extra) > 0:
        md.append(
            f"- mmrft ran {max(extra):g} decoder call(s) a step more than TRL beyond its extra training call "
            "(prefix + completion): its generation loop runs a decode forward after the last allowed token, "
            "whose output is never used."
        )
    text = table(results)
    print()
    print(text)
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "train_step.json").write_text(
            json.dumps({"command": cmd.strip(), "env": env, "results": results}, indent=2) + "\n"
        )
        (RESULTS / "train_step.md").write_text("\n".join(md) + "\n")
        print(f"\nwrote {RESULTS / 'train_step.json'} and {RESULTS / 'train_step.md'}")


if __name__ == "__main__":
    main()
