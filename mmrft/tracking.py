"""Run outputs: metrics.jsonl, TensorBoard events, samples.jsonl, a progress bar and the reward plot.

Only rank 0 writes. Every metric name is documented in ``METRIC_DOCS`` (shown in the README) so that a
flat reward or a zero loss can be read, not guessed. A non-finite metric is written to metrics.jsonl as
the string ``"nan"``, ``"inf"`` or ``"-inf"`` (JSON has no such numbers; ``null`` would read as missing
data); ``read_metrics`` turns them back into floats. TensorBoard gets the float itself.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

METRIC_DOCS = {
    "reward": "mean weighted reward of the step's completions (what GRPO maximises)",
    "reward_std": "mean within-group std of the reward: 0 means no learning signal this step",
    "reward/<name>": "mean of one reward over completions it applies to",
    "loss": "policy loss; near 0 is normal in GRPO (advantages are zero-mean per group)",
    "kl": "mean k3 KL to the reference (only when grpo.beta > 0)",
    "clip_frac": "fraction of tokens whose ratio was clipped (0 when num_iterations is 1)",
    "completion_len": "mean completion length in tokens",
    "truncated_frac": "fraction of completions that hit max_completion_length without a stop token",
    "zero_std_frac": "fraction of groups whose rewards were all equal",
    "grad_norm": "gradient norm before clipping",
    "lr": "learning rate",
    "step_time": "seconds per optimiser step",
    "skipped_steps": "updates skipped so far for a non-finite loss or gradient norm (the guard)",
}
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class Tracker:
    """Writes metrics and samples for rank 0; a no-op elsewhere."""

    def __init__(self, run_dir: Path, enabled: bool, tensorboard: bool, progress_bar: bool, total: int):
        self.enabled = enabled
        self.run_dir = run_dir
        self._tb = None
        self._bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(run_dir / "metrics.jsonl", "a")
        self._samples = open(run_dir / "samples.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"))
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="train", dynamic_ncols=True)
        self._t0 = time.time()

    def log(self, step: int, stage: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "stage": stage, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(f"{stage}/{k}", v, step)
        if self._bar is not None:
            show = {
                k: metrics[k] for k in ("reward", "loss", "kl", "step_time", "eval_reward") if k in metrics
            }
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in show.items()}, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for r in rows:
            self._samples.write(json.dumps({"step": step, **r}, default=str) + "\n")
        self._samples.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self._metrics.close()
        self._samples.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def _clean(v: Any) -> Any:
    """A metric value as JSON: non-finite floats become "nan", "inf" or "-inf"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def metric_value(v: Any) -> Any:
    """A value read from metrics.jsonl: "nan" / "inf" / "-inf" back to floats, anything else as is."""
    return NON_FINITE.get(v, v) if isinstance(v, str) else v


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl, with non-finite values as floats."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [{k: metric_value(v) if k != "stage" else v for k, v in r.items()} for r in rows]


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def plot_rewards(run_dir: Path, out: Path) -> Path | None:
    """reward_curve.png from metrics.jsonl: GRPO training reward (smoothed) and held-out evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.jsonl")
    train = [(r["step"], r["reward"]) for r in rows if r.get("stage") == "grpo" and _finite(r.get("reward"))]
    evals = [(r["step"], r["eval_reward"]) for r in rows if _finite(r.get("eval_reward"))]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, alpha=0.3, color="tab:blue", label="train reward (per step)")
        k = max(1, len(ys) // 20)
        smooth = [
            sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1]) for i in range(len(ys))
        ]
        ax.plot(xs, smooth, color="tab:blue", label=f"train reward (mean of {k})")
    if evals:
        xs, ys = zip(*evals)
        ax.plot(xs, ys, "o-", color="tab:red", label="held-out reward (greedy)")
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out
