"""Shared fixtures: a tiny Qwen2.5-VL built once per session, and small synthetic datasets."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from mmrft.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """Classification and grounding splits of the synthetic shapes task (small)."""
    from data_pipelines.synthetic import write_shapes_dataset

    d = tmp_path_factory.mktemp("shapes")
    write_shapes_dataset(d, task="classification", n=48, seed=0, split="train")
    write_shapes_dataset(d, task="classification", n=16, seed=1, split="heldout")
    write_shapes_dataset(d, task="grounding", n=16, seed=0, split="train")
    return d
