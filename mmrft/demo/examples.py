"""The bundled examples (``assets/demo``), made by the project's own synthetic tasks.

``make_examples(out_dir)`` writes a shapes image for detection, grounding and counting, a short
synthetic video for temporal grounding and a chart rendered from its code, each with its ground truth in
the ORIGINAL frame, listed in ``examples.json``. Deterministic (seeded); ``scripts/make_demo_assets.py``
runs it. ``load_examples`` reads the list back for the Try tab.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets" / "demo"  # in a checkout (editable install)


@dataclass
class Example:
    """One bundled example: the file (relative to the examples folder), the Try inputs, its truth."""

    name: str
    file: str
    task: str
    target: str
    truth: str


def _first(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


def make_examples(out_dir: str | Path) -> list[Example]:
    """Write the example files and ``examples.json`` into ``out_dir``; return the examples."""
    from data_pipelines.synthetic import write_shapes_dataset
    from data_pipelines.synthetic.charts import write_chart_dataset
    from data_pipelines.synthetic.video import write_video_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples: list[Example] = []
    with tempfile.TemporaryDirectory(prefix="mmrft-demo-examples-") as tmp:
        t = Path(tmp)
        # 250 px is not a multiple of 28: the model sees 252 px, and answers are drawn back at 250
        det = _first(write_shapes_dataset(t, task="detection", n=1, seed=3, image_size=250, split="demo",
                                          empty_frac=0.0, max_count=3))  # fmt: skip
        target = det["solution"]["labels"][0]
        shutil.copy(t / det["images"][0], out / "shapes_detection.png")
        truth = [
            {"bbox_2d": b, "label": lab}
            for b, lab in zip(det["solution"]["boxes"], det["solution"]["labels"])
        ]
        examples.append(
            Example("detect shapes", "shapes_detection.png", "detection", target, json.dumps(truth))
        )

        gr = _first(write_shapes_dataset(t, task="grounding", n=1, seed=5, image_size=250, split="demo"))
        shutil.copy(t / gr["images"][0], out / "shapes_grounding.png")
        box = gr["solution"]["box"]
        obj = next(o for o in gr["meta"]["objects"] if o["box"] == box)
        examples.append(Example("ground a shape", "shapes_grounding.png", "grounding",
                                f"the {obj['color']} {obj['shape']}", json.dumps(box)))  # fmt: skip

        cnt = _first(write_shapes_dataset(t, task="counting", n=1, seed=7, image_size=250, split="demo",
                                          distractors=2))  # fmt: skip
        shutil.copy(t / cnt["images"][0], out / "shapes_counting.png")
        shape = re.match(r"How many (\w+)s ", cnt["prompt"][0]["content"][1]["text"]).group(1)
        examples.append(Example("count shapes", "shapes_counting.png", "counting", shape,
                                str(cnt["solution"]["count"])))  # fmt: skip

        vid = _first(write_video_dataset(t, task="temporal_grounding", n=1, seed=1, image_size=112, fps=4,
                                         min_duration=6, max_duration=6, split="demo"))  # fmt: skip
        shutil.copy(t / vid["video"]["path"], out / "shapes_temporal.mp4")
        tg = vid["meta"]["target"]
        s, e = vid["solution"]["segment"]
        examples.append(Example("find a moment in a video", "shapes_temporal.mp4", "temporal_grounding",
                                f"the {tg['color']} {tg['shape']} is visible", f"{s:g} to {e:g}"))  # fmt: skip

        ch = _first(write_chart_dataset(t, n=1, seed=2, split="demo", kinds=("bar",)))
        shutil.copy(t / ch["images"][0], out / "chart_bar.png")
        examples.append(
            Example("chart to code", "chart_bar.png", "chart_to_code", "", ch["solution"]["code"])
        )
    (out / "examples.json").write_text(json.dumps([asdict(e) for e in examples], indent=2) + "\n")
    return examples


def load_examples(folder: str | Path = ASSETS) -> list[Example]:
    """The examples listed in ``folder/examples.json`` whose files are there ([] without the list)."""
    folder = Path(folder)
    path = folder / "examples.json"
    if not path.is_file():
        return []
    items = [Example(**d) for d in json.loads(path.read_text())]
    return [e for e in items if (folder / e.file).is_file()]
