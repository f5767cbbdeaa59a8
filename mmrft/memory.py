"""Memory: a start-up report of what training holds per device, and the peak of each step phase.

``memory_report`` counts, on this rank (FSDP2: this rank's shards), the bytes of the parameters (policy
and reference), their gradients, AdamW's two moments, and an estimate of the activations one
micro-batch keeps for backward (see ``activation_estimate``). ``PhasePeaks`` measures the peak memory
of each phase of a step (rollout, reference, update):

- on CUDA, ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (tensor memory);
- on CPU (Linux), the process's resident-set high-water mark ``VmHWM`` from ``/proc/self/status``, reset
  at the start of each phase by writing ``5`` to ``/proc/self/clear_refs`` (``RSSWatch``, which keeps an
  outer watch's peak, e.g. a benchmark's, across those resets): whole-process RSS, so it includes the
  Python heap and libraries, not only tensors (tracemalloc would slow every allocation);
- elsewhere, ``resource.getrusage``'s ``ru_maxrss``, which cannot be reset: the process's peak so far.
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
import weakref
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

MIB = 2**20


def _local_bytes(t: torch.Tensor) -> int:
    """Bytes this rank holds of ``t`` (an FSDP2 DTensor: its local shard)."""
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


@dataclass
class MemoryReport:
    """Bytes on one device (rank ``rank``); ``activations``: one micro-batch's estimate."""

    rank: int
    device: str
    parameters: int
    reference_parameters: int
    gradients: int
    optimizer_state: int
    activations: int

    @property
    def total(self) -> int:
        return (
            self.parameters + self.reference_parameters + self.gradients + self.optimizer_state
            + self.activations
        )  # fmt: skip

    def as_dict(self) -> dict:
        return {**asdict(self), "total": self.total}

    def line(self) -> str:
        gib = 2**30
        return (
            f"rank {self.rank} ({self.device}): parameters {self.parameters / gib:.3f} GiB"
            f" + reference {self.reference_parameters / gib:.3f} + gradients {self.gradients / gib:.3f}"
            f" + AdamW state {self.optimizer_state / gib:.3f} + activations/micro-batch ~{self.activations / gib:.3f}"
            f" = {self.total / gib:.3f} GiB"
        )


def activation_estimate(
    text_config,
    prompts: int,
    sequences: int,
    prompt_len: int,
    completion_len: int,
    element_size: int,
    checkpointing: bool,
) -> int:
    """Bytes of activations one micro-batch keeps for backward (an estimate, not a measurement).

    Tokens: ``prompts x prompt_len`` (each prompt runs once) + ``sequences x completion_len``. Per
    decoder layer and token a layer keeps about ``6h + 2kv + 3i`` values (h hidden, kv the key/value
    width, i the MLP width: norms, q/k/v, attention output, residuals, gate/up/activation); with
    gradient checkpointing only the layer's input ``h`` plus one layer's full set. The LM head adds one
    chunk of fp32 logits and their gradient (``mmrft.models.forward.LOGITS_BUDGET`` elements at most).
    The vision tower's activations are left out (none when it is frozen).
    """
    from mmrft.models.forward import LOGITS_BUDGET

    h = text_config.hidden_size
    heads = text_config.num_attention_heads
    kv = getattr(text_config, "num_key_value_heads", heads) * (h // heads)
    i = text_config.intermediate_size
    layers = text_config.num_hidden_layers
    tokens = prompts * prompt_len + sequences * completion_len
    full = tokens * (6 * h + 2 * kv + 3 * i)
    per_layer = layers * (tokens * h) + full if checkpointing else layers * full
    head = 2 * 4 * min(sequences * completion_len * text_config.vocab_size, LOGITS_BUDGET)
    return per_layer * element_size + head


def memory_report(policy, reference, info, activations: int) -> MemoryReport:
    """What this rank (``info``: a ``DistInfo``) holds for training: see the module docstring."""
    params = list(policy.parameters())
    trainable = [p for p in params if p.requires_grad]
    grads = sum(_local_bytes(p) for p in trainable)
    # AdamW keeps exp_avg and exp_avg_sq, each the shape and dtype of its parameter
    adam = 2 * grads
    ref = sum(_local_bytes(p) for p in reference.parameters()) if reference is not None else 0
    return MemoryReport(
        rank=info.rank, device=str(info.device), parameters=sum(_local_bytes(p) for p in params),
        reference_parameters=ref, gradients=grads, optimizer_state=adam, activations=activations,
    )  # fmt: skip


def startup_report(policy, reference, cfg, info, compute_dtype: torch.dtype) -> MemoryReport:
    """This rank's report for a run of config ``cfg``: one micro-batch is ``train.micro_batch_size``
    sequences in whole groups, with prompts and completions at their configured maximum lengths."""
    G = cfg.rollout.group_size
    per_chunk = max(1, cfg.train.micro_batch_size // G)
    activations = activation_estimate(
        policy.config.get_text_config(), per_chunk, per_chunk * G, cfg.rollout.max_prompt_length,
        cfg.rollout.max_completion_length, compute_dtype.itemsize, cfg.model.gradient_checkpointing,
    )  # fmt: skip
    return memory_report(policy, reference, info, activations)


_CLEAR_REFS = "/proc/self/clear_refs"
_STATUS = "/proc/self/status"


def _rss_hwm() -> int | None:
    """VmHWM in bytes, or None where /proc is not there."""
    try:
        with open(_STATUS) as f:
            m = re.search(r"VmHWM:\s+(\d+)\s+kB", f.read())
    except OSError:
        return None
    return int(m.group(1)) * 1024 if m else None


class RSSWatch:
    """The process's peak resident memory since ``start`` (Linux ``VmHWM``), kept across other watches'
    resets: the high-water mark is process-wide, so every reset made here first folds the current mark
    into each open watch (a benchmark timing a whole step keeps its peak while the step measures its
    phases)."""

    _open: weakref.WeakSet[RSSWatch] = weakref.WeakSet()

    def __init__(self) -> None:
        self._max = 0

    def start(self) -> bool:
        """Reset the mark and open the watch; False where /proc cannot be reset (then nothing is open)."""
        self._max = 0
        hwm = _rss_hwm()
        try:
            with open(_CLEAR_REFS, "w") as f:
                f.write("5")
        except OSError:
            return False
        for watch in RSSWatch._open:
            watch._max = max(watch._max, hwm or 0)
        RSSWatch._open.add(self)
        return True

    def peak(self) -> int:
        """Bytes: the highest resident memory since ``start``."""
        return max(self._max, _rss_hwm() or 0)

    def stop(self) -> int:
        RSSWatch._open.discard(self)
        return self.peak()


def _maxrss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux


class PhasePeaks:
    """``with peaks.phase("rollout"): ...`` records that phase's peak; ``metrics()`` gives them in MiB
    as ``mem/<phase>_peak_mib`` (the maximum over ranks once reduced)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peaks: dict[str, int] = {}

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            watch = RSSWatch()
            resettable = watch.start()
        try:
            yield
        finally:
            if cuda:
                peak = torch.cuda.max_memory_allocated(self.device)
            else:
                peak = watch.stop() if resettable else _maxrss()
            self.peaks[name] = max(self.peaks.get(name, 0), peak)

    def metrics(self) -> dict[str, float]:
        return {f"mem/{name}_peak_mib": peak / MIB for name, peak in self.peaks.items()}


def write_reports(reports: list[MemoryReport], path) -> None:
    """Print every rank's report (rank 0 calls this once at start-up) and write them to ``path``."""
    import json

    from mmrft.checkpoint import write_text_atomic

    print("memory per device (estimate; measured phase peaks are the mem/* step metrics):")
    for r in reports:
        print("  " + r.line())
    write_text_atomic(path, json.dumps([r.as_dict() for r in reports], indent=2))
