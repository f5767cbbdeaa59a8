"""``mmrft rewards list | check SPEC | new NAME``: browse, vet and scaffold reward functions."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``rewards`` sub-command and its ``list`` / ``check`` / ``new`` actions."""
    parser = subparsers.add_parser("rewards", help="list, check and scaffold reward functions")
    sub = parser.add_subparsers(dest="rewards_command", metavar="ACTION")

    p_list = sub.add_parser("list", help="print every available reward with its one-line doc")
    p_list.set_defaults(func=_list)

    p_check = sub.add_parser(
        "check", help="run a reward against hostile and edge-case completions; non-zero exit on a failure"
    )
    p_check.add_argument("spec", help="registry name, package.module:function or path/to/file.py:function")
    p_check.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="reward parameter (VALUE parsed as JSON when it can be, else a string), checked against the "
        "parameters the reward declares; repeatable",
    )
    p_check.add_argument(
        "--range",
        nargs=2,
        type=float,
        default=(0.0, 1.0),
        metavar=("LO", "HI"),
        help="the range every score must lie in (default 0 1)",
    )
    p_check.add_argument(
        "--min-throughput",
        type=float,
        default=None,
        help="fail below this many completions per second (default: the reward's check_min_throughput, else 5)",
    )
    p_check.add_argument(
        "--boxes", type=int, default=10_000, help="boxes in the many-boxes case (default 10000)"
    )
    p_check.add_argument("--json", action="store_true", help="print the report as JSON")
    p_check.set_defaults(func=_check)

    p_new = sub.add_parser("new", help="write a documented reward plugin template and its test")
    p_new.add_argument("name", help="the reward's name (a lowercase Python identifier)")
    p_new.add_argument("--dir", default=".", help="folder to write NAME.py and test_NAME.py in (default .)")
    p_new.add_argument("--force", action="store_true", help="overwrite existing files")
    p_new.set_defaults(func=_new)

    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _list(args: argparse.Namespace) -> int:
    import rewards

    regs = rewards.available()
    width = max((len(n) for n in regs), default=0)
    for name, fn in regs.items():
        doc = (fn.__doc__ or "").strip().splitlines()
        print(f"{name:<{width}}  {doc[0] if doc else '(no doc)'}")
    return 0


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--param {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def _check(args: argparse.Namespace) -> int:
    import rewards
    from rewards.check import run_checks
    from rewards.params import ParamError

    try:
        fn = rewards.get(args.spec)
        params = rewards.validate_params(fn, _parse_params(args.param), where="")
    except ParamError as e:  # the same check as a config's rewards[i].params at load
        print(f"error: --param {e}", file=sys.stderr)
        return 2
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = run_checks(fn, args.spec, params, tuple(args.range), args.min_throughput, args.boxes)
    if args.json:
        print(
            json.dumps(
                {
                    "spec": report.spec,
                    "ok": report.ok,
                    "throughput": report.throughput,
                    "min_score": report.min_score,
                    "max_score": report.max_score,
                    "n_none": report.n_none,
                    "results": [{"name": r.name, "ok": r.ok, "detail": r.detail} for r in report.results],
                },
                indent=2,
            )
        )
    else:
        print(report.format())
    return 0 if report.ok else 1


def _new(args: argparse.Namespace) -> int:
    from rewards.scaffold import write_plugin

    try:
        paths = write_plugin(args.name, args.dir, overwrite=args.force)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(f"wrote {p}")
    print(f"next: edit {paths[0]}, then `pytest {paths[1]}` and `mmrft rewards check {paths[0]}:{args.name}`")
    return 0
