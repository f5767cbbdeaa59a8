"""`mmrft train [--config FILE] [--output-dir DIR] [--resume | --resume-force] [key=value ...]`"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml"


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="Train (SFT and/or GRPO) from a YAML recipe; the CPU quickstart by default."
    )
    p.add_argument(
        "--config", default=None, help=f"YAML recipe (default: {DEFAULT_CONFIG.name}, the CPU quickstart)"
    )
    p.add_argument("--output-dir", default=None, help="Run directory (overrides train.output_dir).")
    p.add_argument(
        "--resume",
        action="store_true",
        help="Continue from the run directory's newest checkpoint that verifies (docs/resuming.md).",
    )
    p.add_argument(
        "--resume-force",
        action="store_true",
        help="Resume even though config fields that change training differ from the checkpoint's "
        "(implies --resume; the changes are recorded in config.resume-<step>.yaml).",
    )
    p.add_argument(
        "--help-config", action="store_true", help="List every config field with its default and help."
    )
    p.add_argument("overrides", nargs="*", help="Dotted overrides, e.g. grpo.beta=0.04 rollout.group_size=4")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrft.config import ConfigError, describe, load_config

    if args.help_config:
        print("\n".join(describe()))
        return 0
    path = args.config
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            raise ConfigError("no --config given and the built-in configs/quickstart.yaml is not installed")
        path = DEFAULT_CONFIG
    overrides = list(args.overrides)
    if args.output_dir:
        overrides.append(f"train.output_dir={args.output_dir}")
    cfg = load_config(path, overrides)  # a ConfigError is printed as one line by mmrft.cli.main
    from mmrft.trainer import train

    summary = train(cfg, resume=args.resume, resume_force=args.resume_force)
    if "eval_after" in summary:
        b, a = summary["eval_before"].get("reward"), summary["eval_after"].get("reward")
        print(
            json.dumps(
                {
                    "eval_before": b,
                    "eval_after": a,
                    "wall_seconds": round(summary["wall_seconds"], 1),
                    "run_dir": cfg.train.output_dir,
                }
            )
        )
    return 0
