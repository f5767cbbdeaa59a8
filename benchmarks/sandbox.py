"""Sandbox throughput: renders per second with 2 warm workers, and the cost of isolation.

    python benchmarks/sandbox.py [--n 40] [--repeats 2]

Renders a synthetic chart set (``data_pipelines.synthetic.charts.chart_code``: bar/line/scatter) four ways:

- ``bare subprocess``: one fresh ``python -c`` per chart (import matplotlib, exec, save PNG), two at a time:
  what the papers' executors do, with no limits at all;
- ``sandbox minimal``: the warm pool with only the floor (fork per render, rlimits, scrubbed env, timeout);
- ``sandbox auto``: the warm pool with every layer this machine allows (namespaces, uid, Landlock, seccomp);
- ``chart_render``: the reward end to end (candidate render + element and SSIM scoring; references cached).

``empty ms`` is the median wall time of a run of ``x = 1`` (one at a time): the sandbox's own cost per run
(fork, isolation, teardown), without matplotlib work.

Prints a table and writes ``benchmarks/results/sandbox.json``. The machine's load average is recorded with
the numbers: on a shared 2-core machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.chart.reward import chart_render, shutdown_pools  # noqa: E402
from rewards.sandbox import SandboxConfig, SandboxPool  # noqa: E402

BARE = (
    "import sys, matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
    "exec(compile(sys.stdin.read(), '<chart>', 'exec'), {'__name__': '__main__'})\n"
    "fig = plt.gcf(); fig.set_size_inches(6.4, 4.8); fig.savefig(sys.argv[1], dpi=50)\n"
)


def chart_set(n: int) -> list[str]:
    """``n`` synthetic chart programs (the data issue's generator; a small local one if it is absent)."""
    try:
        from data_pipelines.synthetic.charts import CHART_KINDS, chart_code

        return [chart_code(CHART_KINDS[i % 3], np.random.default_rng(i)) for i in range(n)]
    except ImportError:
        out = []
        for i in range(n):
            rng = np.random.default_rng(i)
            ys = [int(v) for v in rng.integers(1, 30, 5)]
            call = ["ax.bar(list('abcde'), ys)", "ax.plot(ys, marker='o')", "ax.scatter(range(5), ys)"][i % 3]
            out.append(f"import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nys = {ys}\n{call}\n"
                       f"ax.set_title('chart {i}')\n")  # fmt: skip
        return out


def bare_subprocess(codes: list[str], workers: int, tmp: Path) -> float:
    """Seconds to render ``codes`` with one fresh interpreter each, ``workers`` at a time."""

    def one(i: int) -> None:
        subprocess.run([sys.executable, "-c", BARE, str(tmp / f"bare{i}.png")], input=codes[i].encode(),
                       check=True, capture_output=True, env={**os.environ, "MPLBACKEND": "Agg"})  # fmt: skip

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, range(len(codes))))
    return time.perf_counter() - t0


def pool_run(codes: list[str], cfg: SandboxConfig) -> dict:
    t0 = time.perf_counter()
    pool = SandboxPool(cfg)
    layers, _ = pool.isolation()
    pool.map(codes[:2])  # both workers ready
    start_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    results = pool.map(codes)
    total = time.perf_counter() - t0
    # per-run cost of the sandbox itself: fork, isolation, an empty program, teardown (one at a time)
    empty = [pool.run("x = 1").wall_s for _ in range(20)]
    pool.close()
    assert all(r.ok for r in results), [r.detail for r in results if not r.ok][:3]
    return {"seconds": total, "start_s": start_s, "render_ms": 1000 * float(np.mean([r.wall_s for r in results])),
            "empty_run_ms": 1000 * float(np.median(empty)), "layers": layers}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="charts per measurement")
    ap.add_argument("--repeats", type=int, default=2, help="repeats; the best is reported")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sandbox.json"))
    args = ap.parse_args()
    codes = chart_set(args.n)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"mmrft-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    rows = {}
    best = min(bare_subprocess(codes, 2, tmp) for _ in range(args.repeats))
    shutil.rmtree(tmp, ignore_errors=True)
    rows["bare subprocess"] = {"seconds": best, "render_ms": 1000 * best * 2 / len(codes), "layers": ["none"]}
    for name, iso in (("sandbox minimal", "minimal"), ("sandbox auto", "auto")):
        cfg = SandboxConfig(workers=2, timeout_s=10, isolation=iso)
        runs = [pool_run(codes, cfg) for _ in range(args.repeats)]
        rows[name] = min(runs, key=lambda r: r["seconds"])
    params = dict(workers=2, timeout_s=10)
    sols = [{"code": c} for c in codes]
    chart_render(codes[:2], solution=sols[:2], **params)  # start the pool
    chart_render(codes, solution=sols, **params)  # render and cache the references
    t0 = time.perf_counter()
    scores = chart_render(codes, solution=sols, **params)
    rows["chart_render"] = {"seconds": time.perf_counter() - t0, "render_ms": 1000 * scores.metrics["render_s_mean"],
                            "layers": rows["sandbox auto"]["layers"], "mean_score": float(np.mean(scores))}  # fmt: skip
    shutdown_pools()
    for row in rows.values():
        row["renders_per_s"] = len(codes) / row["seconds"]
    bare = rows["bare subprocess"]["seconds"] / len(codes)
    auto = rows["sandbox auto"]["seconds"] / len(codes)
    minimal = rows["sandbox minimal"]["seconds"] / len(codes)
    summary = {
        "charts": len(codes),
        "workers": 2,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "rows": rows,
        "sandbox_vs_bare_subprocess_ms_per_render": 1000 * (auto - bare),
        "isolation_layers_ms_per_render": 1000 * (auto - minimal),
        "empty_run_ms": {k: rows[k]["empty_run_ms"] for k in ("sandbox minimal", "sandbox auto")},
    }
    print(
        f"{len(codes)} synthetic charts, 2 workers, {os.cpu_count()} CPUs, load {summary['load_average_1m']:.1f}"
    )
    print(f"{'method':18s} {'renders/s':>10s} {'ms/render':>10s} {'empty ms':>9s} {'start s':>8s}  layers")
    for name, row in rows.items():
        start = f"{row['start_s']:.2f}" if "start_s" in row else "-"
        empty = f"{row['empty_run_ms']:.1f}" if "empty_run_ms" in row else "-"
        print(f"{name:18s} {row['renders_per_s']:10.1f} {row['render_ms']:10.1f} {empty:>9s} {start:>8s}  "
              f"{', '.join(row['layers'])}")  # fmt: skip
    print(f"sandbox (auto) minus bare subprocess: {summary['sandbox_vs_bare_subprocess_ms_per_render']:+.1f} ms per "
          f"render (wall, 2 in parallel); isolation layers over the floor: "
          f"{summary['isolation_layers_ms_per_render']:+.1f} ms")  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
