"""Temporal grounding annotations -> records with segments in seconds.

- Charades-STA: text lines ``VIDEO_ID START END##sentence`` (times in seconds); videos are
  ``VIDEO_DIR/VIDEO_ID.mp4`` (or another common suffix).
- ActivityNet Captions: json ``{video_id: {"duration": s, "timestamps": [[s, e], ...], "sentences": [...]}}``.

Durations come from the annotation (ActivityNet) or from the video's header (Charades, read with PyAV).
A segment past the end by at most ``tolerance`` seconds is clipped; further, reversed or empty ones are
skipped with a reason, and so are rows whose start, end or duration is not a finite number of seconds
(``bad_type``: not a number; ``non_finite``: NaN or infinite).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from data_pipelines.converters.common import ConvertResult, MediaPlacer, finish, output_path
from data_pipelines.geometry import is_finite_number
from data_pipelines.prompts import answer_instruction, user_prompt

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FORMATS = ("charades", "activitynet")


def temporal_prompt(sentence: str, prompt_style: str) -> str:
    return (
        f'Find the moment this sentence describes: "{sentence}". Give its start and end time in seconds. '
        f"{answer_instruction('start to end', prompt_style)}"
    )


def _find_video(video_dir: Path, vid: str) -> Path | None:
    for suffix in ("", *VIDEO_SUFFIXES):
        p = video_dir / f"{vid}{suffix}"
        if p.is_file():
            return p
    return None


def _probe_duration(path: Path) -> float | None:
    from data_pipelines.video import probe_pyav

    try:
        return probe_pyav(path)[2]
    except Exception:  # an unreadable video is counted by the caller
        return None


def _seconds(value: Any) -> float | None:
    """A time as written (number or numeric string) as a float; None when it is not a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _parse_charades(path: Path) -> list[tuple[str, float | None, float | None, str, float | None]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            head, sep, sentence = line.rstrip("\n").partition("##")
            parts = head.split()
            if not sep or len(parts) != 3:
                raise ValueError(
                    f"{path}:{lineno}: expected 'VIDEO_ID START END##sentence', got {line.strip()!r}"
                )
            rows.append((parts[0], _seconds(parts[1]), _seconds(parts[2]), sentence.strip(), None))
    return rows


def _parse_activitynet(path: Path) -> list[tuple[str, float | None, float | None, str, float | None]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = []
    for vid, ann in sorted(data.items()):
        duration = _seconds(ann["duration"])
        for pair, sentence in zip(ann["timestamps"], ann["sentences"]):
            start, end = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, None)
            dur = duration if duration is not None else -1.0  # not a number: a bad (non-positive) duration
            rows.append((vid, _seconds(start), _seconds(end), str(sentence).strip(), dur))
    return rows


def convert_temporal(
    annotations: str | os.PathLike,
    video_dir: str | os.PathLike,
    out: str | os.PathLike,
    fmt: str | None = None,
    prompt_style: str = "think_answer",
    fps: float | None = None,
    max_frames: int | None = None,
    tolerance: float = 1.0,
    media: str = "link",
    name: str | None = None,
) -> ConvertResult:
    """Convert Charades-STA or ActivityNet Captions (``fmt`` guessed from the suffix: .json = activitynet).

    fps / max_frames: written into each record's ``video`` entry (how the loader samples it).
    """
    annotations, video_dir = Path(annotations), Path(video_dir)
    fmt = fmt or ("activitynet" if annotations.suffix == ".json" else "charades")
    if fmt not in FORMATS:
        raise ValueError(f"temporal format must be one of {FORMATS}, got {fmt!r}")
    rows = _parse_charades(annotations) if fmt == "charades" else _parse_activitynet(annotations)
    name = name or annotations.stem
    out_path, out_dir = output_path(out, f"{name}.jsonl")
    placer = MediaPlacer(out_dir, f"videos/{name}", media)
    skipped: Counter[str] = Counter()
    durations: dict[str, float | None] = {}
    records: list[dict[str, Any]] = []
    per_video: Counter[str] = Counter()
    for vid, start, end, sentence, duration in rows:
        if start is None or end is None:
            skipped["bad_type"] += 1
            continue
        if not all(is_finite_number(v) for v in (start, end, duration) if v is not None):
            skipped["non_finite"] += 1
            continue
        if duration is not None and duration <= 0:
            skipped["bad_type"] += 1
            continue
        src = _find_video(video_dir, vid)
        if src is None:
            skipped["missing_file"] += 1
            continue
        if duration is None:
            if vid not in durations:
                durations[vid] = _probe_duration(src)
            duration = durations[vid]
            if duration is None:
                skipped["corrupt_video"] += 1
                continue
        if not sentence:
            skipped["empty_label"] += 1
            continue
        if not 0 <= start < end:
            skipped["segment_reversed"] += 1
            continue
        if end > duration + tolerance:
            skipped["segment_outside_video"] += 1
            continue
        end = min(end, duration)
        if start >= end:
            skipped["segment_outside_video"] += 1
            continue
        video: dict[str, Any] = {"path": placer.place(src)}
        if fps is not None:
            video["fps"] = fps
        if max_frames is not None:
            video["max_frames"] = max_frames
        records.append(
            {
                "id": f"{name}-{vid}-{per_video[vid]}",
                "task": "temporal_grounding",
                "video": video,
                "prompt": user_prompt(temporal_prompt(sentence, prompt_style), n_images=0, video=True),
                "solution": {"segment": [start, end], "duration": duration},
                "sentence": sentence,
            }
        )
        per_video[vid] += 1
    return finish(out_path, records, Counter(), skipped)
