"""Reward plugins used by the training tests (loaded by file path, as a user's would be)."""


def length_reward(completions, **columns):
    """Longer completions score higher: guarantees reward variance in every group of a random model."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [min(len(t), 40) / 40 for t in texts]


def constant_reward(completions, **columns):
    """Every completion scores 0.5: every group has zero variance."""
    return [0.5] * len(completions)


def even_record_reward(completions, id, **columns):
    """1 for every completion of a record whose id ends in an even number, 0 for the others: acceptance
    known in advance whatever the model writes."""
    return [1.0 if int(str(rid).rsplit("-", 1)[-1]) % 2 == 0 else 0.0 for rid in id]


def zero_reward(completions, **columns):
    """Every completion scores 0: every group is all wrong."""
    return [0.0] * len(completions)
