"""torchrun job for test_vllm_weights.py: FSDP2-shard the tiny model, stream its weights with
``policy_weights`` (one DTensor gathered at a time) and compare each to the unsharded checkpoint."""

import sys

import torch

from mmrft import distributed
from mmrft.models.forward import VLMOps
from mmrft.models.loading import load_model
from mmrft.vllm_engine import policy_weights


def main(model_dir: str) -> None:
    info = distributed.init(strategy="fsdp", device="cpu")
    reference = dict(load_model(model_dir, device=torch.device("cpu")).policy.named_parameters())
    lm = load_model(model_dir, device=torch.device("cpu"))
    ops = distributed.wrap(VLMOps(lm.policy), info)
    from torch.distributed.tensor import DTensor

    sharded = sum(isinstance(p, DTensor) for p in ops.parameters())
    names = []
    for name, tensor in policy_weights(ops):
        assert not isinstance(tensor, DTensor), name
        assert torch.equal(tensor, reference[name].detach()), name
        names.append(name)
    assert names == list(reference), (names[:3], list(reference)[:3])
    if info.is_main:
        print(f"OK {len(names)} tensors, {sharded} sharded")
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
