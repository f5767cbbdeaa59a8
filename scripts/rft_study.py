"""GRPO vs rejection-sampling FT vs guided GRPO on the shape task, from one SFT warm-up (docs/results.md).

    OMP_NUM_THREADS=2 python scripts/rft_study.py --out runs/rft_study

1. the warm-up: configs/cpu_shape_rft.yaml with no rejection and no GRPO (its SFT steps only);
2. each arm starts from the warm-up's ``final/`` with ``sft.steps=0`` and trains with the in-training
   evaluation cut to one record (so the arms' times are training only);
3. each arm's ``final/`` (and the warm-up's) is scored by ``mmrft eval`` on the first ``--eval-n``
   held-out records, greedy.

Wall and CPU time (user + sys of the training process) are measured per arm. On a shared machine the
wall time depends on the other load; CPU time is the fair measure of equal compute, so the arms'
budgets are set to match in CPU time. Prints a Markdown table and writes ``<out>/results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "cpu_shape_rft.yaml"
COMMON = ["train.progress_bar=false", "train.tensorboard=false", "train.plot=false"]
ARMS = {  # the overrides of each arm, given the command-line arguments
    "GRPO": lambda a: ["rejection.rounds=0", "grpo.guidance=none", f"grpo.steps={a.grpo_steps}"],
    "rejection FT": lambda a: [
        f"rejection.rounds={a.rounds}",
        f"rejection.records={a.records}",
        "grpo.steps=0",
    ],
    "GRPO + guidance": lambda a: [
        "rejection.rounds=0",
        "grpo.guidance=reference",
        f"grpo.steps={a.grpo_steps}",
    ],
}


def timed(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` (output to ``log``); (wall seconds, CPU seconds user + sys of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {proc.returncode}); see {log}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def mmrft(*args: str) -> list[str]:
    return [sys.executable, "-m", "mmrft", *args]


def accuracy(model: Path, data: Path, out: Path, n: int) -> float:
    cmd = mmrft("eval", "--config", str(CONFIG), "--model", str(model), "--data", str(data),
                "--limit", str(n), "--out", str(out))  # fmt: skip
    timed(cmd, out.with_suffix(".log"))
    return json.loads((out / "eval.json").read_text())["metrics"]["classification/accuracy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/rft_study"))
    ap.add_argument("--eval-n", type=int, default=200, help="held-out records scored per model")
    ap.add_argument("--grpo-steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=1, help="rejection rounds of the rejection-FT arm")
    ap.add_argument("--records", type=int, default=64, help="records sampled per rejection round")
    ap.add_argument(
        "--warm", type=Path, default=None, help="a warm-up run directory to reuse (default: <out>/warm)"
    )
    ap.add_argument("--arms", nargs="*", default=list(ARMS), help=f"a subset of {list(ARMS)}")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    warm = args.warm.resolve() if args.warm else out / "warm"
    heldout = warm / "data" / "classification_heldout.jsonl"
    if not (warm / "final").is_dir():
        wall, cpu = timed(
            mmrft("train", "--config", str(CONFIG), "--output-dir", str(warm), "rejection.rounds=0",
                  "grpo.steps=0", "eval.max_samples=1", *COMMON),
            out / "warm.log",
        )  # fmt: skip
        results["SFT warm-up"] = {"wall_s": wall, "cpu_s": cpu}
    if "accuracy" not in results.get("SFT warm-up", {}):
        acc = accuracy(warm / "final", heldout, out / "eval_warm", args.eval_n)
        results.setdefault("SFT warm-up", {})["accuracy"] = acc
    for arm in args.arms:
        run = out / arm.replace(" ", "_").replace("+", "plus")
        over = ARMS[arm](args)
        wall, cpu = timed(
            mmrft("train", "--config", str(CONFIG), "--output-dir", str(run), f"model.path={warm / 'final'}",
                  "sft.steps=0", "eval.max_samples=1", *over, *COMMON),
            run.with_suffix(".log"),
        )  # fmt: skip
        acc = accuracy(run / "final", heldout, out / f"eval_{run.name}", args.eval_n)
        results[arm] = {"wall_s": wall, "cpu_s": cpu, "accuracy": acc, "overrides": over}
        (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"| arm | held-out accuracy (n {args.eval_n}) | train wall s | train CPU s (user+sys) |")
    print("|---|---|---|---|")
    for arm, r in results.items():
        print(
            f"| {arm} | {r.get('accuracy', float('nan')):.3f} | {r.get('wall_s', 0):.0f} | {r.get('cpu_s', 0):.0f} |"
        )


if __name__ == "__main__":
    main()
