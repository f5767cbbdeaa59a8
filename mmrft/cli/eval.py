"""`mmrft eval --config FILE [--model DIR] [--data FILE] [key=value ...]`"""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "eval", help="Score a checkpoint's greedy answers on a JSONL with the config's rewards."
    )
    p.add_argument("--config", default=None, help="YAML recipe whose rewards and eval settings are used.")
    p.add_argument("--model", default=None, help="Checkpoint directory (overrides model.path).")
    p.add_argument("--data", default=None, help="Records to evaluate on (overrides data.eval_file).")
    p.add_argument("overrides", nargs="*", help="Dotted overrides, e.g. eval.max_samples=100")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmrft.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.model:
        overrides += [f"model.path={args.model}", "model.tiny=null"]
    if args.data:
        overrides.append(f"data.eval_file={args.data}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    from mmrft.evaluation import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(cfg)))
    return 0
