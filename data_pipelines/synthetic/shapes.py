"""The seeded synthetic shapes tasks: classification, counting, grounding and detection.

``write_shapes_dataset`` writes PNG images and one JSONL file of records in the DESIGN schema.
Deterministic: the same arguments give byte-identical files. Record ``i`` draws from its own random
stream, seeded by (seed, task, split, i), so splits with the same seed differ, and the first ``k``
records do not depend on ``n``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data_pipelines.io import write_jsonl
from data_pipelines.prompts import BOX_FORM, PROMPT_STYLES, answer_instruction, coord_sentence, none_sentence
from data_pipelines.synthetic.draw import COLORS, SHAPES, background, draw_shape, place_boxes

SHAPE_TASKS = ("classification", "counting", "grounding", "detection")
CLASSIFICATION_QUESTIONS = ("shape", "color")
COMBOS = ("all", "seen", "unseen")
# Default shape side as a fraction of the canvas, per task: large for one shape, smaller for several.
_SIZE_FRAC = {
    "classification": (0.35, 0.7),
    "grounding": (0.2, 0.4),
    "counting": (0.14, 0.24),
    "detection": (0.14, 0.26),
}


def plural(shape: str) -> str:
    return shape + "s"


def record_rng(seed: int, task: str, split: str, i: int) -> np.random.Generator:
    """Record ``i``'s own generator: the same (seed, task, split, i) always draws the same record."""
    key = [seed, zlib.crc32(task.encode()), zlib.crc32(split.encode()), i]
    return np.random.default_rng(np.random.SeedSequence(key))


def pick(rng: np.random.Generator, items: Sequence[str]) -> str:
    """One of ``items``, uniformly."""
    return items[int(rng.integers(len(items)))]


def is_unseen_pair(shape: str, color: str, shapes: Sequence[str], colors: Sequence[str]) -> bool:
    """The (shape, colour) pairs a ``combos="seen"`` split never draws and ``"unseen"`` asks about: a
    third of them, ``(shape index + colour index) % 3 == 0``, so every shape and every colour still
    appears in the seen pairs (with 3 shapes and 6 colours: 6 of the 18 pairs)."""
    return (list(shapes).index(shape) + list(colors).index(color)) % 3 == 0


def _pick_color(rng, shape: str, shapes, colors, want: str) -> str:
    """A colour for ``shape``: any (``want="all"``, one draw: the stream of a split without combos is
    unchanged), a seen pair's or an unseen pair's (redrawn until it is one)."""
    while True:
        color = pick(rng, colors)
        if want == "all" or is_unseen_pair(shape, color, shapes, colors) == (want == "unseen"):
            return color


def make_shapes_record(
    i: int,
    task: str,
    rng: np.random.Generator,
    image_size: int,
    shapes: Sequence[str],
    colors: Sequence[str],
    size_frac: tuple[float, float],
    background_kind: str,
    max_count: int,
    distractors: int,
    empty_frac: float,
    prompt_style: str,
    coord_space: str,
    question: str = "shape",
    combos: str = "all",
):
    """(image, question text, solution, objects) for record ``i``; objects lists every drawn shape.

    question: for classification, ask for the shape (label set ``shapes``) or its colour (``colors``).
    combos: ``all`` (any shape/colour pair), ``seen`` (no shape is drawn in an unseen pair, see
    ``is_unseen_pair``) or ``unseen`` (the shapes asked about are drawn in unseen pairs, others in any).
    """
    lo = max(4, int(round(size_frac[0] * image_size)))
    hi = max(lo, int(round(size_frac[1] * image_size)))
    target = pick(rng, shapes)
    others = [s for s in shapes if s != target] or list(shapes)
    other_want = "seen" if combos == "seen" else "all"

    def tgt() -> tuple[str, str]:
        return target, _pick_color(rng, target, shapes, colors, combos)

    def other(pool: Sequence[str]) -> tuple[str, str]:
        shape = pick(rng, pool)
        return shape, _pick_color(rng, shape, shapes, colors, other_want)

    if task == "classification":
        kinds = [tgt()]
    elif task == "counting":
        k = int(rng.integers(1, max_count + 1))
        n_d = int(rng.integers(0, distractors + 1))
        kinds = [tgt() for _ in range(k)]
        kinds += [other(others) for _ in range(n_d)]
    elif task == "grounding":
        _, target_color = tgt()
        n_d = int(rng.integers(0, distractors + 1))
        kinds = [(target, target_color)]
        while len(kinds) < 1 + n_d:
            cand = other(shapes)
            if cand != (target, target_color):
                kinds.append(cand)
    elif task == "detection":
        k = 0 if rng.random() < empty_frac else int(rng.integers(1, max_count + 1))
        n_d = int(rng.integers(0 if k else 1, distractors + 1)) if len(shapes) > 1 else 0
        kinds = [tgt() for _ in range(k)]
        kinds += [other(others) for _ in range(n_d)]
    else:
        raise ValueError(f"task must be one of {SHAPE_TASKS}, got {task!r}")
    order = rng.permutation(len(kinds))
    kinds = [kinds[j] for j in order]
    image = background(image_size, background_kind, rng)
    objects = []
    for (shape, color), (x0, y0, s) in zip(kinds, place_boxes(rng, len(kinds), image_size, lo, hi)):
        objects.append({"shape": shape, "color": color, "box": draw_shape(image, shape, color, x0, y0, s)})

    if task == "classification" and question == "color":
        color = objects[0]["color"]
        question = f"What colour is the shape? Choose from: {', '.join(colors)}."
        solution = {"label": color, "choices": list(colors)}
        form = "colour"
    elif task == "classification":
        question = f"What shape is in the image? Choose from: {', '.join(shapes)}."
        solution = {"label": target, "choices": list(shapes)}
        form = "shape"
    elif task == "counting":
        question = f"How many {plural(target)} are in the image?"
        solution = {"count": sum(o["shape"] == target for o in objects)}
        form = "number"
    elif task == "grounding":
        # with combos the target's own colour; without, the colour of the first shape of the target's
        # kind, as the splits were always written (a same-shape distractor can be the one asked about)
        color = target_color if combos != "all" else next(c for s, c in kinds if s == target)
        question = f"Find the {color} {target} in the image. {coord_sentence(coord_space)}"
        box = next(o["box"] for o in objects if (o["shape"], o["color"]) == (target, color))
        solution = {"box": box}
        form = BOX_FORM
    else:
        question = f"Detect every {target} in the image. {coord_sentence(coord_space)}"
        hits = [o for o in objects if o["shape"] == target]
        solution = {"boxes": [o["box"] for o in hits], "labels": [target] * len(hits)}
        form = f'[{{"bbox_2d": [x1, y1, x2, y2], "label": "{target}"}}, ...]'
    text = f"{question} {answer_instruction(form, prompt_style)}"
    if task == "detection":
        text += " " + none_sentence(prompt_style)
    return image, text, solution, objects


def write_shapes_dataset(
    out_dir: str | os.PathLike,
    task: str = "classification",
    n: int = 1000,
    seed: int = 0,
    image_size: int = 112,
    prompt_style: str = "answer_only",
    split: str = "train",
    shapes: Sequence[str] = ("circle", "square", "triangle"),
    colors: Sequence[str] = ("red", "green", "blue", "yellow", "purple", "orange"),
    min_size_frac: float | None = None,
    max_size_frac: float | None = None,
    background: str = "plain",
    max_count: int = 5,
    distractors: int | None = None,
    empty_frac: float = 0.2,
    coord_space: str = "pixel",
    question: str = "shape",
    combos: str = "all",
) -> Path:
    """Write ``n`` shapes records of ``task``; returns the JSONL path ``out_dir/{task}_{split}.jsonl``.

    Images go to ``out_dir/images/{task}_{split}/{i:05d}.png`` (paths in records are relative).
    task: classification (one shape, closed label set), counting (1..max_count of one shape), grounding
    (the box of one named shape+colour), detection (every box of one shape; ``empty_frac`` of the
    records have none: the "no objects" case). distractors: at most this many shapes of other kinds
    (default 0 for counting, 2 for grounding and detection). min/max_size_frac: shape side as a
    fraction of ``image_size`` (defaults per task, large enough for a tiny model at 112 px).
    background: ``plain`` (white) or ``noise``. question: classification asks for the ``shape``
    (default) or the ``color`` of the one shape. combos: ``all`` shape/colour pairs, only ``seen`` ones,
    or ask about ``unseen`` ones (a shifted split: see ``is_unseen_pair``).
    """
    if question not in CLASSIFICATION_QUESTIONS:
        raise ValueError(f"question must be one of {CLASSIFICATION_QUESTIONS}, got {question!r}")
    if combos not in COMBOS:
        raise ValueError(f"combos must be one of {COMBOS}, got {combos!r}")
    if task not in SHAPE_TASKS:
        raise ValueError(f"task must be one of {SHAPE_TASKS}, got {task!r}")
    if prompt_style not in PROMPT_STYLES:
        raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    unknown = [s for s in shapes if s not in SHAPES] + [c for c in colors if c not in COLORS]
    if unknown or not shapes or not colors:
        raise ValueError(
            f"unknown or missing shapes/colors {unknown}; shapes: {SHAPES}, colors: {tuple(COLORS)}"
        )
    if combos != "all" and not all(
        {is_unseen_pair(s, c, shapes, colors) for c in colors} == {True, False} for s in shapes
    ):
        raise ValueError(f"combos={combos!r} needs every shape in a seen and an unseen pair; use 3+ colours")
    if n < 0 or image_size < 16:
        raise ValueError(f"need n >= 0 and image_size >= 16, got n={n}, image_size={image_size}")
    coord_sentence(coord_space)
    lo_frac, hi_frac = _SIZE_FRAC[task]
    size_frac = (min_size_frac if min_size_frac is not None else lo_frac, max_size_frac or hi_frac)
    if not 0 < size_frac[0] <= size_frac[1] <= 1:
        raise ValueError(f"need 0 < min_size_frac <= max_size_frac <= 1, got {size_frac}")
    if distractors is None:
        distractors = 0 if task in ("counting", "classification") else 2

    out_dir = Path(out_dir)
    name = f"{task}_{split}"
    img_dir = out_dir / "images" / name
    img_dir.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    for i in range(n):
        rng = record_rng(seed, task, split, i)
        image, text, solution, objects = make_shapes_record(
            i, task, rng, image_size, shapes, colors, size_frac, background,
            max_count, distractors, empty_frac, prompt_style, coord_space, question, combos,
        )  # fmt: skip
        rel = f"images/{name}/{i:05d}.png"
        image.save(out_dir / rel, format="PNG", compress_level=1)
        rec: dict[str, Any] = {
            "id": f"shapes-{task}-{split}-{seed}-{i:05d}",
            "task": task,
            "images": [rel],
            "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            "solution": solution,
        }
        if coord_space != "pixel":
            rec["coord_space"] = coord_space
        rec["meta"] = {"source": "synthetic-shapes", "split": split, "objects": objects}
        records.append(rec)
    path = out_dir / f"{name}.jsonl"
    write_jsonl(path, records)
    return path
