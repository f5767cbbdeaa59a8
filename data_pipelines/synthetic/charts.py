"""Seeded synthetic charts for chart-to-code: bar, line and scatter plots of random data.

Each record's image is rendered by running exactly the code stored in ``solution["code"]`` (matplotlib,
Agg backend), so code and picture always agree. The code draws on the current figure and does not
save it; whoever runs it (the renderer here, a reward's sandbox) saves the figure.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.io import write_jsonl
from data_pipelines.prompts import PROMPT_STYLES, user_prompt
from data_pipelines.synthetic.shapes import pick, record_rng

CHART_KINDS = ("bar", "line", "scatter")
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_TOPICS = (("Sales", "Region", ("North", "South", "East", "West", "Central")),
           ("Visitors", "Month", ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul")),
           ("Score", "Team", ("Red", "Blue", "Green", "Gold", "Gray")),
           ("Energy", "Source", ("Solar", "Wind", "Hydro", "Coal", "Gas", "Nuclear")))  # fmt: skip


def chart_code(kind: str, rng: np.random.Generator, figsize: tuple[float, float] = (4.0, 3.0)) -> str:
    """Matplotlib code for one random chart of ``kind`` (a deterministic function of ``rng``)."""
    metric, axis, names = _TOPICS[int(rng.integers(len(_TOPICS)))]
    head = (
        f"import matplotlib.pyplot as plt\n\nfig, ax = plt.subplots(figsize=({figsize[0]}, {figsize[1]}))\n"
    )
    if kind == "bar":
        k = int(rng.integers(3, len(names) + 1))
        labels = list(names[:k])
        values = [int(v) for v in rng.integers(1, 50, size=k)]
        color = pick(rng, PALETTE)
        body = f"labels = {labels!r}\nvalues = {values!r}\nax.bar(labels, values, color={color!r})\n"
    elif kind == "line":
        n_series = int(rng.integers(1, 3))
        x = list(range(1, int(rng.integers(5, 9)) + 1))
        colors = [PALETTE[int(j)] for j in rng.choice(len(PALETTE), size=n_series, replace=False)]
        body = f"x = {x!r}\n"
        for s in range(n_series):
            y = [int(v) for v in np.cumsum(rng.integers(-5, 10, size=len(x))) + 20]
            body += f"ax.plot(x, {y!r}, color={colors[s]!r}, marker='o', label='Series {chr(65 + s)}')\n"
        body += "ax.legend()\n"
        axis = "Week"
    elif kind == "scatter":
        n = int(rng.integers(8, 20))
        xs = [round(float(v), 1) for v in rng.uniform(0, 10, size=n)]
        ys = [round(float(v), 1) for v in rng.uniform(0, 10, size=n)]
        color = pick(rng, PALETTE)
        body = f"x = {xs!r}\ny = {ys!r}\nax.scatter(x, y, color={color!r})\n"
        axis = "Time"
    else:
        raise ValueError(f"chart kind must be one of {CHART_KINDS}, got {kind!r}")
    tail = (
        f"ax.set_title({f'{metric} by {axis.lower()}'!r})\nax.set_xlabel({axis!r})\nax.set_ylabel({metric!r})\n"
        "plt.tight_layout()\n"
    )
    return head + body + tail


def render_code(code: str, path: str | os.PathLike, dpi: int = 64) -> None:
    """Run chart code (trusted: generated here) on the Agg backend and save the figure as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.close("all")
    try:
        exec(compile(code, "<chart>", "exec"), {"__name__": "__chart__"})  # noqa: S102 - our own code
        plt.gcf().savefig(path, dpi=dpi, metadata={"Software": None})
    finally:
        plt.close("all")


def write_chart_dataset(
    out_dir: str | os.PathLike,
    n: int = 100,
    seed: int = 0,
    split: str = "train",
    prompt_style: str = "answer_only",
    kinds: Sequence[str] = CHART_KINDS,
    dpi: int = 64,
) -> Path:
    """Write ``n`` chart-to-code records; returns ``out_dir/chart_to_code_{split}.jsonl``.

    Images (``out_dir/images/chart_to_code_{split}/{i:05d}.png``) are 4x3 inches at ``dpi``
    (256x192 px at the default 64).
    """
    from data_pipelines.converters.chart import chart_prompt

    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    bad = [k for k in kinds if k not in CHART_KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown chart kinds {bad}; known: {CHART_KINDS}")
    out_dir = Path(out_dir)
    name = f"chart_to_code_{split}"
    (out_dir / "images" / name).mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for i in range(n):
        rng = record_rng(seed, "chart_to_code", split, i)
        kind = pick(rng, list(kinds))
        code = chart_code(kind, rng)
        rel = f"images/{name}/{i:05d}.png"
        render_code(code, out_dir / rel, dpi=dpi)
        records.append(
            {
                "id": f"chart-{split}-{seed}-{i:05d}",
                "task": "chart_to_code",
                "images": [rel],
                "prompt": user_prompt(chart_prompt(prompt_style)),
                "solution": {"code": code, "image": rel},
                "meta": {"source": "synthetic-charts", "split": split, "kind": kind},
            }
        )
    path = out_dir / f"{name}.jsonl"
    write_jsonl(path, records)
    return path
