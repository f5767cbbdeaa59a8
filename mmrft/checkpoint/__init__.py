"""Checkpoints that verify, resume that never restarts silently, artefacts that are written atomically.

A run directory holds ``checkpoints/step_NNNNNNN/`` folders and a ``checkpoints/latest`` pointer:

```
step_0000005/
  manifest.json        step, config hash, layout, world size, eval metric; size + SHA-256 of each file
  trainer_state.json   step, stage, eval results so far, rows of metrics.jsonl / samples.jsonl
  config.yaml          the config this checkpoint was written with (resume compares against it)
  scheduler.pt         LR schedule
  rng_rank<R>.pt       Python / NumPy / torch generators of each rank
  model.pt, optimizer.pt            layout "full": one state dict each (written by rank 0)
  dcp/.metadata, dcp/__<R>_0.distcp layout "sharded": torch.distributed.checkpoint, each rank its shards
```

``store`` writes and reads one checkpoint and applies retention, ``manifest`` records and verifies the
files, ``resume`` chooses the checkpoint to resume and compares configs, ``files`` has the atomic
writes. docs/resuming.md is the user's guide.
"""

from mmrft.checkpoint.files import replace_dir, tmp_dir_for, write_bytes_atomic, write_text_atomic
from mmrft.checkpoint.resume import (
    SAFE_TO_CHANGE,
    Change,
    ResumeError,
    Selection,
    config_changes,
    config_hash,
    find_resumable,
    has_checkpoints,
    mismatch_message,
    open_run,
    record_changes,
    say,
    set_aside,
)
from mmrft.checkpoint.store import Retention, best_checkpoint, load, save, step_dirs, step_path

__all__ = [
    "SAFE_TO_CHANGE", "Change", "ResumeError", "Retention", "Selection", "best_checkpoint", "config_changes", "config_hash",
    "find_resumable", "has_checkpoints", "load", "mismatch_message", "open_run", "record_changes", "replace_dir", "save",
    "say", "set_aside", "step_dirs", "step_path", "tmp_dir_for", "write_bytes_atomic", "write_text_atomic",
]  # fmt: skip
