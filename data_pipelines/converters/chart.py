"""Pairs of chart image + plotting code -> chart-to-code records (ChartMimic / MSRL layout).

A pair is two files with the same stem in one folder tree: ``bar_12.png`` + ``bar_12.py``. The record
shows the image and asks for matplotlib code that reproduces it; ``solution`` holds the reference code
and the reference image (for render-and-compare rewards).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.converters.classification import IMAGE_SUFFIXES
from data_pipelines.converters.common import ConvertResult, MediaPlacer, finish, output_path
from data_pipelines.prompts import answer_instruction, user_prompt

CODE_FORM = "```python\n...\n```"


def chart_prompt(prompt_style: str) -> str:
    return (
        "Write Python code using matplotlib that draws exactly this chart (same type, data, colours, labels "
        f"and layout). {answer_instruction(CODE_FORM, prompt_style)}"
    )


def convert_chart(
    src: str | os.PathLike,
    out: str | os.PathLike,
    prompt_style: str = "answer_only",
    media: str = "link",
    name: str | None = None,
) -> ConvertResult:
    """Convert every (image, ``.py``) pair under ``src``; an image without code or code without an image
    is skipped and counted."""
    src = Path(src)
    if not src.is_dir():
        raise ValueError(f"chart source {src} is not a folder")
    name = name or src.name
    out_path, out_dir = output_path(out, f"{name}.jsonl")
    placer = MediaPlacer(out_dir, f"images/{name}", media)
    skipped: Counter[str] = Counter()
    images = {p.with_suffix(""): p for p in sorted(src.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}
    codes = {p.with_suffix(""): p for p in sorted(src.rglob("*.py"))}
    skipped["image_without_code"] += len(images.keys() - codes.keys())
    skipped["code_without_image"] += len(codes.keys() - images.keys())
    records: list[dict[str, Any]] = []
    for stem in sorted(images.keys() & codes.keys()):
        code = codes[stem].read_text(encoding="utf-8", errors="replace")
        if not code.strip():
            skipped["empty_code"] += 1
            continue
        rel_src = images[stem].relative_to(src).as_posix()
        rel = placer.place(images[stem], name=rel_src)
        records.append(
            {
                "id": f"{name}-{stem.relative_to(src).as_posix()}",
                "task": "chart_to_code",
                "images": [rel],
                "prompt": user_prompt(chart_prompt(prompt_style)),
                "solution": {"code": code, "image": rel},
            }
        )
    skipped = Counter({k: v for k, v in skipped.items() if v})
    return finish(out_path, records, Counter(), skipped)
