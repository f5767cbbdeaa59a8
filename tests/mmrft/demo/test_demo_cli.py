"""`mmrft demo` on the command line (one-line errors before anything heavy loads), and the bundled
examples: made by the project's synthetic tasks, reproduced exactly by `make_examples`."""

import importlib.util
import json

import numpy as np
import pytest
from PIL import Image

from mmrft.cli import build_parser, main
from mmrft.demo.examples import ASSETS, load_examples, make_examples


def test_demo_is_a_subcommand_with_loopback_default():
    args = build_parser().parse_args(["demo", "--model", "m"])
    assert (args.host, args.port, args.share, args.base, args.run) == ("127.0.0.1", None, False, None, None)


def test_without_gradio_it_says_which_extra_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a)
    )
    assert main(["demo", "--model", "anything"]) == 1
    assert capsys.readouterr().err == "mmrft demo: error: gradio is not installed: pip install -e '.[demo]'\n"


def test_bad_flags_fail_with_one_line(tmp_path, capsys, tiny_model_dir):
    pytest.importorskip("gradio", reason="these checks come after the gradio check")
    cases = [
        (["--model", str(tmp_path / "none")], f"--model: '{tmp_path / 'none'}': no config.json there"),
        (["--model", str(tiny_model_dir), "--base", str(tmp_path)], "--base: "),
        (["--model", str(tiny_model_dir), "--port", "70000"], "--port: must be 1..65535, got 70000"),
        (["--model", str(tiny_model_dir), "--config", str(tmp_path / "x.yaml")], "does not exist"),
        (["--model", str(tiny_model_dir), "--max-megapixels", "0"], "--max-megapixels: must be > 0"),
    ]
    for argv, message in cases:
        assert main(["demo", *argv]) == 1
        err = capsys.readouterr().err
        assert err.startswith("mmrft demo: error: ") and message in err and err.count("\n") == 1, err


def test_bundled_examples_are_what_make_examples_writes(tmp_path):
    made = make_examples(tmp_path)
    assert json.loads((tmp_path / "examples.json").read_text()) == json.loads(
        (ASSETS / "examples.json").read_text()
    )
    assert [e.file for e in load_examples()] == [e.file for e in made]
    for e in made:
        if (
            e.file.endswith(".png") and e.task != "chart_to_code"
        ):  # shapes: same pixels (charts: fonts may differ)
            assert np.array_equal(
                np.asarray(Image.open(tmp_path / e.file)), np.asarray(Image.open(ASSETS / e.file))
            )
        assert (ASSETS / e.file).stat().st_size < 64_000  # small files only
    det = made[0]
    boxes = [b["bbox_2d"] for b in json.loads(det.truth)]
    assert det.task == "detection" and len(boxes) == 3  # three triangles, among other shapes
