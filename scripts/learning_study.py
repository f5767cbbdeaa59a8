"""The learning study: every CPU recipe before and after GRPO, RFT against SFT, and forgetting.

    python scripts/learning_study.py                       # everything (reuses finished runs)
    python scripts/learning_study.py --only color,grounding  # a subset of the recipes / comparisons
    python scripts/learning_study.py --report-only         # rewrite docs/results.md from finished runs

Runs land in ``runs/study/<name>`` (a run with a ``study_run.json`` and a ``summary.json`` made by the
same command is reused). Each run's wall time and the CPU time of its process tree (user + sys) are
recorded: on a machine shared with other jobs the wall time is inflated and the CPU time is the measure
of the work. The report goes to ``docs/results.md`` between ``<!-- study:begin -->`` and
``<!-- study:end -->``; everything outside the markers is kept. Curves: ``docs/results_curves.png``.

Comparisons (names for ``--only``): ``sft_<task>`` (SFT only, the same labelled records as the recipe's
warm-up, for the wall time of the recipe's warm-up + GRPO), evaluated with the recipe on its held-out
and shifted splits; ``forget`` (colour, then shape classification by the shape recipe or by SFT only; colour
accuracy before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "study"
DOC = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- study:begin -->", "<!-- study:end -->"


@dataclass(frozen=True)
class Recipe:
    name: str
    config: str
    metric: str  # key of summary.json's eval_before / eval_after
    target: float  # gain the issue asks for


RECIPES = {
    r.name: r
    for r in (
        Recipe("color", "configs/cpu_color.yaml", "classification/accuracy", 0.3),
        Recipe("shape", "configs/cpu_shape.yaml", "classification/accuracy", 0.10),
        Recipe("counting", "configs/cpu_counting.yaml", "counting/accuracy", 0.15),
        Recipe("grounding", "configs/cpu_grounding.yaml", "grounding/Acc@0.5", 0.20),
        Recipe("detection", "configs/cpu_detection.yaml", "detection/AP50", 0.10),
        Recipe("temporal", "configs/cpu_temporal.yaml", "temporal_grounding/R1@0.5", 0.15),
    )
}
COMPARED = ("color", "grounding")  # RFT against SFT: recipes whose configs write a shifted split


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _timed(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` (output to ``log``); its wall time, its process tree's CPU time and the load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load0, t0 = os.getloadavg()[0], time.time()
    with log.open("w") as f:
        rc = subprocess.run(cmd, cwd=ROOT, env=_env(), stdout=f, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if rc:
        raise SystemExit(f"{shlex.join(cmd)} failed (exit {rc}); see {log}")
    return {"wall_s": time.time() - t0, "cpu_s": cpu, "load_start": load0, "load_end": os.getloadavg()[0]}


def train(name: str, config: str, overrides: list[str] = ()) -> dict:
    """One training run, reused when ``runs/study/<name>`` holds a finished run of the same command."""
    out = RUNS / name
    cmd = [
        sys.executable,
        "-m",
        "mmrft",
        "train",
        "--config",
        config,
        f"train.output_dir={out.relative_to(ROOT)}",
    ]
    cmd += ["train.progress_bar=false", *overrides]
    shown = "mmrft train " + shlex.join(cmd[4:])
    rec_path = out / "study_run.json"
    if rec_path.is_file() and (out / "summary.json").is_file():
        rec = json.loads(rec_path.read_text())
        if rec["command"] == shown:
            return {**rec, "summary": json.loads((out / "summary.json").read_text())}
    out.mkdir(parents=True, exist_ok=True)
    print(f"[study] {shown}", flush=True)
    rec = {"command": shown, **_timed(cmd, out / "study_train.log")}
    rec_path.write_text(json.dumps(rec, indent=1))
    return {**rec, "summary": json.loads((out / "summary.json").read_text())}


def evaluate(model: Path, data: Path, config: str, out: Path) -> dict:
    """``mmrft eval`` of a checkpoint on a records file; its metrics (reused when already there)."""
    if not (out / "eval.json").is_file():
        cmd = [sys.executable, "-m", "mmrft", "eval", "--model", str(model), "--data", str(data)]
        cmd += ["--config", config, "--out", str(out)]
        print(f"[study] mmrft eval {shlex.join(cmd[4:])}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        _timed(cmd, out.parent / f"{out.name}.log")
    return json.loads((out / "eval.json").read_text())["metrics"]


def _stage_times(run_dir: Path) -> tuple[float, float, int]:
    """(mean SFT step time, total GRPO step time, SFT steps) from a run's metrics.jsonl."""
    sft, grpo = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "step_time" in row:
            (sft if row.get("stage") == "sft" else grpo).append(row["step_time"])
    return sum(sft) / max(len(sft), 1), sum(grpo), len(sft)


def sft_only(recipe: Recipe, base: dict) -> dict:
    """SFT alone on the recipe's labelled records, for the recipe's warm-up + GRPO wall time."""
    sft_mean, grpo_total, sft_steps = _stage_times(RUNS / recipe.name)
    steps = sft_steps + round(grpo_total / sft_mean)
    return train(f"sft_{recipe.name}", recipe.config, [f"sft.steps={steps}", "grpo.steps=0"])


def _shifted(recipe: Recipe) -> Path:
    task = {"color": "classification", "shape": "classification"}.get(recipe.name, recipe.name)
    return RUNS / recipe.name / "data" / f"{task}_shifted.jsonl"


def _curve(run_dir: Path) -> tuple[list[int], list[float]]:
    steps, rewards = [], []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("stage") == "grpo" and "reward" in row:
            steps.append(row["step"])
            rewards.append(row["reward"])
    return steps, rewards


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in RECIPES if n in runs]
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.8), squeeze=False)
    for ax, n in zip(axes[0], names):
        s, r = _curve(RUNS / n)
        k = 5
        smooth = [
            sum(r[max(0, i - k + 1) : i + 1]) / len(r[max(0, i - k + 1) : i + 1]) for i in range(len(r))
        ]
        ax.plot(s, r, color="tab:blue", alpha=0.3)
        ax.plot(s, smooth, color="tab:blue", label="train reward (5-step mean)")
        ax.set_title(f"{n}: {RECIPES[n].metric.split('/')[-1]} "
                     f"{runs[n]['before']:.2f} -> {runs[n]['after']:.2f}", fontsize=9)  # fmt: skip
        ax.set_xlabel("GRPO step")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("mean reward")
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_t(s: float) -> str:
    return f"{s / 60:.1f} min"


def report(runs: dict, compare: dict, forget: dict) -> str:
    lines = [
        "## CPU recipes: the task metric before and after GRPO",
        "",
        "Each row is one `mmrft train --config configs/cpu_<task>.yaml` run from scratch (model build, data,",
        "SFT warm-up, held-out evaluation, GRPO, evaluation again); `before` is `summary.json`'s `eval_before`",
        "(after the warm-up), `after` its `eval_after`. CPU time is the run's process tree (user + sys),",
        "measured with one thread; the wall time was taken on a 2-core machine shared with other jobs (load",
        "shown), so it is inflated: the CPU time is the measure of the work (on a quiet 2-core machine the",
        "run takes about that long or less).",
        "",
        "| recipe | metric | before | after | gain | target | met | CPU time | wall time | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in runs.items():
        rc = RECIPES[n]
        gain = r["after"] - r["before"]
        lines.append(
            f"| {n} | {rc.metric} | {r['before']:.3f} | {r['after']:.3f} | {gain:+.3f} | +{rc.target:.2f} | "
            f"{'yes' if gain >= rc.target else 'no'} | {_fmt_t(r['cpu_s'])} | {_fmt_t(r['wall_s'])} | "
            f"{r['load_start']:.1f}-{r['load_end']:.1f} |"
        )
    missing = [f"`{r.config}`" for n, r in RECIPES.items() if n not in runs]
    if missing:
        lines += ["", f"Not measured in this report (no finished run): {', '.join(missing)}."]
    lines += ["", "![GRPO training reward per recipe](results_curves.png)", "", "Commands:", "", "```bash"]
    lines += [r["command"] for r in runs.values()] + ["```", ""]
    if compare:
        lines += [
            "## RFT against SFT on the same labelled records",
            "",
            "(a) SFT only: the recipe's labelled records (`data.synthetic.sft_examples`), trained for as many",
            "SFT steps as fit in the wall time of the recipe's warm-up + GRPO (measured step times of the",
            "recipe's own run); (b) the recipe: the same warm-up, then GRPO on unlabelled prompts scored by",
            "the reward. Held-out: the recipe's held-out split (the same shape/colour pairs as training).",
            "Shifted: shape/colour pairs never drawn in training (`data.synthetic.combos: seen` leaves a",
            "third of the pairs out of the training and held-out images) and, for grounding, two more",
            "distractors per image.",
            "",
            "| task | metric | SFT only: held-out | SFT+GRPO: held-out | SFT only: shifted | SFT+GRPO: shifted "
            "| SFT steps (a) / (b) |",
            "|---|---|---|---|---|---|---|",
        ]
        for n, c in compare.items():
            lines.append(
                f"| {n} | {RECIPES[n].metric} | {c['sft_held']:.3f} | {c['rft_held']:.3f} | "
                f"{c['sft_shift']:.3f} | {c['rft_shift']:.3f} | {c['sft_steps']} / {c['rft_sft_steps']} |"
            )
        lines += ["", "```bash"] + [c["command"] for c in compare.values()] + ["```", ""]
    if forget:
        lines += [
            "## Forgetting: shape classification trained after colour",
            "",
            "Task A (colour, the `cpu_color` run above) is trained first; task B (shape classification)",
            "then starts from A's final weights, by the `cpu_shape` recipe (SFT warm-up + GRPO) or by SFT",
            "only on the same labelled records for the same wall time. Colour accuracy is measured on A's",
            "held-out split with `mmrft eval`.",
            "",
            "| B trained by | colour acc. after A | colour acc. after B | change | shape acc. B start -> end |",
            "|---|---|---|---|---|",
        ]
        for k, f in forget.items():
            lines.append(
                f"| {k} | {f['a_before']:.3f} | {f['a_after']:.3f} | {f['a_after'] - f['a_before']:+.3f} | "
                f"{f['b_before']:.3f} -> {f['b_metric']:.3f} |"
            )
        lines += ["", "```bash"] + [f["command"] for f in forget.values()] + ["```", ""]
    return "\n".join(lines)


def write_doc(body: str) -> None:
    text = DOC.read_text() if DOC.is_file() else "# Results\n\n"
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=None, help="comma-separated recipes / comparisons (sft_color, forget)")
    ap.add_argument(
        "--report-only", action="store_true", help="only rewrite docs/results.md from finished runs"
    )
    args = ap.parse_args(argv)
    wanted = set(args.only.split(",")) if args.only else None
    todo = [n for n in RECIPES if wanted is None or n in wanted]
    runs, compare, forget = {}, {}, {}

    def finished(name: str) -> bool:
        return (RUNS / name / "summary.json").is_file() and (RUNS / name / "study_run.json").is_file()

    for n in RECIPES:
        rc = RECIPES[n]
        if args.report_only or n not in todo:
            if not finished(n):
                continue
            r = {**json.loads((RUNS / n / "study_run.json").read_text())}
            r["summary"] = json.loads((RUNS / n / "summary.json").read_text())
        else:
            r = train(n, rc.config)
        s = r["summary"]
        runs[n] = {**r, "before": s["eval_before"][rc.metric], "after": s["eval_after"][rc.metric]}
    for n in COMPARED:
        want = wanted is None or f"sft_{n}" in wanted
        if n not in runs or not (want and not args.report_only or finished(f"sft_{n}")):
            continue
        rc = RECIPES[n]
        a = sft_only(rc, runs[n])
        rft_shift = evaluate(RUNS / n / "final", _shifted(rc), rc.config, RUNS / n / "eval_shifted")
        sft_shift = evaluate(
            RUNS / f"sft_{n}" / "final", _shifted(rc), rc.config, RUNS / f"sft_{n}" / "eval_shifted"
        )
        compare[n] = {
            "sft_held": a["summary"]["eval_after"][rc.metric], "rft_held": runs[n]["after"],
            "sft_shift": sft_shift[rc.metric], "rft_shift": rft_shift[rc.metric],
            "sft_steps": a["summary"]["steps"]["sft"], "rft_sft_steps": runs[n]["summary"]["steps"]["sft"],
            "command": a["command"],
        }  # fmt: skip
    want_forget = wanted is None or "forget" in wanted
    if "color" in runs and (want_forget and not args.report_only or finished("forget_grpo")):
        a_model = f"model.path={(RUNS / 'color' / 'final').relative_to(ROOT)}"
        color_held = RUNS / "color" / "data" / "classification_heldout.jsonl"
        b = RECIPES["shape"]
        rft = train("forget_grpo", b.config, [a_model])
        sft_mean, grpo_total, sft_steps = _stage_times(RUNS / "forget_grpo")
        steps = sft_steps + round(grpo_total / sft_mean)
        variants = {"SFT warm-up + GRPO (the cpu_shape recipe)": ("forget_grpo", rft)}
        if want_forget and not args.report_only or finished("forget_sft"):
            sft = train("forget_sft", b.config, [a_model, f"sft.steps={steps}", "grpo.steps=0"])
            variants[f"SFT only ({steps} steps, the same wall time)"] = ("forget_sft", sft)
        for label, (name, r) in variants.items():
            m = evaluate(
                RUNS / name / "final", color_held, RECIPES["color"].config, RUNS / name / "eval_color"
            )
            forget[label] = {
                "a_before": runs["color"]["after"], "a_after": m[RECIPES["color"].metric],
                "b_before": r["summary"]["eval_before"][b.metric], "b_metric": r["summary"]["eval_after"][b.metric],
                "command": r["command"],
            }  # fmt: skip
    if runs:
        plot(runs, ROOT / "docs" / "results_curves.png")
    write_doc(report(runs, compare, forget))
    print(f"[study] wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
