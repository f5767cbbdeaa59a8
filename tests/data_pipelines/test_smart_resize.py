"""Qwen smart-resize rules and the original <-> model frame round trip."""

from __future__ import annotations

import random

import pytest
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from data_pipelines.geometry import box_to_model, box_to_original, to_model_frame, to_original_frame
from data_pipelines.vision import VisionSpec, smart_resize, video_frame_size

MAXP = 1280 * 28 * 28  # 1003520


def test_conforming_image_is_unchanged():
    assert smart_resize(112, 112) == (112, 112)
    assert smart_resize(280, 560) == (280, 560)


def test_downscale_to_budget_by_hand():
    # 1000x2000 rounds to 1008x1988 = 2,003,904 > 1,003,520 pixels, so beta = sqrt(2e6 / 1003520) = 1.4117;
    # 1000 / 1.4117 = 708.4 -> floor to 25*28 = 700; 2000 / 1.4117 = 1416.7 -> 50*28 = 1400.
    assert smart_resize(1000, 2000, max_pixels=MAXP) == (700, 1400)


def test_upscale_to_min_pixels_by_hand():
    # 20x20 = 400 px < 3136: beta = sqrt(3136 / 400) = 2.8, 20 * 2.8 = 56 -> ceil to 2*28 = 56.
    assert smart_resize(20, 20) == (56, 56)


def test_too_thin_input_raises_instead_of_a_zero_side():
    # qwen-vl-utils 0.0.14 gives 0x3920 here: beta = sqrt(30*5900 / 78400) = 1.50, 30 / 1.50 = 20 -> 0*28.
    with pytest.raises(ValueError, match="30x5900.*too thin"):
        smart_resize(30, 5900, max_pixels=100 * 28 * 28)


def test_extreme_aspect_ratio_raises():
    with pytest.raises(ValueError, match="aspect ratio 250.0"):
        smart_resize(10, 2500)


def test_matches_transformers_on_random_sizes():
    rng = random.Random(0)
    for _ in range(300):
        h, w = rng.randint(28, 4000), rng.randint(28, 4000)
        if max(h, w) / min(h, w) > 150:
            continue
        ours = smart_resize(h, w, 28, 4 * 28 * 28, MAXP)
        assert ours == hf_smart_resize(h, w, 28, 4 * 28 * 28, MAXP), (h, w)
        assert ours[0] % 28 == 0 and ours[1] % 28 == 0
        assert 4 * 28 * 28 <= ours[0] * ours[1] <= MAXP


def test_round_trip_within_one_pixel_for_random_sizes():
    rng = random.Random(1)
    spec = VisionSpec(max_pixels=512 * 28 * 28)
    for _ in range(500):
        w, h = rng.randint(40, 6000), rng.randint(40, 6000)
        if max(h, w) / min(h, w) > 100:
            continue
        new_h, new_w = smart_resize(h, w, spec.factor, spec.min_pixels, spec.max_pixels)
        scale = (new_w / w, new_h / h)
        x1, y1 = rng.uniform(0, w - 2), rng.uniform(0, h - 2)
        box = [x1, y1, rng.uniform(x1 + 1, w), rng.uniform(y1 + 1, h)]
        for space, limit in (("pixel", (new_w, new_h)), ("norm1000", (1000, 1000))):
            model = box_to_model(box, scale, (w, h), space)
            assert -1e-6 <= model[0] < model[2] <= limit[0] + 1e-6
            assert -1e-6 <= model[1] < model[3] <= limit[1] + 1e-6
            back = box_to_original(model, scale, (w, h), space)
            assert max(abs(a - b) for a, b in zip(back, box)) <= 1.0


def test_solution_mapping_by_hand():
    # A 1000x500 (WxH) image shown as 500x250: sx = sy = 0.5.
    sol = {"boxes": [[100, 50, 300, 250]], "labels": ["dog"], "box": [0, 0, 1000, 500]}
    model = to_model_frame(sol, (0.5, 0.5), (1000, 500), "pixel")
    assert model == {"boxes": [[50, 25, 150, 125]], "labels": ["dog"], "box": [0, 0, 500, 250]}
    norm = to_model_frame(sol, (0.5, 0.5), (1000, 500), "norm1000")
    assert norm["boxes"] == [[100.0, 100.0, 300.0, 500.0]]  # x / 1000 * 1000, y / 500 * 1000
    assert to_original_frame(model, (0.5, 0.5), (1000, 500), "pixel")["boxes"] == sol["boxes"]


def test_video_frame_budget_by_hand():
    spec = VisionSpec(video_total_pixels=3584 * 28 * 28)
    # 64 frames: min(768*784, 3584*784/64*2) = 112*784 px per frame, but never under 1.05*128*784,
    # so the cap is 134.4*784 = 105,369 px; a 360x640 frame rounds to 364x644 = 234,416 > cap:
    # beta = sqrt(230400 / 105369) = 1.4787 -> 243.5 -> 8*28 = 224 and 432.8 -> 15*28 = 420.
    assert video_frame_size(360, 640, 64, spec) == (224, 420)
