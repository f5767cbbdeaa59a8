"""`tracking`: per-frame box IoU averaged over max(T_pred, T_gt) frames."""

import pytest

import rewards

track = rewards.get("tracking")
SOL = {"boxes": [[0, 0, 10, 10], [10, 0, 20, 10], None]}


def score(completion, solution=SOL, **kw):
    return track([completion], solution=[solution], task=["tracking"], image_size=[(100, 100)], **kw)[0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("[[0, 0, 10, 10], [10, 0, 20, 10], null]", 1.0, id="exact_with_absent_frame"),
        pytest.param(
            '[{"bbox_2d": [0, 0, 10, 10]}, {"bbox_2d": [10, 0, 20, 10]}, null]', 1.0, id="qwen_objects"
        ),
        pytest.param(
            '[{"frame": 0, "bbox_2d": [0, 0, 10, 10]}, {"frame": 1, "bbox_2d": [10, 0, 20, 10]}]',
            2 / 3,
            id="frame_indexed_short_track",  # 2 frames given, 3 expected: (1 + 1 + 0) / 3
        ),
        pytest.param("[[0, 0, 10, 10], [10, 0, 20, 10]]", 2 / 3, id="missing_frame"),
        pytest.param("[[0, 0, 10, 10], [10, 0, 20, 10], null, [0, 0, 5, 5]]", 3 / 4, id="extra_frame"),
        pytest.param("[[0, 0, 10, 10], [0, 0, 10, 10], null]", (1 + 0 + 1) / 3, id="wrong_frame"),
        pytest.param("[[0, 0, 10, 10], [10, 0, 20, 10], [0, 0, 1, 1]]", 2 / 3, id="box_where_absent"),
        pytest.param("[[0, 0, 10, 10], [10, 0, 20, NaN], null]", 2 / 3, id="nan_frame"),
        pytest.param("", 0.0, id="empty"),
        pytest.param("the object moves right", 0.0, id="no_boxes"),
        pytest.param("frame 1: [0, 0, 10, 10] frame 2: [10, 0, 20, 10]", 2 / 3, id="boxes_in_text"),
    ],
)
def test_pathologies(completion, expected):
    assert score(completion) == pytest.approx(expected)


def test_norm1_frame_videochat_r1():
    sol = {"boxes": [[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]}
    out = track(
        ["[[0, 0, 0.5, 0.5], [0.5, 0.5, 1.5, 1.5]]"], solution=[sol], coord_space=["norm1"], task=["tracking"]
    )
    assert out == [1.0]


def test_applicability():
    out = track(
        ["[]", "[]", "[]"],
        solution=[{"boxes": [[0, 0, 1, 1]], "labels": ["a"]}, {"boxes": [[0, 0, 1, 1]]}, {"label": "a"}],
    )
    assert out[0] is None and out[1] == 0.0 and out[2] is None
