"""Lazy datasets of records: JSONL files, or any sequence of dicts (a ``datasets.Dataset`` too).

Construction parses and schema-checks every record and checks that its files exist (cheap: no image
is opened). ``ds[i]`` opens and resizes the images (or samples the video) of record ``i`` and maps its
ground truth into the model's frame. Bad records:

- ``on_bad_record="error"``: the first bad record raises ``RecordError`` with one line
  ``FILE:LINE: record ID: problem``.
- ``on_bad_record="skip"``: bad records are counted by reason in ``ds.skipped``; a record that turns
  out bad only when loaded (corrupt image, box outside the image, an image past
  ``VisionSpec.max_image_pixels`` or with an aspect ratio past ``max_ratio``) is replaced by the next
  good one, so ``ds[i]`` always returns a Sample while any good record remains.

NaN and infinite numbers in ground truth (boxes, segments, durations, times) are record errors.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from data_pipelines.geometry import check_box, clip_box, to_model_frame
from data_pipelines.records import RecordError, check_record
from data_pipelines.sample import Sample
from data_pipelines.tasks import get_task
from data_pipelines.vision import ResizeError, VisionSpec, resize_for_model

ON_BAD_RECORD = ("error", "skip")
_CORE_KEYS = ("id", "task", "prompt", "images", "video", "solution", "coord_space")


def _drop_nones(value: Any) -> Any:
    """Remove ``None`` values from dicts, recursively (``datasets`` fills absent keys with None)."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


class RecordDataset:
    """Records in memory (dicts), loaded into ``Sample`` lazily.

    records: parsed records (DESIGN schema), e.g. a list of dicts or a ``datasets.Dataset``.
    base_dir: folder relative paths resolve against. source: name used in error messages.
    line_numbers: the 1-based line of each record in ``source`` (defaults to its position).
    """

    def __init__(
        self,
        records: Iterable[dict[str, Any]],
        base_dir: str | os.PathLike = ".",
        vision: VisionSpec | None = None,
        on_bad_record: str = "error",
        source: str = "<records>",
        line_numbers: list[int] | None = None,
    ):
        if on_bad_record not in ON_BAD_RECORD:
            raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, got {on_bad_record!r}")
        self.base_dir = Path(base_dir)
        self.vision = vision or VisionSpec()
        self.on_bad_record = on_bad_record
        self.source = source
        self.skipped: Counter[str] = Counter()
        self._records: list[dict[str, Any]] = []
        self._lines: list[int] = []
        self._bad: set[int] = set()
        seen: set[str] = set()
        for k, raw in enumerate(records):
            line = line_numbers[k] if line_numbers is not None else k + 1
            if isinstance(raw, RecordError):  # a line the reader could not parse
                self._reject(raw, line, None)
                continue
            rid = str(raw.get("id")) if isinstance(raw, dict) and raw.get("id") is not None else None
            try:
                try:
                    rec = check_record(_drop_nones(dict(raw)) if isinstance(raw, dict) else raw)
                except RecursionError:
                    raise RecordError("bad_type", "the record is nested too deeply") from None
                if rec["id"] in seen:
                    raise RecordError("duplicate_id", f"id {rec['id']!r} appears twice")
                self._check_files(rec)
            except RecordError as e:
                self._reject(e, line, rid)
                continue
            seen.add(rec["id"])
            self._records.append(rec)
            self._lines.append(line)

    # ---- errors -------------------------------------------------------------------------------
    def _where(self, line: int, rid: str | None) -> str:
        return f"{self.source}:{line}: record {rid!r}" if rid is not None else f"{self.source}:{line}"

    def _reject(self, err: RecordError, line: int, rid: str | None) -> None:
        if self.on_bad_record == "error":
            raise RecordError(err.reason, f"{self._where(line, rid)}: {err.message}") from None
        self.skipped[err.reason] += 1

    def location(self, j: int) -> str:
        """``FILE:LINE: record ID`` of record ``j``, the prefix of its error messages."""
        return self._where(self._lines[j], self._records[j]["id"])

    def resolve(self, path: str) -> Path:
        """``path`` made absolute against the dataset's folder (absolute paths stay as they are)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def _check_files(self, rec: dict[str, Any]) -> None:
        paths = list(rec["images"]) + ([rec["video"]["path"]] if rec["video"] else [])
        for p in paths:
            if not self.resolve(p).is_file():
                raise RecordError("missing_file", f"file not found: {self.resolve(p)}")

    # ---- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The checked records, as dicts (paths as written in the file)."""
        return self._records

    def __getitem__(self, i: int) -> Sample:
        n = len(self._records)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for a dataset of {n} records")
        i %= n
        for k in range(n):
            j = (i + k) % n
            if j in self._bad:
                continue
            try:
                return self.load(j)
            except RecordError as e:
                where = self.location(j)
                if self.on_bad_record == "error":
                    raise RecordError(e.reason, f"{where}: {e.message}") from None
                self._bad.add(j)
                self.skipped[e.reason] += 1
        raise RecordError("no_good_records", f"{self.source}: every record is bad: {dict(self.skipped)}")

    def __iter__(self):
        for i in range(len(self)):
            if i not in self._bad:
                sample = self[i]
                if sample.id == self._records[i]["id"]:
                    yield sample

    def check_all(self) -> Counter[str]:
        """Load every record once (skip mode counts the bad ones; error mode raises at the first)."""
        for _ in self:
            pass
        return self.skipped

    def skipped_summary(self) -> str:
        """One line: how many records were skipped, by reason."""
        total = sum(self.skipped.values())
        if not total:
            return "skipped 0 records"
        reasons = ", ".join(f"{r} {c}" for r, c in self.skipped.most_common())
        return f"skipped {total} record(s): {reasons}"

    # ---- loading one record -------------------------------------------------------------------
    def load(self, j: int) -> Sample:
        """Open, resize and map record ``j``; raises ``RecordError`` (without location) when bad."""
        rec = self._records[j]
        images, scales, sizes = [], [], []
        for p in rec["images"]:
            path = self.resolve(p)
            image, size = self._open_image(path, self.vision.max_image_pixels)
            try:
                image, scale = resize_for_model(image, self.vision)
            except ResizeError as e:
                raise RecordError(e.reason, f"image {path}: {e}") from None
            except (OSError, ValueError) as e:  # a mode PIL cannot convert to RGB
                raise RecordError("corrupt_image", f"cannot convert image {path} to RGB: {e}") from None
            images.append(image)
            scales.append(scale)
            sizes.append(size)
        clip = None
        if rec["video"]:
            from data_pipelines.video import load_video

            clip = load_video(self.resolve(rec["video"]["path"]), self.vision, rec["video"])
        spec = get_task(rec["task"])
        solution = dict(rec["solution"])
        for key in spec.path_keys:
            if solution.get(key) is not None:
                solution[key] = str(self.resolve(solution[key]))
        if spec.per_frame_boxes and clip is not None:
            solution = _boxes_at_sampled_frames(solution, clip.timestamps)
        original = dict(solution)
        if clip is not None:
            ref_scale, ref_size = clip.scale, clip.original_size
        elif images:
            ref_scale, ref_size = scales[0], sizes[0]
        else:
            ref_scale, ref_size = None, None
        solution = self._checked_boxes(solution, ref_size)
        if ref_scale is not None:
            solution = to_model_frame(solution, ref_scale, ref_size, rec["coord_space"])
        elif any(k in solution for k in ("box", "boxes")):
            raise RecordError("missing_field", "the solution has boxes but the record has no image or video")
        return Sample(
            id=rec["id"],
            task=rec["task"],
            prompt=rec["prompt"],
            images=images,
            video=clip,
            solution=solution,
            solution_original=original,
            scales=scales,
            coord_space=rec["coord_space"],
            columns={k: v for k, v in rec.items() if k not in _CORE_KEYS},
            original_sizes=sizes,
        )

    @staticmethod
    def _open_image(path: Path, max_pixels: int) -> tuple[Image.Image, tuple[int, int]]:
        """Decode an image, refusing (before decoding) one of more than ``max_pixels`` pixels."""
        try:
            with warnings.catch_warnings():  # PIL warns past 89 M pixels; the budget below decides
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(path)
            with opened as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise RecordError(
                        "image_too_large",
                        f"image {path} is {w}x{h} = {w * h:,} pixels, over the budget of {max_pixels:,} "
                        "(VisionSpec.max_image_pixels); downscale it first",
                    )
                im.load()
                image = im.copy()
        except RecordError:
            raise
        except FileNotFoundError:
            raise RecordError("missing_file", f"file not found: {path}") from None
        except Image.DecompressionBombError as e:  # past twice PIL's limit: refused while opening
            raise RecordError("image_too_large", f"image {path} is too large to decode: {e}") from None
        except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
            raise RecordError("corrupt_image", f"cannot read image {path}: {e}") from None
        return image, image.size

    @staticmethod
    def _checked_boxes(solution: dict[str, Any], size: tuple[int, int] | None) -> dict[str, Any]:
        if size is None:
            return solution
        out = dict(solution)
        if out.get("box") is not None:
            reason = check_box(out["box"], size)
            if reason:
                raise RecordError(
                    reason, f"solution.box {out['box']} does not fit the {size[0]}x{size[1]} image"
                )
            out["box"] = clip_box(out["box"], size)
        if out.get("boxes") is not None:
            for k, box in enumerate(out["boxes"]):
                reason = None if box is None else check_box(box, size)
                if reason:
                    raise RecordError(
                        reason, f"solution.boxes[{k}] {box} does not fit the {size[0]}x{size[1]} image"
                    )
            out["boxes"] = [None if b is None else clip_box(b, size) for b in out["boxes"]]
        return out


def _boxes_at_sampled_frames(solution: dict[str, Any], timestamps: list[float]) -> dict[str, Any]:
    """Tracking ground truth for the sampled frames: with ``times``, the box nearest in time to each
    sampled frame (``times`` becomes the sampled timestamps); without, the boxes must already be one
    per sampled frame."""
    boxes, times = solution["boxes"], solution.get("times")
    if times is None:
        if len(boxes) != len(timestamps):
            raise RecordError(
                "length_mismatch",
                f"solution.boxes has {len(boxes)} boxes but {len(timestamps)} frames are sampled; "
                "give solution.times (seconds of each box) or set video.max_frames to match",
            )
        return solution
    out = dict(solution)
    nearest = [min(range(len(times)), key=lambda k: abs(times[k] - t)) for t in timestamps]
    out["boxes"] = [boxes[k] for k in nearest]
    out["times"] = [float(t) for t in timestamps]
    return out


def read_jsonl(path: str | os.PathLike) -> tuple[list[Any], list[int]]:
    """Records of a JSONL file and their 1-based line numbers; a line that is not a JSON object becomes
    a ``RecordError`` entry (the dataset reports or skips it). Blank lines are ignored."""
    records: list[Any] = []
    lines: list[int] = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                records.append(RecordError("bad_json", f"not valid UTF-8 (byte {e.start + 1})"))
                lines.append(lineno)
                continue
            if not text.strip():
                continue
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as e:
                rec = RecordError("bad_json", f"not valid JSON ({e.msg} at column {e.colno})")
            except (ValueError, RecursionError) as e:  # an integer of > 4300 digits, deep nesting
                rec = RecordError("bad_json", f"not usable JSON ({type(e).__name__}: {str(e)[:80]})")
            records.append(rec)
            lines.append(lineno)
    return records, lines


class JsonlDataset(RecordDataset):
    """A JSONL file of records (DESIGN schema); relative paths resolve against the file's folder."""

    def __init__(
        self, path: str | os.PathLike, vision: VisionSpec | None = None, on_bad_record: str = "error"
    ):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file not found: {path}")
        records, lines = read_jsonl(path)
        self.path = path
        super().__init__(records, path.parent, vision, on_bad_record, str(path), lines)
