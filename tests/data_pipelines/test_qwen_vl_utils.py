"""Our smart-resize, frame count, frame picks and per-frame budget against qwen-vl-utils (a [dev]
dependency: the reference, never imported by the package), over many sizes. Where the two differ, the
test pins the difference docs/data.md documents ("Against qwen-vl-utils")."""

from __future__ import annotations

import logging
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

qv = pytest.importorskip("qwen_vl_utils.vision_process", reason="qwen-vl-utils is a [dev] dependency")
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize  # noqa: E402

from data_pipelines.records import RecordError  # noqa: E402
from data_pipelines.video import num_frames, sample_indices  # noqa: E402
from data_pipelines.vision import ResizeError, VisionSpec, smart_resize, video_frame_size  # noqa: E402

PROFILE = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
F = 28
sides = st.one_of(st.integers(1, 60), st.integers(1, 6000))
budgets = st.tuples(st.sampled_from([4, 16, 64, 128, 256]), st.sampled_from([16, 100, 256, 768, 1280, 16384]))


@pytest.fixture(autouse=True)
def _quiet_qwen_vl_utils(caplog):
    caplog.set_level(logging.ERROR, logger=qv.logger.name)  # smart_nframes warns when fps > the video's


def _run(fn, h, w, lo, hi):
    try:
        return fn(h, w, F, lo, hi)
    except ValueError as e:  # ours: ResizeError; qwen-vl-utils and transformers: ValueError
        return e


def _compare(h: int, w: int, lo: int, hi: int) -> None:
    ours, ref, hf = (_run(fn, h, w, lo, hi) for fn in (smart_resize, qv.smart_resize, hf_smart_resize))
    if max(h, w) / min(h, w) > 200:  # both refuse; ours says why in a record-error reason
        assert isinstance(ours, ResizeError) and ours.reason == "extreme_aspect_ratio"
        assert isinstance(ref, ValueError)
        return
    if min(h, w) <= F // 2:
        # (1) a side of at most 14 px rounds to 0 multiples of 28: qwen-vl-utils lifts it to 28 before
        # the budget check, transformers' processor (what the trainer runs) does not; we follow
        # transformers, so the processor finds our image already conforming
        if isinstance(ours, ResizeError):
            assert ours.reason == "image_too_thin" and (isinstance(hf, ValueError) or min(hf) < F or 0 in ref)
        else:
            assert ours == hf
        return
    if isinstance(ours, ResizeError):
        # (2) too thin for the budget: the short side would floor to 0; qwen-vl-utils returns a zero
        # side (no image), transformers lifts it to 28 (up to twice max_pixels); we refuse the record
        assert ours.reason == "image_too_thin"
        assert 0 in ref and min(hf) == F
        return
    assert ours == ref == hf, (h, w, lo, hi)
    # multiples of 28 always; the pixel range only when it is wide enough (min ~ max: the shared rule
    # can land past either end, e.g. 15 x 16 at min = max = 16 * 784 becomes 112 x 140 in all three)
    assert ours[0] % F == 0 and ours[1] % F == 0
    if hi >= 4 * lo:
        assert lo <= ours[0] * ours[1] <= hi, (h, w, lo, hi)


def test_smart_resize_on_every_small_size():
    """Every size up to 120 x 120 (where differences (1) and (2) live) at four budgets."""
    for lo_t, hi_t in ((4, 16), (4, 1280), (16, 16), (64, 100)):
        for h in range(1, 121):
            for w in range(1, 121):
                _compare(h, w, lo_t * F * F, hi_t * F * F)


@PROFILE
@given(sides, sides, budgets)
def test_smart_resize_on_random_sizes(h, w, budget):
    _compare(h, w, budget[0] * F * F, max(budget) * F * F)


def test_the_documented_differences_by_hand():
    # (1) 950 x 14: 14 / 28 = 0.5 rounds to 0; qwen-vl-utils makes it 28 -> 952 x 28. We (and transformers)
    # see 0 pixels < min, scale up by sqrt(3136 / 13300) = 0.4856: ceil(461.3 / 28) * 28 = 476, ceil(6.8) -> 28
    assert qv.smart_resize(950, 14, F, 4 * F * F, 16384 * F * F) == (952, 28)
    assert (
        smart_resize(950, 14, F, 4 * F * F, 16384 * F * F)
        == (476, 28)
        == hf_smart_resize(950, 14, F, 4 * F * F, 16384 * F * F)
    )
    # (2) 30 x 5900 at 100 * 28 * 28: beta = 1.50, 30 / 1.50 = 20 -> 0 * 28
    assert qv.smart_resize(30, 5900, F, 4 * F * F, 100 * F * F) == (0, 3920)
    with pytest.raises(ResizeError, match="too thin"):
        smart_resize(30, 5900, F, 4 * F * F, 100 * F * F)


@PROFILE
@given(
    st.one_of(st.integers(1, 60), st.integers(1, 20000)),
    st.one_of(st.sampled_from([1.0, 23.976, 24.0, 25.0, 29.97, 30.0, 60.0]), st.floats(0.5, 240.0)),
    st.one_of(st.sampled_from([0.5, 1.0, 2.0, 4.0]), st.floats(0.05, 30.0)),
    st.integers(1, 64),
    st.integers(0, 800),
)
def test_frame_count_equals_smart_nframes(total, native_fps, fps, min_frames, extra):
    max_frames = min_frames + extra
    try:
        ref = qv.smart_nframes(
            {"fps": fps, "min_frames": min_frames, "max_frames": max_frames}, total, native_fps
        )
    except ValueError:  # fewer than 2 frames: ours is a record error
        with pytest.raises(RecordError, match="at least 2 are needed"):
            num_frames(total, native_fps, fps, min_frames, max_frames)
        return
    assert num_frames(total, native_fps, fps, min_frames, max_frames) == ref
    if extra == 0 and total >= 768:  # without max_frames qwen-vl-utils caps at 768 = our default
        assert num_frames(total, native_fps, fps, min_frames, 768) == qv.smart_nframes(
            {"fps": fps, "min_frames": min_frames}, total, native_fps
        )


# qwen-vl-utils picks frames inline in each reader (no function to call; its readers need decord,
# torchcodec or torchvision's removed read_video): this is its line, checked to still be there
QWEN_PICKS = "idx = torch.linspace(0, total_frames - 1, nframes).round().long()"


def test_qwen_vl_utils_still_picks_frames_this_way():
    import inspect

    assert QWEN_PICKS in inspect.getsource(qv._read_video_torchvision)


@PROFILE
@given(st.one_of(st.integers(2, 100), st.integers(2, 300_000)), st.integers(2, 1500))
def test_frame_picks_equal_qwen_vl_utils(total, n):
    import torch

    total_frames, nframes = total, min(n, total)
    idx = torch.linspace(0, total_frames - 1, nframes).round().long()  # QWEN_PICKS, verbatim
    assert sample_indices(total_frames, nframes) == idx.tolist()


def test_a_tie_a_float64_linspace_would_round_the_other_way():
    import numpy as np

    # 118951 frames, 1313 picks: pick 328 is 328 * 118950 / 1312 = 29737.5 exactly. A float64 linspace
    # computes 29737.4999... (29737); float32, as qwen-vl-utils, 29737.5 -> half to even 29738
    assert Fraction(328 * 118950, 1312) == Fraction(59475, 2)
    assert round(float(np.linspace(0, 118950, 1313)[328])) == 29737
    assert sample_indices(118951, 1313)[328] == 29738


@PROFILE
@given(
    st.integers(28, 4000), st.integers(28, 4000), st.integers(2, 768), st.sampled_from([3584, 24576, 115200])
)
def test_video_frame_size_equals_fetch_videos_budget_rule(h, w, frames, total_tokens):
    if max(h, w) / min(h, w) > 200:
        return
    spec = VisionSpec(video_total_pixels=total_tokens * F * F)
    # qwen-vl-utils fetch_video: per frame max(min(768 tokens, total / nframes * 2), 1.05 x 128 tokens)
    lo = qv.VIDEO_MIN_TOKEN_NUM * F * F
    hi = max(
        min(qv.VIDEO_MAX_TOKEN_NUM * F * F, spec.video_total_pixels / frames * qv.FRAME_FACTOR),
        int(lo * 1.05),
    )
    assert (spec.video_min_pixels, spec.video_max_pixels) == (lo, qv.VIDEO_MAX_TOKEN_NUM * F * F)
    try:
        ours = video_frame_size(h, w, frames, spec)
    except ResizeError as e:
        assert e.reason == "image_too_thin" and 0 in qv.smart_resize(h, w, F, lo, hi)
        return
    assert ours == qv.smart_resize(h, w, F, lo, hi)
