"""COCO / LVIS detection json -> detection records, one per (image, category), as Visual-RFT trains.

The prompt names one category and asks for every box of it (an image without that category is the
"no objects" case when ``negatives`` adds such records). ``shots`` keeps k images per category
(seeded; Visual-RFT's 1/2/4/8/16-shot splits); ``categories`` keeps a subset (open-vocabulary base or
novel lists). COCO boxes ``[x, y, w, h]`` become xyxy in original pixels. LVIS json has the same
layout; its images name their file by ``coco_url``.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from data_pipelines.converters.common import ConvertResult, MediaPlacer, finish, k_shot, output_path
from data_pipelines.geometry import check_box, clip_box, xywh_to_xyxy
from data_pipelines.prompts import (
    PROMPT_STYLES,
    answer_instruction,
    coord_sentence,
    none_sentence,
    user_prompt,
)


def detection_prompt(category: str, coord_space: str, prompt_style: str, with_score: bool = False) -> str:
    """Visual-RFT's per-category detection question, with the exact JSON answer form."""
    score = ', "score": confidence 0-1' if with_score else ""
    form = f'[{{"bbox_2d": [x1, y1, x2, y2], "label": "{category}"{score}}}, ...]'
    return (
        f"Detect every {category} in the image. {coord_sentence(coord_space)} "
        f"{answer_instruction(form, prompt_style)} {none_sentence(prompt_style)}"
    )


def _file_name(img: dict[str, Any]) -> str:
    if img.get("file_name"):
        return img["file_name"]
    if img.get("coco_url"):  # LVIS
        return img["coco_url"].rstrip("/").rsplit("/", 1)[-1]
    raise KeyError("file_name")


def convert_coco(
    annotations: str | os.PathLike,
    image_dir: str | os.PathLike,
    out: str | os.PathLike,
    shots: int | None = None,
    categories: list[str] | None = None,
    negatives: int = 0,
    seed: int = 0,
    prompt_style: str = "think_answer",
    coord_space: str = "pixel",
    media: str = "link",
    name: str = "coco",
    with_score: bool = False,
) -> ConvertResult:
    """Convert a COCO-format json; returns what was written (see module doc).

    negatives: per kept image, this many extra records for categories absent from it (empty boxes).
    with_score: ask for a confidence per box (Visual-RFT's confidence reward).
    """
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    coord_sentence(coord_space)
    with open(annotations, encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{annotations}: not a COCO detection json (no '{key}' list)")
    cat_name = {c["id"]: c["name"] for c in data["categories"]}
    if categories is not None:
        unknown = sorted(set(categories) - set(cat_name.values()))
        if unknown:
            raise ValueError(
                f"--categories {unknown} are not in {annotations}; it has {sorted(cat_name.values())[:20]}..."
            )
    keep_cats = set(categories) if categories is not None else set(cat_name.values())

    skipped: Counter[str] = Counter()
    images = {img["id"]: img for img in data["images"]}
    image_dir = Path(image_dir)
    boxes: dict[tuple[int, str], list[list[float]]] = defaultdict(list)
    bad_images: set[int] = set()
    for ann in data["annotations"]:
        img = images.get(ann.get("image_id"))
        cat = cat_name.get(ann.get("category_id"))
        if img is None or cat is None:
            skipped["dangling_annotation"] += 1
            continue
        if cat not in keep_cats:
            continue
        if ann.get("iscrowd"):
            skipped["crowd_annotation"] += 1
            continue
        box = xywh_to_xyxy(ann.get("bbox"))
        reason = check_box(box, (img["width"], img["height"]))
        if reason:  # a bad box poisons its image's ground truth: drop the image, not just the box
            skipped[reason] += 1
            bad_images.add(img["id"])
            continue
        boxes[(img["id"], cat)].append(clip_box(box, (img["width"], img["height"])))

    for iid, img in images.items():
        if not (image_dir / _file_name(img)).is_file():
            bad_images.add(iid)
            if any((iid, c) in boxes for c in keep_cats):
                skipped["missing_file"] += 1
    by_cat: dict[str, list[int]] = defaultdict(list)
    for iid, cat in sorted(boxes):
        if iid not in bad_images:
            by_cat[cat].append(iid)
    chosen = k_shot(by_cat, shots, seed)

    out_path, out_dir = output_path(out, f"{name}.jsonl")
    placer = MediaPlacer(out_dir, f"images/{name}", media)
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    classes: Counter[str] = Counter()
    all_cats = sorted(keep_cats)

    def ask(cat: str) -> str:
        return detection_prompt(cat, coord_space, prompt_style, with_score)

    for cat, iids in chosen.items():
        for iid in iids:
            img = images[iid]
            rel = placer.place(image_dir / _file_name(img))
            cat_boxes = boxes[(iid, cat)]
            records.append(_record(f"{name}-{iid}-{cat}", rel, cat, cat_boxes, ask(cat), coord_space))
            classes[cat] += 1
            present = {c for c in all_cats if (iid, c) in boxes}
            absent = [c for c in all_cats if c not in present]
            for neg in rng.sample(absent, min(negatives, len(absent))):
                records.append(_record(f"{name}-{iid}-{neg}", rel, neg, [], ask(neg), coord_space))
    # one record per (image, category): an image shot for two categories appears once per category
    seen: set[str] = set()
    unique = [r for r in records if not (r["id"] in seen or seen.add(r["id"]))]
    return finish(out_path, unique, classes, skipped)


def _record(rid: str, rel: str, cat: str, cat_boxes: list, text: str, coord_space: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": rid,
        "task": "detection",
        "images": [rel],
        "prompt": user_prompt(text),
        "solution": {"boxes": cat_boxes, "labels": [cat] * len(cat_boxes)},
    }
    if coord_space != "pixel":
        rec["coord_space"] = coord_space
    return rec
