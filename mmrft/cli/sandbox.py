"""``mmrft sandbox selftest | render FILE``: what the chart sandbox contains on this machine, and a render."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``sandbox`` sub-command and its ``selftest`` / ``render`` actions."""
    parser = subparsers.add_parser("sandbox", help="check the code sandbox on this machine; render a chart")
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION")

    p_self = sub.add_parser(
        "selftest",
        help="run the hostile battery here and print what was contained; non-zero exit when a case that a "
        "present layer should contain escaped",
    )
    _limit_args(p_self, timeout=2.0, memory=512)
    p_self.add_argument(
        "--all",
        action="store_true",
        help="also run cases that could harm this machine where no layer covers them",
    )
    p_self.add_argument("--cases", default="", help="comma-separated case names to run (default: all)")
    p_self.add_argument("--json", action="store_true", help="print the report as JSON")
    p_self.set_defaults(func=_selftest)

    p_render = sub.add_parser("render", help="render a plotting script in the sandbox to a PNG")
    p_render.add_argument("file", help="python file with matplotlib code")
    p_render.add_argument("--out", "-o", default="render.png", help="PNG to write (default render.png)")
    _limit_args(p_render, timeout=10.0, memory=1024)
    p_render.set_defaults(func=_render)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _limit_args(p: argparse.ArgumentParser, timeout: float, memory: int) -> None:
    p.add_argument(
        "--timeout", type=float, default=timeout, help=f"wall seconds per render (default {timeout})"
    )
    p.add_argument("--memory-mb", type=int, default=memory, help=f"address-space limit (default {memory})")
    p.add_argument(
        "--isolation",
        choices=["auto", "strict", "minimal"],
        default="auto",
        help="auto: strongest available; strict: require namespaces and seccomp; minimal: the floor only",
    )
    p.add_argument("--no-namespaces", action="store_true", help="simulate a platform without namespaces")


def _config(args: argparse.Namespace, workers: int):
    from rewards.sandbox import SandboxConfig

    return SandboxConfig(
        timeout_s=args.timeout,
        cpu_s=max(1, int(args.timeout + 0.999)),
        memory_mb=args.memory_mb,
        workers=workers,
        isolation=args.isolation,
        namespaces=not args.no_namespaces,
    )


def _selftest(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import platform
    import secrets

    from rewards.sandbox import SandboxPool
    from rewards.sandbox.battery import CASES, SECRET_ENV, layer_tags, run_battery

    wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(wanted) - {c.name for c in CASES})
    if unknown:
        print(f"sandbox selftest: unknown case(s) {unknown}; known: {', '.join(c.name for c in CASES)}",
              file=sys.stderr)  # fmt: skip
        return 2
    cases = tuple(c for c in CASES if not wanted or c.name in wanted)
    had_secret = SECRET_ENV in os.environ
    os.environ.setdefault(SECRET_ENV, "tok" + secrets.token_hex(12))  # before the pool: it must not leak
    try:
        with SandboxPool(_config(args, workers=2)) as pool:
            layers, notes = pool.isolation()
            reports = run_battery(pool, cases, run_all=args.all)
    except Exception as e:  # noqa: BLE001 - a CLI reports the one-line reason
        print(f"sandbox selftest: the sandbox could not start: {e}", file=sys.stderr)
        return 1
    finally:
        if not had_secret:
            os.environ.pop(SECRET_ENV, None)
    tags = layer_tags(layers)
    needs = {c.name: c.needs for c in CASES}
    covered = {r.name: not needs[r.name] or bool(tags & set(needs[r.name])) for r in reports}
    failed = [r for r in reports if r.ran and covered[r.name] and not r.contained]
    if args.json:
        print(json.dumps({"platform": platform.platform(), "euid": os.geteuid(), "layers": layers, "notes": notes,
                          "cases": [dataclasses.asdict(r) | {"covered": covered[r.name]} for r in reports]},
                         indent=2))  # fmt: skip
        return 1 if failed else 0
    print(f"platform: {platform.platform()}  euid: {os.geteuid()}")
    print(
        "floor: separate process per render, rlimits (CPU, memory, files, file size, processes), scrubbed env,"
    )
    print(
        "       scratch dir as cwd, process-group kill at the wall timeout, capped output, Agg + plt.show no-op"
    )
    print("layers: " + (", ".join(layers) if layers else "none beyond the floor"))
    for note in notes:
        print(f"  degraded: {note}")
    print(f"\n{'case':17s} {'outcome':13s} {'wall s':>6s}  result")
    for r in reports:
        if not r.ran:
            verdict = f"skipped ({r.skipped}; not containable here)"
        elif r.contained:
            verdict = "contained"
        else:
            verdict = (
                "ESCAPED: " if covered[r.name] else "not contained (no layer covers it here): "
            ) + "; ".join(r.problems)
        outcome = (r.reason or "rendered") if r.ran else "-"
        print(f"{r.name:17s} {outcome:13s} {r.wall_s:6.2f}  {verdict}")
    n_ok = sum(r.contained for r in reports)
    print(f"\n{n_ok}/{len(reports)} cases contained; {len(failed)} escaped a layer that should contain them")
    return 1 if failed else 0


def _render(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rewards.sandbox import SandboxPool

    try:
        code = Path(args.file).read_text()
    except OSError as e:
        print(f"sandbox render: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    with SandboxPool(_config(args, workers=1)) as pool:
        r = pool.run(code)
    if r.output:
        sys.stdout.write(r.output if r.output.endswith("\n") else r.output + "\n")
    if not r.ok:
        print(f"sandbox render: {r.reason}: {r.detail}", file=sys.stderr)
        return 1
    Path(args.out).write_bytes(r.png)
    print(f"wrote {args.out} ({len(r.png)} bytes, {r.wall_s:.2f}s); elements: {json.dumps(r.elements)[:300]}")
    return 0
