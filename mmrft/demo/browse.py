"""The Rollouts and Curves tabs: what a run's logs say, as tables, pictures and plots.

Rollout pictures need the record a completion answered: the run's ``config.yaml`` names its training
data (the built-in synthetic task lives in ``RUN/data``), which is loaded with the run's own vision
settings, so answers are parsed by :func:`mmrft.evaluation.parse_prediction` and drawn in the ORIGINAL
image's frame, exactly as the Try tab draws them. Without those records the tables still show.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from data_pipelines.sample import Sample
from mmrft.demo.handlers import Answer, picture
from mmrft.demo.inputs import Media
from mmrft.demo.runs import Curves, PromptGroup, RunError, filter_groups, load_curves, load_rollouts, number
from mmrft.evaluation import parse_prediction

log = logging.getLogger("mmrft.demo")
MAX_PICTURES = 24
MAX_GROUPS = 32


class RunRecords:
    """The training records of a run, found through its ``config.yaml`` and loaded on demand by id."""

    def __init__(self, run_dir: Path):
        from data_pipelines.dataset import JsonlDataset
        from mmrft.config import load_config
        from mmrft.data import vision_spec

        self.note = ""
        self.dataset = None
        self.index: dict[str, int] = {}
        self._cache: dict[str, Sample | None] = {}
        try:
            cfg = load_config(run_dir / "config.yaml")
        except (OSError, ValueError) as e:  # ConfigError is a ValueError
            self.note = f"pictures need the run's config.yaml ({str(e).splitlines()[0]})"
            return
        path = (
            Path(cfg.data.train_file)
            if cfg.data.train_file
            else run_dir / "data" / f"{cfg.data.synthetic.task}_train.jsonl"
        )
        if not path.is_file():
            self.note = f"pictures need the run's training records, not found at {path}"
            return
        self.dataset = JsonlDataset(path, vision=vision_spec(cfg), on_bad_record="skip")
        self.index = {str(r["id"]): j for j, r in enumerate(self.dataset.records)}

    def sample(self, rid: str) -> Sample | None:
        """The record ``rid`` loaded as in training, or None when it is not there or does not load."""
        if self.dataset is None or rid not in self.index:
            return None
        if rid not in self._cache:
            from data_pipelines.records import RecordError

            try:
                self._cache[rid] = self.dataset.load(self.index[rid])
            except RecordError:
                self._cache[rid] = None
        return self._cache[rid]

    def media(self, rid: str, sample: Sample) -> Media:
        rec = self.dataset.records[self.index[rid]]
        if rec.get("video"):
            return Media(self.dataset.resolve(rec["video"]["path"]), "video", sample.video.original_size)
        return Media(self.dataset.resolve(rec["images"][0]), "image", sample.original_sizes[0])


def _cell(text: str, limit: int = 240) -> str:
    text = text if len(text) <= limit else text[:limit] + "..."
    return html.escape(text).replace("|", "&#124;").replace("\n", "<br>") or "<i>(empty)</i>"


def _num(v: float | None, signed: bool = False) -> str:
    return "-" if v is None else (f"{v:+.3f}" if signed else f"{v:.3f}")


def group_markdown(g: PromptGroup) -> str:
    """One prompt's completions as a markdown table: reward, advantage, each reward, the text."""
    names = sorted({k for c in g.completions for k in c.rewards})
    head = f"#### step {g.step} · `{g.id}`\n\n{_cell(g.prompt, 400)}\n\n"
    cols = ["#", "reward", "advantage", *names, "completion"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for c in g.completions:
        vals = [
            str(c.index + 1),
            _num(c.reward),
            _num(c.advantage, True),
            *(_num(c.rewards.get(n)) for n in names),
        ]
        lines.append("| " + " | ".join(vals + [_cell(c.text)]) + " |")
    return head + "\n".join(lines)


@dataclass
class RolloutsView:
    """What the Rollouts tab shows for one step: error ("" when fine), the steps logged, the step shown,
    a summary line, a markdown table per prompt, pictures with captions, and the same as JSON."""

    error: str = ""
    steps: list[int] = field(default_factory=list)
    step: int | None = None
    summary: str = ""
    markdown: str = ""
    pictures: list[tuple[Image.Image, str]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def rollouts_view(run_dir, step, min_reward, max_reward, records: RunRecords | None) -> RolloutsView:
    """The prompts of ``step`` (the latest when None or not logged) with completions in the reward range."""
    try:
        lo, hi = _bound(min_reward, "min reward"), _bound(max_reward, "max reward")
        logged = load_rollouts(run_dir)
    except (RunError, OSError) as e:
        return RolloutsView(error=str(e))
    steps = logged.steps
    asked = number(step)
    want = int(asked) if asked is not None and int(asked) in logged.groups else steps[-1]
    groups = filter_groups(logged.groups[want], lo, hi)
    view = RolloutsView(steps=steps, step=want)
    total = sum(len(g.completions) for g in logged.groups[want])
    shown = sum(len(g.completions) for g in groups)
    notes = [f"step {want}: {shown} of {total} completions in the reward range, {len(groups)} prompt(s)"]
    if logged.bad_lines:
        notes.append(f"{logged.bad_lines} unreadable line(s) skipped")
    if records is not None and records.note:
        notes.append(records.note)
    view.summary = " · ".join(notes)
    view.markdown = "\n\n".join(group_markdown(g) for g in groups[:MAX_GROUPS])
    for g in groups:
        if records is None or len(view.pictures) >= MAX_PICTURES:
            break
        pic = _group_picture(g, records)
        if pic is not None:
            best = max((c.reward for c in g.completions if c.reward is not None), default=None)
            view.pictures.append((pic, f"step {g.step} · {g.id} · best reward {_num(best)}"))
    view.data = {"steps": steps, "step": want, "groups": [
        {"id": g.id, "prompt": g.prompt, "solution": g.solution,
         "completions": [c.__dict__ for c in g.completions]} for g in groups]}  # fmt: skip
    return view


def _bound(value, name: str) -> float | None:
    """A reward bound from the page: empty is open, anything else must be a number."""
    if value is None or not str(value).strip():
        return None
    v = number(value)
    if v is None:
        raise RunError(f"{name}: expected a number (or nothing), got {str(value)[:40]!r}")
    return v


def _group_picture(g: PromptGroup, records: RunRecords) -> Image.Image | None:
    sample = records.sample(g.id)
    if sample is None:
        return None
    try:
        ans = Answer("logged", [c.text for c in g.completions])
        ans.predictions = [parse_prediction(sample, c.text) for c in g.completions]
        return picture(records.media(g.id, sample), sample, ans, [], True, [c.index for c in g.completions])
    except Exception:  # noqa: BLE001 - a picture that fails to draw must not hide the table
        log.exception("drawing the rollouts of %s failed", g.id)
        return None


EVAL_COUNTS = ("n", "completion_chars", "completion_len", "failed_rate", "truncated_frac")
PANELS = (("reward", "reward"), ("kl", "KL to the reference"), ("completion_len", "completion length (tokens)"),
          ("clip_frac", "clipped fraction"), ("eval", "held-out evaluation"), ("loss", "loss"))  # fmt: skip


@dataclass
class CurvesView:
    """The Curves tab: error, a matplotlib Figure (2 x 3 panels), a summary line, the latest values."""

    error: str = ""
    figure: Any = None
    markdown: str = ""
    latest: dict[str, float] = field(default_factory=dict)


def curves_figure(curves: Curves):
    """Reward (with eval_reward), KL, length, clip fraction, eval metrics and loss, by step."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6.5), dpi=80, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, title) in zip(axes, PANELS):
        if key == "eval":  # eval_reward and each task's metrics (eval/<task>/<metric>), not the counts
            keys = [(s, m) for s, m in curves.metrics("eval") if m == "eval_reward" or (
                m.count("/") == 2 and m.rsplit("/", 1)[1] not in EVAL_COUNTS)]  # fmt: skip
            lines = [(m.removeprefix("eval/"), curves.get(s, m)) for s, m in keys]
        elif key == "loss":
            lines = [(s, curves.get(s, m)) for s, m in curves.metrics("loss") if m == "loss"]
        else:
            lines = [("train", curves.get("grpo", key))]
            if key == "reward":
                lines.append(("eval_reward", curves.get("grpo", "eval_reward")))
        lines = [(name, pts) for name, pts in lines if pts]
        for name, pts in lines:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, "o-" if len(pts) < 30 else "-", markersize=3, label=name)
        if lines and (len(lines) > 1 or key in ("eval", "loss")):
            ax.legend(fontsize=7)
        if not lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    return fig


def curves_view(run_dir) -> CurvesView:
    try:
        curves = load_curves(run_dir)
    except (RunError, OSError) as e:
        return CurvesView(error=str(e))
    latest = curves.latest()
    grpo_steps = [s for s, _ in curves.get("grpo", "reward")]
    md = (
        f"{curves.rows} logged rows; GRPO steps 0-{grpo_steps[-1]}"
        if grpo_steps
        else f"{curves.rows} logged rows"
    )
    if curves.bad_lines:
        md += f"; {curves.bad_lines} unreadable line(s) skipped"
    return CurvesView("", curves_figure(curves), md, latest)
