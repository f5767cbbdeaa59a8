"""``mmrft sandbox render`` and ``mmrft sandbox selftest`` through the CLI dispatcher."""

from __future__ import annotations

from PIL import Image

from mmrft.cli import main


def test_render_writes_the_png_and_reports_failures(tmp_path, capsys):
    script = tmp_path / "chart.py"
    script.write_text("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nprint('drawn')\n")
    out = tmp_path / "chart.png"
    assert (
        main(["sandbox", "render", str(script), "-o", str(out), "--timeout", "3", "--memory-mb", "512"]) == 0
    )
    assert Image.open(out).size == (320, 240)  # the default render size
    assert "drawn" in capsys.readouterr().out
    script.write_text("import socket\nsocket.create_connection(('127.0.0.1', 9))\n")
    assert (
        main(["sandbox", "render", str(script), "-o", str(out), "--timeout", "3", "--memory-mb", "512"]) == 1
    )
    assert "error" in capsys.readouterr().err


def test_selftest_at_the_floor_says_what_it_does_not_contain(capsys):
    cases = "infinite_loop,network,kill_everything"
    rc = main(["sandbox", "selftest", "--isolation", "minimal", "--timeout", "1.5", "--memory-mb", "512",
               "--cases", cases])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0  # nothing escaped a layer that claims to contain it: at the floor, none claims much
    assert "degraded: isolation 'minimal'" in out
    assert "infinite_loop     timeout" in out and "contained" in out
    assert "not contained (no layer covers it here)" in out  # e.g. the network case
    assert "skipped (needs" in out  # kill(-1) is not run where nothing contains it
    assert "0/3" not in out and "/3 cases contained" in out
    assert main(["sandbox", "selftest", "--cases", "no_such_case"]) == 2
