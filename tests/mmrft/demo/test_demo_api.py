"""The app started by `mmrft demo`, driven through its named API endpoints with gradio_client: a known
object goes in, boxes in original pixels and an annotated image come out; bad inputs answer with their
message while the app keeps serving."""

import json

import pytest
from demo_helpers import SQUARE, SQUARE_MODEL
from PIL import Image

pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
from gradio_client import Client, handle_file  # noqa: E402

from mmrft.demo.inputs import template_prompt  # noqa: E402

ENDPOINTS = {"/predict", "/score", "/template", "/rollouts", "/curves"}
PROMPT = template_prompt("grounding", "the red square")


@pytest.fixture(scope="module")
def client(demo_server):
    return Client(demo_server, verbose=False)


def test_named_endpoints_bound_to_loopback(client, demo_server):
    assert demo_server.startswith("http://127.0.0.1:")
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert set(api) == ENDPOINTS
    assert [p["parameter_name"] for p in api["/predict"]["parameters"]] == [
        "media", "task", "target", "prompt", "prompt_style", "truth", "greedy", "temperature", "max_new_tokens",
        "n_samples", "seed",
    ]  # fmt: skip
    assert client.predict("grounding", "the red square", "answer_only", api_name="/template") == PROMPT


def _score(client, path, truth, completion, task="grounding", prompt=PROMPT):
    return client.predict(
        handle_file(str(path)), task, "", prompt, "answer_only", truth, completion, api_name="/score"
    )


def test_a_known_object_comes_back_in_original_pixels_with_an_annotated_image(client, square_png):
    completion = '<answer>{"bbox_2d": [' + ", ".join(map(str, SQUARE_MODEL)) + "]}</answer>"
    status, picture, card, base_picture, _, data = _score(client, square_png, json.dumps(SQUARE), completion)
    assert status.startswith("image 150x100 px, seen by the model at 140x112 px")
    given = data["answers"]["given"]
    assert given["parsed"][0]["boxes"][0]["box"] == pytest.approx(SQUARE, abs=1e-4)
    # the rewards are the run's (its config.yaml): iou, and format with structure answer_only
    assert given["rewards"] == [{"iou": pytest.approx(1.0), "format": 1.0}] and "reward **2.000**" in card
    with Image.open(picture) as im:  # the annotated ORIGINAL image: its outline on the square's edges
        assert im.size == (150, 100) and im.convert("RGB").getpixel((30, 50)) == (230, 25, 75)
    assert base_picture is None


def test_both_models_answer_the_same_input(client, square_png):
    out = client.predict(handle_file(str(square_png)), "grounding", "the red square", PROMPT, "answer_only",
                         json.dumps(SQUARE), False, 1.0, 8, 2, 3, api_name="/predict")  # fmt: skip
    status, tuned_pic, tuned_card, base_pic, base_card, data = out
    assert not status.startswith("**Error") and set(data["answers"]) == {"tuned", "base"}
    for name in ("tuned", "base"):
        ans = data["answers"][name]
        assert len(ans["completions"]) == 2 and len(ans["rewards"]) == 2 and ans["error"] == ""
        assert set(ans["rewards"][0]) == {"iou", "format"} and all(1 <= n <= 8 for n in ans["tokens"])
    for pic in (tuned_pic, base_pic):  # the original image, with a caption band when an answer was not read
        with Image.open(pic) as im:
            assert im.width == 150 and im.height >= 100
    assert "**#2**" in tuned_card and "**#2**" in base_card


def test_bad_inputs_show_their_message_and_the_app_keeps_serving(client, tmp_path, square_png, demo_run):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    big = tmp_path / "huge.png"
    Image.new("1", (10000, 10000)).save(big)
    broken = tmp_path / "clip.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 and nothing else")
    cases = [
        (_score(client, notes, "", "x"), "notes.txt is not an image or a video this demo can read"),
        (_score(client, big, "", "x"), "the image is 10000x10000 (100.0 MP), over the demo's limit of 40 MP"),
        (_score(client, square_png, "", "x", prompt=""), "the prompt is empty"),
        (_score(client, broken, "", "x", task="temporal_grounding"), "clip.mp4: the video does not decode"),
    ]
    for out, message in cases:
        assert message in out[0] and out[0].startswith("**Error:** ") and out[-1]["error"]
        assert client.predict("counting", "dog", "plain", api_name="/template").startswith("How many dogs")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    status, *_ = client.predict(str(empty), None, "", "", api_name="/rollouts")
    assert "has no samples.jsonl yet" in status
    status, steps, gallery, table, data = client.predict(str(demo_run), 1, "", "", api_name="/rollouts")
    assert status.startswith("step 1: 8 of 8 completions") and len(gallery) == 2
    assert steps["value"] == 1 and [c[1] for c in steps["choices"]] == [0, 1]  # the step menu, updated
    assert len(data["groups"]) == 2 and "| advantage |" in table


def test_curves_endpoint_reads_the_run(client, demo_run):
    status, plot, latest = client.predict(str(demo_run), api_name="/curves")
    assert status.startswith("4 logged rows") and "grpo/reward" in latest and plot is not None
