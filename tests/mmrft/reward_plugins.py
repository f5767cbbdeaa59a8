"""Reward plugins used by the training tests (loaded by file path, as a user's would be)."""


def length_reward(completions, **columns):
    """Longer completions score higher: guarantees reward variance in every group of a random model."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [min(len(t), 40) / 40 for t in texts]


def constant_reward(completions, **columns):
    """Every completion scores 0.5: every group has zero variance."""
    return [0.5] * len(completions)
