"""The ``mmrft`` command. The only place that reads argv.

Each sub-command lives in its own module of this package with ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler ``(args) -> int``. Modules keep heavy imports (torch,
transformers) inside their handlers so that ``mmrft --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command modules, in the order `mmrft --help` lists them.
COMMAND_MODULES = ["train", "eval", "make_tiny", "rewards", "data", "sandbox", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmrft", description="Reinforcement fine-tuning of vision-language models."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mmrft.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mmrft.cli.{name}":
                continue  # sub-command not shipped in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
