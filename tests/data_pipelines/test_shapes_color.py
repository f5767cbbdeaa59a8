import json

import numpy as np
from PIL import Image

from data_pipelines.synthetic import write_shapes_dataset
from data_pipelines.synthetic.draw import COLORS


def test_color_question_labels_the_drawn_colour(tmp_path):
    path = write_shapes_dataset(tmp_path, task="classification", n=12, seed=3, question="color")
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        (obj,) = rec["meta"]["objects"]
        assert rec["solution"] == {"label": obj["color"], "choices": list(rec["solution"]["choices"])}
        assert "What colour is the shape?" in rec["prompt"][0]["content"][1]["text"]
        # the pixel at the centre of the shape's box has the labelled colour
        x1, y1, x2, y2 = obj["box"]
        rgb = np.asarray(Image.open(tmp_path / rec["images"][0]).convert("RGB"))[
            (y1 + y2) // 2, (x1 + x2) // 2
        ]
        assert tuple(int(v) for v in rgb) == tuple(COLORS[obj["color"]])


def test_shape_question_files_are_unchanged_by_the_option(tmp_path):
    a = write_shapes_dataset(tmp_path / "a", task="classification", n=5, seed=1)
    b = write_shapes_dataset(tmp_path / "b", task="classification", n=5, seed=1, question="shape")
    assert a.read_bytes() == b.read_bytes()
