"""The ``mmrft`` command. The only place that reads argv.

Each sub-command lives in its own module of this package with ``register(subparsers)``, which adds
its parser and sets ``func`` to a handler ``(args) -> int``. Modules keep heavy imports (torch,
transformers) inside their handlers so that ``mmrft --help`` stays fast.

Errors: a handler raises; ``main`` prints a user error (``mmrft.errors.USER_ERRORS``: config, record,
reward, watchdog and guard errors, a missing or existing file) as ONE line on stderr and returns 1;
``--debug`` (before or right after the command) shows the full traceback instead. Any other exception is
a bug and keeps its traceback. Ctrl-C prints "interrupted" and returns 130.
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
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"mmrft.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mmrft.cli.{name}":
                continue  # sub-command not shipped in this build
            raise
        module.register(sub)
    for command in sub.choices.values():  # `mmrft train --debug ...` too (torchrun -m mmrft.train passes it)
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback of an error",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.debug:
        return int(args.func(args) or 0)
    from mmrft.errors import USER_ERRORS, one_line

    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as e:
        print(one_line(e), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
