import pytest
import torch

from data_pipelines.sample import Sample
from mmrft.data import sample_seed, sft_target, step_indices


def _s(task, solution, **columns):
    return Sample(id="r", task=task, prompt=[], solution=solution, columns=columns)


@pytest.mark.parametrize(
    "sample, style, target",
    [
        (_s("classification", {"label": "blue"}), "answer_only", "<answer>blue</answer>"),
        (_s("classification", {"label": "blue"}), "plain", "blue"),
        (_s("classification", {"label": "blue"}), "think_answer", "<think>The answer is blue.</think><answer>blue</answer>"),
        (_s("counting", {"count": 3}), "answer_only", "<answer>3</answer>"),
        (_s("grounding", {"box": [10.4, 20.6, 30.0, 40.2]}), "answer_only", '<answer>{"bbox_2d": [10, 21, 30, 40]}</answer>'),
        (_s("temporal_grounding", {"segment": [12.5, 17.0]}), "plain", "12.5 to 17"),
        (_s("classification", {"label": "x"}, response="<think>hm</think><answer>x</answer>"), "plain",
         "<think>hm</think><answer>x</answer>"),
    ],
)  # fmt: skip
def test_sft_targets_are_what_the_rewards_parse(sample, style, target):
    assert sft_target(sample, style) == target


def test_step_indices_split_the_global_batch_over_ranks():
    one, pos_one = step_indices(3, 8, 20, seed=0, rank=0, world=1)
    halves = [step_indices(3, 8, 20, seed=0, rank=r, world=2) for r in range(2)]
    assert halves[0][0] + halves[1][0] == one and halves[0][1] + halves[1][1] == pos_one
    assert pos_one == list(range(24, 32))  # step 3 of batch 8: stream positions 24..31, epoch 1 from 20
    first_epoch = [i for s in range(2) for i in step_indices(s, 8, 20, 0, 0, 1)[0]] + step_indices(
        2, 8, 20, 0, 0, 1
    )[0][:4]
    assert sorted(first_epoch) == list(range(20))  # each record once per epoch
    with pytest.raises(ValueError, match="divisible by the number of processes 3"):
        step_indices(0, 8, 20, 0, 0, 3)


def test_sample_seeds_differ_per_position_and_fit_a_generator():
    seeds = {sample_seed(0, p) for p in range(1000)}
    assert len(seeds) == 1000
    torch.Generator().manual_seed(max(seeds))


def test_reward_columns_give_the_frame_size_the_model_saw():
    import numpy as np
    from PIL import Image

    from data_pipelines.sample import VideoClip
    from mmrft.scoring import columns_for

    img = _s("grounding", {"box": [1, 2, 3, 4]})
    img.images = [Image.new("RGB", (224, 112))]
    vid = _s("tracking", {"boxes": []})
    vid.video = VideoClip(
        frames=np.zeros((4, 168, 336, 3), np.uint8), timestamps=[0, 1, 2, 3], fps=1.0, duration=4
    )
    text = _s("classification", {"label": "a"})
    assert columns_for([img, vid, text])["image_size"] == [(224, 112), (336, 168), None]
