"""RefCOCO / RefCOCO+ / RefCOCOg (the ``refer`` layout) -> grounding records, one per expression.

Input: the ``refs(unc).p`` pickle (or the same list as JSON) and the ``instances.json`` beside it, as
the refer toolkit ships them. Each ref points at one COCO annotation (``ann_id``) whose ``bbox``
``[x, y, w, h]`` is the target; each of its ``sentences`` becomes one record (VLM-R1's setup).
Only open a pickle you trust: unpickling runs code.
"""

from __future__ import annotations

import json
import os
import pickle
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.converters.common import ConvertResult, MediaPlacer, finish, output_path
from data_pipelines.geometry import check_box, clip_box, xywh_to_xyxy
from data_pipelines.prompts import BOX_FORM, answer_instruction, coord_sentence, user_prompt


def grounding_prompt(expression: str, coord_space: str, prompt_style: str) -> str:
    """VLM-R1-style referring question with the exact ``bbox_2d`` answer form."""
    return (
        f'Locate the region this sentence describes: "{expression}". {coord_sentence(coord_space)} '
        f"{answer_instruction(BOX_FORM, prompt_style)}"
    )


def _load_refs(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    with open(path, "rb") as f:
        return pickle.load(f)  # noqa: S301 - the refer toolkit's own format; see module doc


def convert_refcoco(
    refs: str | os.PathLike,
    image_dir: str | os.PathLike,
    out: str | os.PathLike,
    instances: str | os.PathLike | None = None,
    split: str | None = None,
    prompt_style: str = "think_answer",
    coord_space: str = "pixel",
    media: str = "link",
    name: str = "refcoco",
) -> ConvertResult:
    """Convert refs (+ instances.json, default: next to the refs file); ``split`` keeps one refer split
    (``train``, ``val``, ``testA``, ``testB``, ``test``)."""
    refs = Path(refs)
    instances = Path(instances) if instances else refs.parent / "instances.json"
    with open(instances, encoding="utf-8") as f:
        inst = json.load(f)
    anns = {a["id"]: a for a in inst["annotations"]}
    imgs = {i["id"]: i for i in inst["images"]}
    image_dir = Path(image_dir)
    out_path, out_dir = output_path(out, f"{name}_{split or 'all'}.jsonl")
    placer = MediaPlacer(out_dir, f"images/{name}", media)
    skipped: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    cat_name = {c["id"]: c["name"] for c in inst.get("categories", [])}
    records = []
    for ref in _load_refs(refs):
        if split is not None and ref.get("split") != split:
            continue
        ann, img = anns.get(ref.get("ann_id")), imgs.get(ref.get("image_id"))
        if ann is None or img is None:
            skipped["dangling_ref"] += 1
            continue
        box, size = xywh_to_xyxy(ann.get("bbox")), (img["width"], img["height"])
        reason = check_box(box, size)
        if reason:
            skipped[reason] += len(ref.get("sentences", []))
            continue
        src = image_dir / img["file_name"]
        if not src.is_file():
            skipped["missing_file"] += len(ref.get("sentences", []))
            continue
        rel = placer.place(src)
        for k, sent in enumerate(ref.get("sentences", [])):
            text = (
                (sent.get("sent") or sent.get("raw") or "").strip() if isinstance(sent, dict) else str(sent)
            )
            if not text:
                skipped["empty_expression"] += 1
                continue
            rec: dict[str, Any] = {
                "id": f"{name}-{ref['ref_id']}-{k}",
                "task": "grounding",
                "images": [rel],
                "prompt": user_prompt(grounding_prompt(text, coord_space, prompt_style)),
                "solution": {"box": clip_box(box, size)},
                "expression": text,
            }
            if coord_space != "pixel":
                rec["coord_space"] = coord_space
            records.append(rec)
            classes[cat_name.get(ref.get("category_id"), "object")] += 1
    return finish(out_path, records, classes, skipped)
