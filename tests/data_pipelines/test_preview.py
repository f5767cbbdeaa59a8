"""Preview contact sheets, and the synthetic chart task."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from PIL import Image

from data_pipelines.dataset import JsonlDataset
from data_pipelines.preview import contact_sheet
from data_pipelines.synthetic import write_shapes_dataset
from data_pipelines.synthetic.charts import render_code, write_chart_dataset
from data_pipelines.synthetic.video import write_video_dataset
from mmrft.cli import main


def test_preview_draws_the_model_frame_box_where_the_shape_is(tmp_path):
    path = write_shapes_dataset(tmp_path, "grounding", n=4, distractors=0)
    ds = JsonlDataset(path)
    sheet = np.asarray(contact_sheet(ds, n=4, cell=224))
    # 2 x 2 tiles of 224 x (224 + 3 caption lines of 14 px + 4) = 224 x 270, 4 px gutters
    assert sheet.shape == (4 + 2 * 274, 4 + 2 * 228, 3)
    # tile 0 starts at (4, 4); 112 px images scale by 2 into 224 px cells: box edge x1 -> 4 + 2 * x1
    x1, y1, x2, y2 = ds[0].solution["box"]
    top = sheet[4 + int(2 * y1), 4 + int(2 * x1) : 4 + int(2 * x2) - 1]
    assert (top == (255, 0, 255)).all(axis=1).mean() > 0.9  # the magenta outline runs along the box top


def test_cli_preview_writes_a_png_for_images_and_videos(tmp_path, capsys):
    shapes = write_shapes_dataset(tmp_path, "detection", n=5)
    out = tmp_path / "sheet.png"
    assert main(["data", "preview", str(shapes), "--n", "4", "--out", str(out), "--cell", "128"]) == 0
    assert Image.open(out).size == (4 + 2 * 132, 4 + 2 * (128 + 46 + 4))
    assert "wrote" in capsys.readouterr().out
    video = write_video_dataset(tmp_path, "temporal_grounding", n=2, min_duration=4, max_duration=4)
    assert main(["data", "preview", str(video), "--video-min-pixels", "12544"]) == 0
    assert Image.open(video.with_suffix(".preview.png")).size[0] > 100
    assert main(["data", "preview", str(tmp_path / "missing.jsonl")]) == 1


def test_synthetic_charts_are_rendered_from_their_code(tmp_path):
    path = write_chart_dataset(tmp_path / "a", n=3, seed=1)
    write_chart_dataset(tmp_path / "b", n=3, seed=1)
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    for r in recs:
        a = (tmp_path / "a" / r["images"][0]).read_bytes()
        assert a == (tmp_path / "b" / r["images"][0]).read_bytes()  # byte-identical for one seed
        render_code(r["solution"]["code"], tmp_path / "again.png")  # the stored code draws the stored image
        assert hashlib.sha256((tmp_path / "again.png").read_bytes()).digest() == hashlib.sha256(a).digest()
        assert Image.open(tmp_path / "a" / r["images"][0]).size == (256, 192)
    assert {r["meta"]["kind"] for r in recs} <= {"bar", "line", "scatter"}
    assert JsonlDataset(path)[0].task == "chart_to_code"
