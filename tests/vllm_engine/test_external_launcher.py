"""Under torchrun, each process's engine (``external_launcher``) generates its share, and a weight sync
from the FSDP2 shards makes every engine generate as the trained policy (vLLM's CPU build, for real)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest


def _vllm_installed() -> bool:
    """vLLM itself, not a namespace package made of some folder named ``vllm`` on sys.path."""
    spec = importlib.util.find_spec("vllm")
    return spec is not None and spec.origin is not None


pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(not _vllm_installed(), reason="vLLM is not installed"),
]

JOB = Path(__file__).with_name("launcher_job.py")


def _run(cmd, out: Path) -> list[dict]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return [json.loads(p.read_text()) for p in sorted(out.parent.glob(out.name + ".*.json"))]


def test_two_engines_generate_their_shares_and_follow_the_fsdp2_policy(tmp_path):
    from mmrft.models.tiny import build_tiny

    model = build_tiny(tmp_path / "model", seed=0)
    one = _run([sys.executable, str(JOB), str(model), str(tmp_path / "one")], tmp_path / "one")
    two = _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(JOB),
                str(model), str(tmp_path / "two")], tmp_path / "two")  # fmt: skip
    assert len(one) == 1 and len(two) == 2
    # the same prompts, seeds and weights: rank 0 + rank 1 produce exactly the one process's samples
    assert two[0]["texts"] + two[1]["texts"] == one[0]["texts"]

    def rows(r):  # each rank pads to its own longest completion; real log-probs are never exactly 0
        return [[x for x in row if x != 0.0] for row in r["logprobs"]]

    # the same log-probs up to float rounding (2 prompts a batch instead of 4: other kernel shapes)
    for a, b in zip(rows(two[0]) + rows(two[1]), rows(one[0]), strict=True):
        assert len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    for r in one + two:
        assert r["synced_tensors"] == 57  # every parameter of the tiny model, gathered shard by shard
        assert r["greedy_equal"], r
        assert r["greedy_logprob_diff"] < 1e-4, r
