"""``mmrft demo``: a Gradio app to try a model on images and video, beside its base, and browse a run.

mmrft demo --model DIR [--base DIR] [--run RUN_DIR] [--config FILE] [--host 127.0.0.1] [--port P] [--share]

Vision sizing, the prompt budget and the rewards come from --config, else from RUN_DIR/config.yaml,
else the defaults of `mmrft train`. Binds to 127.0.0.1 unless --host says otherwise. See docs/demo.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="Gradio app: try a model on images/video (beside its base), browse a run's rollouts and curves.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model", required=True, help="Checkpoint directory of the model to try (e.g. runs/x/final)."
    )
    p.add_argument(
        "--base", default=None, help="Checkpoint it started from; answers the same input beside it."
    )
    p.add_argument(
        "--run", default=None, help="Run directory (train.output_dir) for the Rollouts and Curves tabs."
    )
    p.add_argument(
        "--config", default=None, help="YAML recipe whose data sizing, prompt budget and rewards to use."
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="Address to bind (default 127.0.0.1: this machine only)."
    )
    p.add_argument("--port", type=int, default=None, help="Port (default: the first free one from 7860).")
    p.add_argument(
        "--share", action="store_true", help="Also open a public gradio.live link (needs internet)."
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where the models run.")
    p.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)."
    )
    p.add_argument(
        "--max-megapixels", type=float, default=40.0, help="Largest image or video frame accepted."
    )
    p.set_defaults(func=run)


def _fail(message: str) -> int:
    print(f"mmrft demo: error: {message}", file=sys.stderr)
    return 1


def _settings(args: argparse.Namespace):
    """The demo's settings from --config, RUN/config.yaml or the defaults (ConfigError names the field)."""
    from pathlib import Path

    from mmrft.config import load_config
    from mmrft.demo.engine import DemoSettings

    path = args.config
    if path is None and args.run and (Path(args.run) / "config.yaml").is_file():
        path = str(Path(args.run) / "config.yaml")
    cfg = load_config(path, [f"model.path={args.model}"])
    settings = DemoSettings.from_config(cfg, path or "the defaults of `mmrft train`", args.max_megapixels)
    if path is None:
        settings.rewards = []  # no recipe: each task is scored by its own reward (and format)
    return settings


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        return _fail("gradio is not installed: pip install -e '.[demo]'")
    if args.port is not None and not 0 < args.port < 65536:
        return _fail(f"--port: must be 1..65535, got {args.port}")
    if args.threads is not None and args.threads < 1:
        return _fail(f"--threads: must be >= 1, got {args.threads}")
    if not args.max_megapixels > 0:
        return _fail(f"--max-megapixels: must be > 0, got {args.max_megapixels}")
    import torch

    from mmrft.config import ConfigError
    from mmrft.demo import app as demo_app
    from mmrft.demo.engine import load_demo_model, pick_device
    from mmrft.demo.handlers import Demo
    from mmrft.models.loading import check_checkpoint

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    for flag, path in (("--model", args.model), ("--base", args.base)):
        if path is not None:
            try:
                check_checkpoint(path)
            except (FileNotFoundError, ValueError) as e:
                return _fail(f"{flag}: {str(e).replace('model.path=', '', 1)}")
    try:
        settings = _settings(args)
        device = pick_device(args.device)
    except (ConfigError, ValueError) as e:
        return _fail(str(e).splitlines()[0])
    models = [load_demo_model(args.model, "tuned", device, settings)]
    if args.base:
        models.append(load_demo_model(args.base, "base", device, settings))
    app = demo_app.build_app(Demo(models, settings), args.run)
    try:
        demo_app.launch(app, args.host, args.port, args.share)
    except OSError as e:  # the port is taken, or the address cannot be bound
        return _fail(str(e).splitlines()[0])
    except KeyboardInterrupt:
        pass
    return 0
