"""The hostile battery behind `mmrft rewards check`: every built-in passes, broken rewards are caught."""

import random

import pytest

import rewards
from rewards.check import hostile_completions, run_checks

BUILTINS = ["format", "accuracy", "counting", "iou", "detection", "temporal_iou", "tracking"]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_passes_battery(name):
    report = run_checks(rewards.get(name), name, n_boxes=10_000)
    assert report.ok, report.format()
    assert 0.0 <= report.min_score <= report.max_score <= 1.0


def test_battery_has_the_issue_cases():
    names = {n for n, _ in hostile_completions()}
    for case in [
        "empty",
        "huge_text",
        "binary_junk",
        "unicode",
        "nested_tags",
        "prompt_injection",
        "many_boxes",
        "nan_inf",
    ]:
        assert case in names


def _failed(fn, **kw):
    return {r.name for r in run_checks(fn, "bad", min_throughput=0, **kw).results if not r.ok}


def test_catches_exceptions():
    def crashes(completions, **kw):
        return [float(len(c) < 100_000) if isinstance(c, str) else 1 / 0 for c in completions]

    assert "exceptions" in _failed(crashes)


def test_catches_range_and_finiteness():
    def wild(completions, **kw):
        return [float("nan") if not c else 2.0 for c in completions]

    assert {"range", "finite"} <= _failed(wild)


def test_catches_nondeterminism_and_order_dependence():
    rng = random.Random(0)

    def noisy(completions, **kw):
        return [rng.random() for _ in completions]

    def positional(completions, **kw):
        return [i / len(completions) for i in range(len(completions))]

    assert "determinism" in _failed(noisy)
    assert {"batch_order", "batch_size"} <= _failed(positional)


def test_catches_wrong_length_and_types():
    assert "length" in _failed(lambda completions, **kw: [0.0])
    assert "types" in _failed(lambda completions, **kw: ["1"] * len(completions))


def test_catches_string_only_rewards():
    def strings_only(completions, **kw):
        return [1.0 if isinstance(c, str) else 0.0 for c in completions]

    assert "messages" in _failed(strings_only)


def test_catches_slow_rewards():
    import time

    def slow(completions, **kw):
        time.sleep(0.01)
        return [0.0] * len(completions)

    report = run_checks(slow, "slow", min_throughput=1e9)
    assert not report.ok and [r.name for r in report.results if not r.ok] == ["throughput"]


def test_throughput_floor_comes_from_the_reward_attribute():
    def fast_enough(completions, **kw):
        return [0.0] * len(completions)

    assert run_checks(fast_enough, "f").ok  # default floor 5/s
    fast_enough.check_min_throughput = 1e12
    failed = [r.name for r in run_checks(fast_enough, "f").results if not r.ok]
    assert failed == ["throughput"]
