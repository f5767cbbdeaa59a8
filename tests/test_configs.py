"""Every recipe in configs/ loads and validates, its header commands parse with the real CLI, the data
files it trains on are what its data-preparation commands write, and its rewards exist and accept
their parameters."""

from __future__ import annotations

import inspect
import shlex
from pathlib import Path

import pytest

from mmrft.cli import build_parser
from mmrft.config import load_config
from rewards.registry import get as get_reward

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
RECIPES = [p for p in CONFIGS if p.name != "quickstart.yaml"]
PAPER_RECIPES = {
    "visual_rft_coco_fewshot.yaml",
    "visual_rft_fgvc_oneshot.yaml",
    "vlm_r1_refcoco.yaml",
    "cls_rl_nothink.yaml",
    "reason_rft_sft_grpo.yaml",
    "videochat_r1_temporal.yaml",
    "chart_to_code.yaml",
}


def header_commands(path: Path) -> list[list[str]]:
    """Commands in the leading comment block: every ``mmrft ...`` / ``torchrun ...`` after ``#`` and an
    optional ``Label:``, split as a shell would."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        for start in ("mmrft ", "torchrun ", "(single GPU: mmrft "):
            k = text.find(start)
            if k != -1:
                cmd = text[k:].removeprefix("(single GPU: ").removesuffix(")")
                out.append(shlex.split(cmd))
                break
    return out


def test_every_paper_recipe_is_there():
    assert PAPER_RECIPES <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads_and_validates(path):
    cfg = load_config(path)
    assert cfg.train.micro_batch_size % cfg.rollout.group_size == 0
    for spec in cfg.rewards:
        fn = get_reward(spec.name)
        inspect.signature(fn).bind(completions=[], **spec.params)  # every param is one the reward takes


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_header_names_the_command_that_runs_it(path):
    cmds = header_commands(path)
    runs = [c for c in cmds if c[:2] == ["mmrft", "train"] or "mmrft.train" in c]
    assert runs, f"{path.name}: the first comment lines must show the command that runs it"
    parser = build_parser()
    for cmd in runs:
        if "--config" not in cmd:  # only the default config runs with a bare `mmrft train`
            assert path.name == "quickstart.yaml" and cmd[:2] == ["mmrft", "train"]
            continue
        assert cmd[cmd.index("--config") + 1] == f"configs/{path.name}"
        if cmd[0] == "mmrft":
            args = parser.parse_args(cmd[1:])
            load_config(args.config, args.overrides)  # the overrides in the command are valid too
        else:
            assert cmd[:1] == ["torchrun"] and cmd[cmd.index("-m") + 1] == "mmrft.train"
            load_config(path, cmd[cmd.index("--config") + 2 :])


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_data_preparation_commands_parse_and_write_the_files_the_recipe_reads(path):
    if load_config(path).data.train_file is None:  # the built-in synthetic task: no files to prepare
        assert load_config(path).model.path is None, f"{path.name}: a synthetic recipe builds its model"
        return
    parser = build_parser()
    written = set()
    for cmd in header_commands(path):
        if cmd[:2] == ["mmrft", "data"]:
            args = parser.parse_args(cmd[1:])  # argparse exits on an unknown option or kind
            written.add(args.out if args.data_command == "prepare" else None)
    assert written, f"{path.name}: the header must show the data preparation command it expects"
    cfg = load_config(path)
    for key in ("train_file", "eval_file", "sft_file"):
        value = getattr(cfg.data, key)
        if value is not None:
            assert value in written, f"{path.name}: data.{key}={value} is not written by a header command"
