"""``mmrft eval``: score a model (or completions made elsewhere) in the papers' metrics.

mmrft eval --model DIR --data FILE.jsonl [--config FILE] [--k K] [--temperature T] [--out DIR] [key=value ...]
mmrft eval --predictions FILE.jsonl --data FILE.jsonl [--config FILE] [--out DIR]
mmrft eval compare DIR_A DIR_B

Every record of --data is scored (--limit N takes the first N). Under torchrun the records are split
over the processes and the metrics computed on all of them. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="Score a checkpoint (or a predictions file) in the papers' metrics; `eval compare A B`.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config", default=None, help="YAML recipe whose rewards, data and eval settings are used."
    )
    p.add_argument(
        "--model", default=None, help="Checkpoint directory to generate with (overrides model.path)."
    )
    p.add_argument("--data", default=None, help="Records to evaluate on (overrides data.eval_file).")
    p.add_argument("--predictions", default=None, help='JSONL of {"id", "completion"} lines made elsewhere.')
    p.add_argument("--k", type=int, default=None, help="Completions per record (eval.k; pass@K).")
    p.add_argument("--temperature", type=float, default=None, help="Sampling temperature (eval.temperature).")
    p.add_argument("--limit", type=int, default=None, help="Score only the first N records.")
    p.add_argument("--out", default=None, help="Write eval.json, predictions.jsonl and eval.md here.")
    p.add_argument("overrides", nargs="*", help="Dotted overrides (rollout.max_completion_length=256), "
                                                "or `compare DIR_A DIR_B`.")  # fmt: skip
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"mmrft eval: error: {message}", file=sys.stderr)
    return 1


def _compare(args: argparse.Namespace) -> int:
    from mmrft.evaluation import compare, load_eval

    dirs = args.overrides[1:]
    if len(dirs) != 2:
        return _fail("usage: mmrft eval compare DIR_A DIR_B (two directories written by `mmrft eval --out`)")
    try:
        a, b = load_eval(dirs[0]), load_eval(dirs[1])
    except (FileNotFoundError, ValueError) as e:
        return _fail(str(e))
    print(compare(a, b, dirs[0], dirs[1]))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.overrides[:1] == ["compare"]:
        return _compare(args)
    from pathlib import Path

    from mmrft.config import ConfigError, load_config

    overrides = list(args.overrides)
    if args.model and args.predictions:
        return _fail(
            "give --model (generate here) or --predictions (score completions made elsewhere), not both"
        )
    if args.model:
        overrides += [f"model.path={args.model}", "model.tiny=null"]
    elif args.predictions and args.config is None and not any(o.startswith("model.") for o in overrides):
        overrides.append("model.tiny=tiny")  # no model is loaded; this only satisfies the config check
    if args.data:
        overrides.append(f"data.eval_file={args.data}")
    if args.k is not None:
        overrides.append(f"eval.k={args.k}")
    if args.temperature is not None:
        overrides.append(f"eval.temperature={args.temperature}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        return _fail(f"config error: {e}")
    if not cfg.data.eval_file:
        return _fail("--data: give the JSONL of records to evaluate on (or data.eval_file in --config)")
    if not Path(cfg.data.eval_file).is_file():
        return _fail(f"--data: file not found: {cfg.data.eval_file}")
    if args.limit is not None and args.limit < 1:
        return _fail(f"--limit: must be >= 1, got {args.limit}")
    if args.config is None and not any(o.startswith("rewards=") for o in overrides):
        from mmrft.config import RewardSpec
        from mmrft.evaluation.runner import default_rewards

        cfg.rewards = [RewardSpec(name) for name in default_rewards(cfg.data.eval_file)]
    if not args.predictions and not cfg.model.path:
        return _fail("--model: give the checkpoint directory to generate with (or --predictions FILE)")
    from data_pipelines.records import RecordError
    from mmrft.evaluation.runner import decoding_of, run_eval

    if not args.predictions:
        try:
            decoding_of(cfg)  # checked before the model loads
        except ValueError as e:
            return _fail(str(e))

    from mmrft.watchdog import Watchdog

    try:
        with Watchdog(
            None, grace_s=cfg.watchdog.grace_s
        ) as wd:  # bounds each reward call (rewards[i].timeout_s)
            wd.phase("eval", "mmrft eval", cfg.watchdog.eval_s, "watchdog.eval_s")
            report, info = run_eval(
                cfg, predictions=args.predictions, limit=args.limit, config_path=args.config
            )
    except (RecordError, ValueError, FileNotFoundError, ImportError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    from mmrft import distributed

    if info.is_main:
        print(report.table())
        if args.out:
            out = report.write(args.out)
            print(f"\nwrote {out / 'eval.json'}, {out / 'predictions.jsonl'}, {out / 'eval.md'}")
        else:
            print("\n(pass --out DIR to keep eval.json, predictions.jsonl and eval.md)")
    distributed.shutdown()
    return 0
