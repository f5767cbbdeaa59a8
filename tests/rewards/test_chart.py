"""chart_render: scoring arithmetic by hand, then the reward end to end through the sandbox."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from rewards.chart import reward as chart_reward
from rewards.chart.color import ciede2000, color_similarity
from rewards.chart.reward import chart_render, extract_code, get_pool, sandbox_config
from rewards.chart.scoring import color_f1, element_score, multiset_f1, ssim_map, visual_score
from rewards.registry import get

PARAMS = dict(timeout_s=3.0, memory_mb=512, workers=2, width_px=160, height_px=120, dpi=40)

BAR = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots()\n"
    "ax.bar(['apples', 'pears', 'plums', 'kiwis'], [3, 5, 2, 4],\n"
    "       color=['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728'])\n"
    "ax.set_title('Fruit sold')\nax.set_ylabel('boxes')\n"
)
WRONG_COLOR = BAR.replace("#2ca02c", "#9467bd")  # one bar green -> purple
WRONG_LABEL = BAR.replace("Fruit sold", "Fruit bought")
LINE = BAR.replace("ax.bar(", "ax.plot(").replace(
    "\n       color=['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728']", " color='#1f77b4'"
)
PIE = "import matplotlib.pyplot as plt\nplt.pie([3, 5, 2, 4], labels=['w', 'x', 'y', 'z'])\nplt.title('Share')\n"


# ------------------------------------------------------------------------------------ arithmetic


def test_ciede2000_matches_sharma_reference_pairs():
    # pairs 1 and 7 of Sharma, Wu & Dalal (2005), Table 1: 2.0425 and 2.3669
    lab1 = np.array([[50.0, 2.6772, -79.7751], [50.0, 0.0, 0.0]])
    lab2 = np.array([[50.0, 0.0, -82.7485], [50.0, -1.0, 2.0]])
    de = ciede2000(lab1, lab2)
    assert de[0, 0] == pytest.approx(2.0425, abs=1e-4) and de[1, 1] == pytest.approx(2.3669, abs=1e-4)
    assert color_similarity(["#ff0000"], ["#ff0000"])[0, 0] == 1.0


def test_multiset_and_color_f1_by_hand():
    # 2 of 3 reference texts found among 4 predicted: P 1/2, R 2/3, F1 = 2*(1/2)(2/3)/(1/2+2/3) = 4/7
    assert multiset_f1(["a", "b", "b"], ["a", "b", "c", "d"]) == pytest.approx(4 / 7)
    assert multiset_f1([], []) is None and multiset_f1(["a"], []) == 0.0
    # same colours within a type match fully; a colour under another type does not match at all
    assert color_f1([["bar", "#ff0000"], ["bar", "#00ff00"]], [["bar", "#00ff00"], ["bar", "#ff0000"]]) == 1.0
    assert color_f1([["bar", "#ff0000"]], [["line", "#ff0000"]]) == 0.0


def test_element_score_leaves_out_components_empty_in_both():
    ref = {"texts": ["t"], "types": ["bar"], "colors": [], "layout": [[1, 1, 0, 1, 0, 1]]}
    pred = {"texts": ["t"], "types": ["line"], "colors": [], "layout": [[1, 1, 0, 1, 0, 1]]}
    s = element_score(ref, pred)
    assert (s.text, s.type, s.color, s.layout) == (1.0, 0.0, None, 1.0)
    assert s.total == pytest.approx(2 / 3)  # mean of the three present components
    assert element_score(ref, {"texts": "garbage", "types": None}).total == 0.0  # untrusted shapes


def test_ssim_is_one_for_identical_images_and_ignores_shared_white_margin():
    rng = np.random.default_rng(0)
    a = np.ones((40, 60, 3))
    a[10:30, 10:20] = rng.random((20, 10, 3))
    assert ssim_map(a[..., 0], a[..., 0]).min() == pytest.approx(1.0)
    assert visual_score(a, a) == pytest.approx(1.0)
    b = a.copy()
    b[10:30, 10:20] = 0.0  # same place, different content: low, although 90% of pixels are equal white
    assert visual_score(a, b) < 0.5
    assert visual_score(np.ones((8, 8, 3)), np.ones((8, 8, 3))) == 1.0


def test_extract_code_modes():
    fenced = "Here:\n```python\nprint(1)\n```\nand\n```\nprint(2)\n```"
    assert extract_code(fenced) == "print(1)"
    assert extract_code("```\nprint(2)\n```") == "print(2)"
    assert extract_code("print(3)") == "print(3)"
    assert extract_code("print(3)", code_block="fence") is None
    assert extract_code(fenced, code_block="whole") == fenced
    assert (
        extract_code("<think>```python\nbad()\n```</think><answer>```python\ngood()\n```</answer>")
        == "good()"
    )
    assert extract_code("<answer>a</answer><answer>b</answer>") is None
    assert extract_code([{"role": "assistant", "content": "```py\nx = 1\n```"}]) == "x = 1"


# ---------------------------------------------------------------------------------------- reward


def test_registered_and_params_reach_the_sandbox():
    assert get("chart_render") is chart_render
    cfg = sandbox_config({"timeout_s": 2.5, "memory_mb": 256, "prompt": "ignored", "dpi": [1, 2]})
    assert (cfg.timeout_s, cfg.cpu_s, cfg.memory_mb, cfg.dpi) == (
        2.5,
        3,
        256,
        50,
    )  # a "dpi" column is not a setting
    with pytest.raises(ValueError, match="code_block"):
        chart_render(["x"], [{"code": BAR}], code_block="xml")


def test_scores_order_identical_one_wrong_colour_or_label_and_other_chart_types():
    cands = [BAR, WRONG_COLOR, WRONG_LABEL, LINE, PIE]
    s = chart_render(cands, solution=[{"code": BAR}] * len(cands), **PARAMS)
    identical, wrong_color, wrong_label, line, pie = s
    assert identical == pytest.approx(1.0, abs=1e-6)
    assert wrong_color < identical - 0.02  # one of four bar colours and its pixels differ
    assert wrong_label < identical - 0.005  # one of ~12 texts differs
    assert line < 0.5 and pie < 0.5
    assert s.metrics["rendered"] == 5.0 and s.metrics["fail/error"] == 0.0


def test_failures_score_zero_and_are_counted_by_reason():
    cands = [
        "no code here at all (",  # whole answer run as code: a syntax error
        "```python\nraise RuntimeError('x')\n```",
        "```python\nx = 1\n```",
        "<answer></answer>",
        "```python\nwhile True:\n    pass\n```",
        [{"role": "assistant", "content": "```python\n" + BAR + "```"}],
    ]
    s = chart_render(cands, solution=[{"code": BAR}] * len(cands), **PARAMS)
    assert list(s) == [0.0, 0.0, 0.0, 0.0, 0.0, pytest.approx(1.0, abs=1e-6)]
    m = s.metrics
    assert (m["fail/syntax"], m["fail/error"], m["fail/no_figure"], m["fail/no_code"], m["fail/timeout"]) == (
        1.0, 1.0, 1.0, 1.0, 1.0)  # fmt: skip


def test_rows_without_a_chart_reference_or_task_are_not_applicable():
    s = chart_render([BAR, BAR, BAR], solution=[{"code": BAR}, {}, {"code": BAR}],
                     task=["chart_to_code", "chart_to_code", "detection"], **PARAMS)  # fmt: skip
    assert s[0] == pytest.approx(1.0, abs=1e-6) and s[1] is None and s[2] is None
    assert s.metrics["applicable"] == 1.0


def test_broken_reference_is_counted_not_scored():
    s = chart_render([BAR], solution=[{"code": "raise ValueError"}], **PARAMS)
    assert s[0] is None and s.metrics["fail/reference"] == 1.0


def test_reference_code_is_rendered_once_and_cached(monkeypatch):
    cfg = sandbox_config(PARAMS)
    pool = get_pool(cfg)
    submitted = []
    real_submit = pool.submit
    monkeypatch.setattr(pool, "submit", lambda code: submitted.append(code) or real_submit(code))
    ref = BAR + "ax.set_xlabel('cached once')\n"
    chart_render([BAR, BAR], solution=[{"code": ref}] * 2, **PARAMS)
    chart_render([BAR], solution=[{"code": ref}], **PARAMS)
    assert submitted.count(ref) == 1 and submitted.count(BAR.strip()) == 3  # answers are stripped
    assert chart_reward._cache_key(ref, cfg) in chart_reward._cache


def test_image_reference_with_and_without_elements(tmp_path):
    cfg = sandbox_config(PARAMS)
    r = get_pool(cfg).run(BAR)
    path = tmp_path / "ref.png"
    Image.open(io.BytesIO(r.png)).save(path)
    s = chart_render([BAR, WRONG_COLOR, BAR], solution=[
        {"image": str(path)}, {"image": str(path), "elements": r.elements}, {"image": str(tmp_path / "missing.png")}
    ], **PARAMS)  # fmt: skip
    assert s[0] == pytest.approx(1.0, abs=1e-6)  # visual only
    assert 0.5 < s[1] < 0.99  # visual + elements against the exported reference elements
    assert s[2] is None and s.metrics["fail/reference"] == 1.0


def test_batch_deadline_returns_on_time_and_counts_late_renders():
    import time

    params = dict(PARAMS) | {"workers": 2}
    chart_render([BAR], solution=[{"code": BAR}], **params)  # reference rendered and cached
    t0 = time.monotonic()
    s = chart_render(
        [BAR, "while True:\n    pass"], solution=[{"code": BAR}] * 2, batch_timeout_s=1.0, **params
    )
    waited = time.monotonic() - t0
    assert waited < 1.0 + 0.5  # not the 3 s render timeout of the looping render
    assert s[0] == pytest.approx(1.0, abs=1e-6) and s[1] == 0.0
    assert s.metrics["fail/deadline"] == 1.0 and s.metrics["fail/timeout"] == 0.0


def test_forged_exports_and_image_bombs_never_raise():
    forged = {"texts": [{"a": 1}, ["x"], "ok"] * 10_000, "types": [[1]], "colors": [[[1], 2], "zz"],
              "layout": [[[1, 2]], [1, 1, 0, 1, 0, 1], "x"]}  # fmt: skip
    ref = {"texts": ["ok"], "types": ["bar"], "colors": [["bar", "#ff0000"]], "layout": [[1, 1, 0, 1, 0, 1]]}
    s = element_score(ref, forged)
    assert 0.0 <= s.total <= 1.0 and s.layout == 1.0
    buf = io.BytesIO()
    Image.new("1", (8000, 6000)).save(buf, format="PNG")  # 48 M pixels in a few kB: refused undecoded
    from rewards.chart.scoring import load_rgb

    with pytest.raises(ValueError, match="too large"):
        load_rgb(buf.getvalue(), (10, 10))
    with pytest.raises(ValueError, match="unreadable"):
        load_rgb(b"\x89PNG\r\n\x1a\n garbage", (10, 10))


def test_never_raises_on_any_completion():
    odd = [
        None,
        123,
        {"content": 5},
        b"\xff\xfe",
        "x" * 300_000,
        [{"role": "assistant"}],
        "```python\n\x00\n```",
    ]
    s = chart_render(odd, solution=[{"code": BAR}] * len(odd), **PARAMS)
    assert list(s) == [0.0] * len(odd)
    assert sum(v for k, v in s.metrics.items() if k.startswith("fail/")) == len(odd)
