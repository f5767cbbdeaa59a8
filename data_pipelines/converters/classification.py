"""An ImageFolder tree (one folder per class) -> classification records with a closed label set.

Labels come from folder names; ``pretty`` labels drop a numeric prefix and underscores
(``001.Black_footed_Albatross`` -> ``Black footed Albatross``, as CUB-200 is laid out). ``shots`` keeps
k images per class (seeded: Visual-RFT's one-shot and CLS-RL's few-shot splits). ``choices`` puts the
candidate list in the prompt (CLS-RL); ``prompt_style="answer_only"`` is CLS-RL's no-thinking form.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.converters.common import ConvertResult, MediaPlacer, finish, k_shot, output_path
from data_pipelines.prompts import answer_instruction, user_prompt

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def pretty_label(folder: str) -> str:
    """``001.Black_footed_Albatross`` -> ``Black footed Albatross``."""
    return re.sub(r"^\d+[._-]", "", folder).replace("_", " ").strip()


def classification_prompt(choices: list[str] | None, prompt_style: str, subject: str = "object") -> str:
    question = f"What is the {subject} in the image?"
    if choices:
        question += f" Choose from: {', '.join(choices)}."
    return f"{question} {answer_instruction('label', prompt_style)}"


def convert_classification(
    root: str | os.PathLike,
    out: str | os.PathLike,
    shots: int | None = None,
    seed: int = 0,
    choices: bool = True,
    labels: str = "pretty",
    prompt_style: str = "answer_only",
    subject: str = "object",
    media: str = "link",
    name: str | None = None,
) -> ConvertResult:
    """Convert ``root/<class>/<image>`` files; returns what was written (see module doc)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"classification root {root} is not a folder")
    if labels not in ("pretty", "raw"):
        raise ValueError(f"labels must be 'pretty' or 'raw', got {labels!r}")
    name = name or root.name
    skipped: Counter[str] = Counter()
    groups: dict[str, list[Path]] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = []
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(f)
                elif not f.name.startswith("."):
                    skipped["not_an_image"] += 1
        label = pretty_label(folder.name) if labels == "pretty" else folder.name
        if not label:
            skipped["empty_label"] += len(files)
            continue
        if files:
            groups.setdefault(label, []).extend(files)
    if not groups:
        raise ValueError(f"no class folders with images under {root}")
    label_set = sorted(groups)
    chosen = k_shot(groups, shots, seed)
    out_path, out_dir = output_path(out, f"{name}.jsonl")
    placer = MediaPlacer(out_dir, f"images/{name}", media)
    text = classification_prompt(label_set if choices else None, prompt_style, subject)
    records: list[dict[str, Any]] = []
    classes: Counter[str] = Counter()
    for label, files in chosen.items():
        for f in files:
            rel_src = f.relative_to(root)
            rel = placer.place(f, name=str(rel_src).replace(os.sep, "/"))
            records.append(
                {
                    "id": f"{name}-{rel_src.as_posix()}",
                    "task": "classification",
                    "images": [rel],
                    "prompt": user_prompt(text),
                    "solution": {"label": label, "choices": label_set},
                }
            )
            classes[label] += 1
    return finish(out_path, records, classes, skipped)
