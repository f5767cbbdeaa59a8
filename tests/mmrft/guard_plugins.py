"""Misbehaving reward plugins for the guard and watchdog tests (loaded by file path, as a user's would be)."""

import os
import time


def _texts(completions):
    return [c if isinstance(c, str) else c[0]["content"] for c in completions]


def length(completions, **columns):
    """Longer completions score higher: reward variance in every group of a random model."""
    return [min(len(t), 40) / 40 for t in _texts(completions)]


def inf_once(completions, **columns):
    """One +inf per batch (the third completion), the rest finite."""
    return [float("inf") if i == 2 else 0.5 for i in range(len(completions))]


def minus_inf_once(completions, **columns):
    return [float("-inf") if i == 1 else 0.5 for i in range(len(completions))]


def nan_everywhere(completions, **columns):
    return [float("nan")] * len(completions)


def huge(completions, **columns):
    """1e300: finite as a Python float, far outside float32."""
    return [1e300 if i == 0 else 0.5 for i in range(len(completions))]


def big(completions, **columns):
    """3e38 each: within float32, but two of them weighted and summed overflow it."""
    return [3e38] * len(completions)


def not_applicable(completions, **columns):
    """None everywhere: the reward applies to nothing (not an error)."""
    return [None] * len(completions)


def words(completions, **columns):
    return ["high"] * len(completions)


def _mark(marker):
    """Write when the hang began, so a test can time the watchdog without the process start-up."""
    if marker:
        with open(marker, "w") as f:
            f.write(repr(time.time()))


def hang(completions, marker=None, **columns):
    """Never returns (within a test's lifetime)."""
    _mark(marker)
    time.sleep(600)
    return [0.0] * len(completions)


def hang_on_rank1(completions, marker=None, **columns):
    """Rank 1 of a torchrun job hangs; the others score normally (so they wait in the next collective)."""
    if os.environ.get("RANK") == "1":
        _mark(marker)
        time.sleep(600)
    return length(completions)


def buggy(completions, **columns):
    """A bug in a plugin: an exception that is not a user error keeps its traceback."""
    return [1 / 0 for _ in completions]
