"""What an evaluation writes and prints: eval.json, predictions.jsonl, eval.md; comparing two runs; and
reading a predictions file made elsewhere.

- ``eval.json``: every metric, the model, data file, decoding settings and record counts, and every
  record that could not be scored (id, status, error).
- ``predictions.jsonl``: one line per record in file order: id, task, status, completion(s), the
  parsed answers in original coordinates, per-completion scores (rewards, pass, task values).
- ``eval.md``: the table that is printed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_pipelines.tasks import TASKS
from mmrft.evaluation.metrics import LOWER_IS_BETTER
from mmrft.evaluation.records import RecordResult
from rewards.columns import completion_text

COUNT_KEYS = ("n", "MAE_records", "unknown_label_boxes", "unlabeled_boxes", "invalid_boxes")


@dataclass
class EvalReport:
    """metrics: the flat metrics dict (what the trainer logs as ``eval/*``); results: every record's
    result in file order; decoding, records (counts) and meta (model, data, ...) go to eval.json."""

    metrics: dict[str, float | None]
    results: list[RecordResult]
    decoding: dict[str, Any]
    records: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        failures = [
            {"id": r.id, "status": r.status, "error": r.error} for r in self.results if r.status != "ok"
        ]
        return {**self.meta, "decoding": self.decoding, "records": self.records, "metrics": self.metrics,
                "failures": failures}  # fmt: skip

    def write(self, out_dir: str | Path) -> Path:
        """Write eval.json, predictions.jsonl and eval.md into ``out_dir`` (created); returns it."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        with open(out / "predictions.jsonl", "w") as f:
            for r in self.results:
                f.write(json.dumps(r.to_json(), default=str) + "\n")
        (out / "eval.md").write_text(self.table() + "\n")
        return out

    def table(self) -> str:
        return render_table(self.to_json())


def _fmt(key: str, v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float) and not math.isfinite(v):
        return "n/a"
    if key.rsplit("/", 1)[-1] in COUNT_KEYS:
        return str(int(v))
    return f"{v:.4f}"


def _sections(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Keys grouped: overall first, then by task in the registry's order."""
    overall = [k for k in keys if k.split("/", 1)[0] not in TASKS]
    out = [("all records", overall)]
    for task in TASKS:
        mine = [k for k in keys if k.split("/", 1)[0] == task]
        if mine:
            out.append((task, mine))
    return out


def _decoding_line(d: dict[str, Any]) -> str:
    if not d or d.get("mode") == "external":
        return f"decoding: made elsewhere, not recorded (k {d.get('k', 1)})"
    parts = [d.get("mode", "?"), f"temperature {d.get('temperature')}", f"k {d.get('k')}"]
    if d.get("mode") == "sampled":
        parts += [f"top_p {d.get('top_p')}", f"top_k {d.get('top_k')}"]
    parts += [f"max_new_tokens {d.get('max_new_tokens')}", f"seed {d.get('seed')}"]
    return "decoding: " + ", ".join(str(p) for p in parts)


def render_table(ev: dict[str, Any]) -> str:
    """The Markdown table of one eval.json."""
    rec = ev.get("records", {})
    lines = [
        "# mmrft eval",
        "",
        f"model: {ev.get('model') or '-'}  ",
        f"data: {ev.get('data')}  ",
    ]
    if ev.get("predictions"):
        lines.append(f"predictions: {ev['predictions']}  ")
    lines.append(_decoding_line(ev.get("decoding") or {}) + "  ")
    counts = ", ".join(f"{k} {v}" for k, v in rec.items() if isinstance(v, int) and k != "evaluated")
    lines += [f"records: {rec.get('evaluated')} evaluated ({counts})", ""]
    metrics = ev.get("metrics", {})
    lines += ["| metric | value |", "|---|---|"]
    for title, keys in _sections(list(metrics)):
        lines.append(f"| **{title}** | |")
        lines += [f"| {k} | {_fmt(k, metrics[k])} |" for k in keys]
    return "\n".join(lines)


def load_eval(path: str | Path) -> dict[str, Any]:
    """eval.json of a run directory (or the file itself)."""
    p = Path(path)
    p = p / "eval.json" if p.is_dir() else p
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no eval.json here; give a directory written by `mmrft eval --out`")
    return json.loads(p.read_text())


def compare(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """Two eval.json side by side, per metric, with B - A (a `+` marks the better side's gain)."""
    ma, mb = a.get("metrics", {}), b.get("metrics", {})
    keys = list(dict.fromkeys([*ma, *mb]))
    lines = [f"A: {name_a}", f"B: {name_b}"]
    for label, ev in (("A", a), ("B", b)):
        lines.append(f"{label} {_decoding_line(ev.get('decoding') or {})}; data {ev.get('data')}")
    if (a.get("decoding") or {}) != (b.get("decoding") or {}):
        lines.append("note: the decoding settings differ, so the numbers are not directly comparable")
    if a.get("data") != b.get("data"):
        lines.append("note: the two runs scored different data files")
    lines += ["", "| metric | A | B | B - A |", "|---|---|---|---|"]
    for title, group in _sections(keys):
        lines.append(f"| **{title}** | | | |")
        for k in group:
            va, vb = ma.get(k), mb.get(k)
            diff = ""
            if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
                d = vb - va
                better = d < 0 if k.rsplit("/", 1)[-1] in LOWER_IS_BETTER else d > 0
                diff = f"{d:+.4f}" + (
                    " (better)" if better and abs(d) > 1e-12 and not k.endswith("/n") else ""
                )
            lines.append(f"| {k} | {_fmt(k, va)} | {_fmt(k, vb)} | {diff} |")
    return "\n".join(lines)


def read_predictions(path: str | Path) -> tuple[dict[str, list[str]], int]:
    """``{id: [completion, ...]}`` from a JSONL of ``{"id", "completion"}`` or ``{"id", "completions"}``
    lines, and the largest number of completions a line has. Bad lines raise one-line errors naming
    ``FILE:LINE``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"predictions file not found: {p}")
    out: dict[str, list[str]] = {}
    with open(p, encoding="utf-8") as f:
        for lineno, text in enumerate(f, start=1):
            if not text.strip():
                continue
            where = f"{p}:{lineno}"
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict) or row.get("id") is None:
                raise ValueError(f'{where}: expected {{"id": ..., "completion": "..."}}')
            rid = str(row["id"])
            if "completions" in row:
                comps = row["completions"]
                if not isinstance(comps, list) or not comps:
                    raise ValueError(f"{where}: id {rid!r}: 'completions' must be a non-empty list")
            elif "completion" in row:
                comps = [row["completion"]]
            else:
                raise ValueError(
                    f"{where}: id {rid!r}: needs 'completion' (a string) or 'completions' (a list)"
                )
            if rid in out:
                raise ValueError(f"{where}: id {rid!r} appears twice")
            out[rid] = [completion_text(c) for c in comps]
    return out, max((len(v) for v in out.values()), default=1)
