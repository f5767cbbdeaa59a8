"""`mmrft make-tiny DIR [--seed S] [--preset tiny|small]`"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser(
        "make-tiny", help="Build a tiny Qwen2.5-VL checkpoint + processor offline, in seconds."
    )
    p.add_argument("dir", help="Output directory.")
    p.add_argument("--seed", type=int, default=0, help="Seed of weights and tokenizer.")
    p.add_argument("--preset", default="tiny", choices=["tiny", "small"], help="Model size.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrft.models.tiny import build_tiny

    out = build_tiny(args.dir, seed=args.seed, preset=args.preset)
    print(out)
    return 0
