"""The only module that talks to ``torch.distributed``.

Under ``torchrun`` (which sets RANK / WORLD_SIZE / LOCAL_RANK, the launcher's own contract) the process
group is initialised with NCCL on CUDA and gloo on CPU. Data parallelism is FSDP2 (``fully_shard``) by
default, DDP as an option. Each parameter is sharded with the module the trainer calls directly (the
vision tower, the token embedding, the language model, the LM head), since the vision-once forward calls
those pieces rather than the model's root ``forward``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mmrft.config import ConfigError


@dataclass
class DistInfo:
    """Where this process sits. ``strategy`` is the resolved one (fsdp, ddp or none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    strategy: str = "none"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(
    strategy: str = "auto", backend: str = "auto", device: str = "auto", timeout_s: float = 1800.0
) -> DistInfo:
    """Initialise the process group when launched by torchrun with more than one process; every collective
    of the group times out after ``timeout_s`` seconds (``distributed.timeout_s``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is available; use auto or cpu")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        be = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
        dist.init_process_group(backend=be, timeout=timedelta(seconds=timeout_s))
    resolved = strategy
    if strategy == "auto":
        resolved = "fsdp" if world > 1 else "none"
    if world == 1:
        resolved = "none"
    return DistInfo(rank, world, local, dev, resolved)


def shutdown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (returns a new tensor; identity on one process)."""
    if not dist.is_initialized():
        return t.clone()
    out = t.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum of a tensor over ranks (returns a new tensor; identity on one process)."""
    out = t.clone()
    if dist.is_initialized():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors from all ranks along dim 0, in rank order."""
    if not dist.is_initialized():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (on every rank)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: torch.nn.Module, info: DistInfo) -> torch.nn.Module:
    """Apply the data-parallel strategy. Returns the module to train (the same object for FSDP2)."""
    if info.strategy == "none":
        return model
    if info.strategy == "ddp":
        # Replicated weights; gradients are summed by `reduce_gradients` after backward. (torch's DDP
        # wrapper syncs only through its own forward, and the vision-once forward calls submodules.)
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)
        return model
    if info.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        from mmrft.models.forward import VLMOps, hf_core

        if not isinstance(model, VLMOps):
            raise TypeError("FSDP2 wraps the VLMOps root module (every forward must pass through the root)")
        inner = hf_core(model)
        core = inner.model
        kw = {}
        if model.compute_dtype is not None:  # gather params in the compute dtype, reduce grads in fp32
            from torch.distributed.fsdp import MixedPrecisionPolicy

            kw["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=model.compute_dtype, reduce_dtype=torch.float32
            )
        for block in core.visual.blocks:
            fully_shard(block, **kw)
        fully_shard(core.visual, **kw)
        for layer in core.language_model.layers:
            fully_shard(layer, **kw)
        fully_shard(core.language_model.embed_tokens, **kw)
        fully_shard(inner.lm_head, **kw)
        fully_shard(model, **kw)
        return model
    raise ValueError(f"distributed.strategy: unknown {info.strategy!r}; choose from auto, fsdp, ddp, none")


def loss_scale(info: DistInfo) -> float:
    """Factor on a loss normalised by GLOBAL counts so that the synced gradient is the full-batch one:
    FSDP2 averages gradients over ranks (so scale by world size); `reduce_gradients` sums them."""
    return float(info.world_size) if info.strategy == "fsdp" else 1.0


def reduce_gradients(model: torch.nn.Module, info: DistInfo) -> None:
    """Sum gradients over ranks for the replicated (ddp) strategy; FSDP2 reduces in backward."""
    if info.strategy != "ddp":
        return
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def all_true(flag: bool, info: DistInfo) -> bool:
    """True when ``flag`` holds on every rank (a collective when world_size > 1)."""
    if info.world_size == 1 or not dist.is_initialized():
        return flag
    t = torch.tensor([0 if flag else 1], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item()) == 0


def full_state_dict(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None):
    """Full (unsharded) CPU state dicts of model and optimizer, on rank 0 (empty elsewhere); collective
    under FSDP2. Used for the Hugging Face export and the one-process checkpoint format."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=opts), None
    return get_state_dict(model, optimizer, options=opts)


def load_full_state_dict(model, optimizer, model_sd, optim_sd) -> None:
    """Load full state dicts (as written by ``full_state_dict``, read by every rank) into a possibly
    sharded model: each rank keeps its own shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    opts = StateDictOptions(full_state_dict=True, strict=True)
    set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=opts)


def save_sharded(model, optimizer, path) -> None:
    """Write model and optimizer with ``torch.distributed.checkpoint`` (collective): every rank writes
    only its own shards (``__<rank>_0.distcp``), rank 0 adds ``.metadata``; nothing is gathered. The
    files hold global tensor shapes, so ``load_sharded`` reads them back on any number of processes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    with _single_process_quiet():
        dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def load_sharded(model, optimizer, path) -> None:
    """Read a ``save_sharded`` checkpoint written by any world size into this one (collective): each
    rank reads the byte ranges of its own shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)  # the layout to fill (initialises Adam state)
    state = {"model": model_sd, "optim": optim_sd}
    with _single_process_quiet():
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns that it assumes one process when no process group exists: that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def my_share(items: list, info: DistInfo) -> list:
    """This rank's share of a list (every W-th item from its rank), for work split over ranks."""
    return items[info.rank :: info.world_size]


def full_parameters(module: torch.nn.Module):
    """Yield (name, full tensor) for each parameter of ``module``, one at a time, detached.

    An FSDP2 shard (a DTensor) is gathered on its own with ``full_tensor()`` (a collective: every rank
    must iterate the same parameters in the same order), so at most one unsharded parameter exists at
    a time; a plain parameter is yielded as it is (no copy).
    """
    from torch.distributed.tensor import DTensor

    for name, param in module.named_parameters():
        t = param.detach()
        yield name, (t.full_tensor() if isinstance(t, DTensor) else t)
