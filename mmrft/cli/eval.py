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
    from mmrft.watchdog import Watchdog

    overrides = list(args.overrides)
    if args.model:
        overrides += [f"model.path={args.model}", "model.tiny=null"]
    if args.data:
        overrides.append(f"data.eval_file={args.data}")
    cfg = load_config(args.config, overrides)  # errors are printed as one line by mmrft.cli.main
    if not cfg.data.eval_file:
        raise ConfigError("data.eval_file: give the JSONL to evaluate on (--data FILE)")
    if not cfg.model.path:
        raise ConfigError("model.path: give the checkpoint directory to evaluate (--model DIR)")
    from mmrft.evaluation import evaluate_checkpoint

    with Watchdog(None, grace_s=cfg.watchdog.grace_s) as wd:  # bounds each reward call (rewards[i].timeout_s)
        wd.phase("eval", "mmrft eval", cfg.watchdog.eval_s, "watchdog.eval_s")
        result = evaluate_checkpoint(cfg)
    print(json.dumps(result))
    return 0
