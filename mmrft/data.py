"""The trainer's data: datasets from config (files or the built-in synthetic task), a stateless
step sampler, and SFT targets.

The sampler is a pure function of (seed, step): an infinite stream of epochs, each a seeded permutation.
Step ``s`` takes stream positions ``[s*B, (s+1)*B)``; rank ``r`` of ``W`` takes the contiguous slice
``r*B/W .. (r+1)*B/W``. Resuming needs only the step, and the global batch is the same for any world size.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from data_pipelines.dataset import JsonlDataset
from data_pipelines.sample import Sample
from data_pipelines.tasks import TASKS, reference_answer
from data_pipelines.vision import VisionSpec
from mmrft.checkpoint.files import recover_dir, replace_dir, tmp_dir_for
from mmrft.config import ConfigError


@dataclass
class Datasets:
    train: JsonlDataset
    eval: JsonlDataset | None
    sft: JsonlDataset | None


def vision_spec(cfg) -> VisionSpec:
    return VisionSpec(
        min_pixels=cfg.data.min_pixels,
        max_pixels=cfg.data.max_pixels,
        video_fps=cfg.data.video_fps,
        video_min_frames=cfg.data.video_min_frames,
        video_max_frames=cfg.data.video_max_frames,
        video_min_pixels=cfg.data.video_min_pixels,
        video_max_pixels=cfg.data.video_max_pixels,
        video_total_pixels=cfg.data.video_total_pixels,
    )


def write_synthetic(cfg, data_dir: Path) -> dict[str, Path]:
    """Write the built-in task's train / held-out splits, and the shifted split when
    ``data.synthetic.n_shifted`` > 0 (deterministic; skipped when already there)."""
    from data_pipelines.synthetic import write_shapes_dataset
    from data_pipelines.synthetic.video import write_video_dataset

    syn = cfg.data.synthetic
    video = syn.task == "temporal_grounding"
    if video and (syn.combos != "all" or syn.n_shifted):
        raise ConfigError(
            "data.synthetic.combos / n_shifted: the shifted split is made for the shape tasks, "
            f"not {syn.task!r}; leave combos=all and n_shifted=0"
        )
    if video and syn.image_size % 2:
        raise ConfigError(f"data.synthetic.image_size={syn.image_size}: videos need an even side")
    stamp = data_dir / "synthetic.json"
    want = {k: v for k, v in dataclasses.asdict(syn).items() if k != "sft_examples"}
    paths = {"train": data_dir / f"{syn.task}_train.jsonl", "eval": data_dir / f"{syn.task}_heldout.jsonl"}
    if syn.n_shifted:
        paths["shifted"] = data_dir / f"{syn.task}_shifted.jsonl"
    recover_dir(data_dir)
    if stamp.is_file() and json.loads(stamp.read_text()) == want and all(p.is_file() for p in paths.values()):
        return paths
    common: dict = dict(task=syn.task, image_size=syn.image_size, prompt_style=syn.prompt_style)
    if video:
        write = write_video_dataset
        common.update(fps=syn.video_fps, min_duration=syn.min_duration, max_duration=syn.max_duration)
    else:
        write = write_shapes_dataset
        common.update(max_count=syn.max_count, distractors=syn.distractors, empty_frac=syn.empty_frac)
        common.update(min_size_frac=syn.min_size_frac, max_size_frac=syn.max_size_frac)
        common.update(combos=syn.combos)
        if syn.task == "classification":
            common["question"] = syn.question
    tmp = tmp_dir_for(data_dir)  # written aside and swapped in whole: a kill never leaves half a split
    try:
        write(tmp, n=syn.n_train, seed=syn.seed, split="train", **common)
    except ValueError as e:  # a combination of settings the generator refuses (sizes, colours)
        raise ConfigError(f"data.synthetic: {e}") from None
    write(tmp, n=syn.n_eval, seed=syn.seed + 1, split="heldout", **common)
    if syn.n_shifted:
        default_d = 0 if syn.task in ("counting", "classification") else 2
        base_d = default_d if syn.distractors is None else syn.distractors
        if syn.task == "classification":  # one shape per image: the shift is the unseen pairs alone
            extra = 0
        else:
            extra = syn.shifted_extra_distractors
        common.update(combos="unseen" if syn.combos == "seen" else "all", distractors=base_d + extra)
        write(tmp, n=syn.n_shifted, seed=syn.seed + 2, split="shifted", **common)
    (tmp / stamp.name).write_text(json.dumps(want))
    replace_dir(tmp, data_dir)
    return paths


def build_datasets(cfg, files: dict[str, Path | None]) -> Datasets:
    spec = vision_spec(cfg)

    def load(path):
        return JsonlDataset(path, vision=spec, on_bad_record=cfg.data.on_bad_record) if path else None

    train = load(files["train"])
    assert train is not None
    if len(train) == 0:
        raise ConfigError(f"data.train_file={str(files['train'])!r}: no usable records")
    return Datasets(train, load(files.get("eval")), load(files.get("sft")) if files.get("sft") else None)


def step_indices(step: int, batch: int, n: int, seed: int, rank: int, world: int, shuffle: bool = True):
    """(dataset indices, stream positions) this rank uses at ``step``; see the module docstring."""
    if batch % world:
        raise ValueError(
            f"train.prompts_per_step={batch} must be divisible by the number of processes {world}"
        )
    local = batch // world
    start = step * batch + rank * local
    positions = list(range(start, start + local))
    out, cache = [], {}
    for pos in positions:
        epoch, i = divmod(pos, n)
        if epoch not in cache:
            g = torch.Generator().manual_seed(seed * 7919 + epoch)
            cache[epoch] = torch.randperm(n, generator=g).tolist() if shuffle else list(range(n))
        out.append(cache[epoch][i])
    return out, positions


def sample_seed(seed: int, position: int) -> int:
    """The sampling seed of the prompt at a stream position (independent of rank and batch layout)."""
    return (seed * 1_000_003 + position * 7_919 + 17) % (2**62)


def answer_text(sample: Sample) -> str:
    """The reference answer of a record, in the form its reward parses (model frame; the task spec's
    ``answer``, or a ``label`` the solution carries where the spec takes it)."""
    known = sample.task in TASKS
    ans = reference_answer(sample.task, sample.solution) if known else None
    if ans is None:
        raise ValueError(
            f"record {sample.id!r}: no SFT target for task {sample.task!r}; add a 'response' column"
        )
    return ans


def sft_target(sample: Sample, prompt_style: str) -> str:
    """SFT target text: the record's ``response`` column if present, else the answer in tags."""
    if isinstance(sample.columns.get("response"), str):
        return sample.columns["response"]
    ans = answer_text(sample)
    if prompt_style == "think_answer":
        return f"<think>The answer is {ans}.</think><answer>{ans}</answer>"
    if prompt_style == "plain":
        return ans
    return f"<answer>{ans}</answer>"


def encode_targets(tokenizer, texts: list[str], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded target ids [N, T] ending in <|im_end|>, and their mask [N, T]."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [end] for t in texts]
    T = max(len(x) for x in ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    out = torch.full((len(ids), T), pad, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return out.to(device), mask.to(device)
