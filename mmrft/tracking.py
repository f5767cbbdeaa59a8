"""Run outputs: metrics.jsonl, TensorBoard events, samples.jsonl, a progress bar and the reward plot.

Only rank 0 writes. The JSONL logs are append-only; a resumed run first cuts them back to the rows its
checkpoint recorded, and every reader skips a torn last line. Every metric name is documented in
``METRIC_DOCS`` (shown in the README) so that a flat reward or a zero loss can be read, not guessed. A
non-finite metric is written to metrics.jsonl as the string ``"nan"``, ``"inf"`` or ``"-inf"`` (JSON has
no such numbers; ``null`` would read as missing data); ``read_metrics`` turns them back into floats.
TensorBoard gets the float itself.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

from mmrft.checkpoint.files import write_bytes_atomic

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
    "guidance_frac": "share of the step's groups that got the reference answer (grpo.guidance, docs/rft.md)",
    "acceptance_rate": "rejection round: share of the sampled completions accepted (docs/rft.md)",
}
NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class LogPosition(NamedTuple):
    """Rows written so far to metrics.jsonl and samples.jsonl (kept in every checkpoint)."""

    metrics: int = 0
    samples: int = 0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a JSONL log; a torn or unreadable line (a kill mid-write) is left out."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def cut_jsonl(path: Path, rows: int) -> int:
    """Keep the first ``rows`` complete lines of ``path`` (atomically); return how many it had (at most
    ``rows``). What a killed run wrote after its last checkpoint is cut, a torn last line included."""
    data = path.read_bytes() if path.is_file() else b""
    lines = data.split(b"\n")[:-1]  # complete lines only: the part after the last newline is torn
    keep = lines[:rows]
    out = b"".join(line + b"\n" for line in keep)
    if out != data:
        write_bytes_atomic(path, out)
    return len(keep)


class Tracker:
    """Writes metrics and samples for rank 0; a no-op elsewhere.

    ``resume``: the global step the run (re)starts at and the log position its checkpoint recorded
    (LogPosition() for a run starting at step 0): rows past it are cut from both JSONL logs, and
    TensorBoard purges events from that step on (``purge_step``) and gets back the kept rows of that
    step, so a resumed run's logs equal an uninterrupted run's. TensorBoard's step is the global step:
    SFT step s is s, GRPO step g is ``sft_steps + g``.
    """

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        tensorboard: bool,
        progress_bar: bool,
        total: int,
        *,
        sft_steps: int = 0,
        resume: tuple[int, LogPosition] = (0, LogPosition()),
    ):
        self.enabled = enabled
        self.run_dir = run_dir
        self.sft_steps = sft_steps
        self.notes: list[str] = []  # what resuming the logs found (rows missing)
        self._tb = None
        self._bar = None
        self._last: dict[str, tuple[int, Any]] = {}
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        start, pos = resume
        kept = {}
        for name, want in (("metrics", pos.metrics), ("samples", pos.samples)):
            kept[name] = cut_jsonl(run_dir / f"{name}.jsonl", want)
            if kept[name] < want:
                self.notes.append(f"{name}.jsonl has {kept[name]} of the {want} rows the checkpoint recorded")
        self._rows = LogPosition(kept["metrics"], kept["samples"])
        self._metrics = open(run_dir / "metrics.jsonl", "a")
        self._samples = open(run_dir / "samples.jsonl", "a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start)
            for row in read_jsonl(
                run_dir / "metrics.jsonl"
            ):  # rows of the resumed step logged before it saved
                if self.tb_step(row.get("step"), row.get("stage")) >= start:
                    self._tb_add(row["step"], row["stage"], row)
        if progress_bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc="train", dynamic_ncols=True)
        self._t0 = time.time()

    def tb_step(self, step: Any, stage: Any) -> int:
        if not isinstance(step, int):
            return -1
        return step + self.sft_steps if stage == "grpo" else step

    def _tb_add(self, step: int, stage: str, metrics: dict[str, Any]) -> None:
        assert self._tb is not None
        for k, v in metrics.items():
            v = metric_value(v)  # rows read back from metrics.jsonl hold "nan" / "inf" as strings
            if k not in ("step", "stage") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"{stage}/{k}", v, self.tb_step(step, stage))

    def log(self, step: int, stage: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, "stage": stage, **{k: _clean(v) for k, v in metrics.items()}}
        self._metrics.write(json.dumps(row) + "\n")
        self._metrics.flush()
        self._rows = self._rows._replace(metrics=self._rows.metrics + 1)
        for k, v in metrics.items():
            self._last[k] = (self.tb_step(step, stage), v)
        if self._tb is not None:
            self._tb_add(step, stage, metrics)
        if self._bar is not None:
            show = {
                k: metrics[k] for k in ("reward", "loss", "kl", "step_time", "eval_reward") if k in metrics
            }
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in show.items()}, refresh=False)

    def value_at(self, name: str, global_step: int) -> float | None:
        """The value of metric ``name`` if it was logged at ``global_step`` by this process, else None."""
        at, value = self._last.get(name, (None, None))
        return float(value) if at == global_step and isinstance(value, (int, float)) else None

    def position(self) -> LogPosition:
        """Rows written so far, made durable (called when a checkpoint records them)."""
        if not self.enabled:
            return LogPosition()
        for f in (self._metrics, self._samples):
            f.flush()
            os.fsync(f.fileno())
        if self._tb is not None:
            self._tb.flush()
        return self._rows

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        for r in rows:
            self._samples.write(json.dumps({"step": step, **r}, default=str) + "\n")
        self._samples.flush()
        self._rows = self._rows._replace(samples=self._rows.samples + len(rows))

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
    """The complete rows of a metrics.jsonl (a torn last line left out), non-finite values as floats."""
    return [{k: v if k == "stage" else metric_value(v) for k, v in r.items()} for r in read_jsonl(Path(path))]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def plot_rewards(run_dir: Path, out: Path) -> Path | None:
    """reward_curve.png from metrics.jsonl: GRPO training reward (smoothed) and held-out evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run_dir / "metrics.jsonl")

    def points(key: str, stage: str | None) -> list[tuple[float, float]]:
        return [
            (r["step"], r[key])
            for r in rows
            if (stage is None or r.get("stage") == stage)
            and _is_number(r.get("step"))
            and _is_number(r.get(key))
        ]

    train, evals = points("reward", "grpo"), points("eval_reward", None)
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(out, buf.getvalue())
    return out
