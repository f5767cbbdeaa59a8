"""Try-tab inputs: the project's prompt texts, the upload checks, ground truth read like an answer, and
records loaded by the training pipeline (resize + ground-truth mapping). No gradio needed."""

import json

import pytest
from demo_helpers import SQUARE, SQUARE_MODEL
from PIL import Image

from data_pipelines.converters.chart import chart_prompt
from data_pipelines.converters.classification import classification_prompt
from data_pipelines.converters.coco import detection_prompt
from data_pipelines.converters.refcoco import grounding_prompt
from data_pipelines.converters.temporal import temporal_prompt
from data_pipelines.vision import VisionSpec
from mmrft.demo.inputs import (
    InputError,
    Media,
    build_record,
    check_media,
    load_sample,
    parse_truth,
    template_prompt,
)


def test_templates_are_the_converters_prompts():
    assert template_prompt("detection", "dog", "answer_only") == detection_prompt(
        "dog", "pixel", "answer_only"
    )
    assert template_prompt("grounding", "the cat", "think_answer", "norm1000") == grounding_prompt(
        "the cat", "norm1000", "think_answer"
    )
    assert template_prompt("classification", "a, b", "plain") == classification_prompt(["a", "b"], "plain")
    assert template_prompt("classification", "", "plain") == classification_prompt(
        ["circle", "square", "triangle"], "plain"
    )
    assert template_prompt("temporal_grounding", "x", "answer_only") == temporal_prompt("x", "answer_only")
    assert template_prompt("chart_to_code", "", "answer_only") == chart_prompt("answer_only")
    # the synthetic counting question, word for word
    assert (
        template_prompt("counting", "circle")
        == "How many circles are in the image? Answer with <answer>number</answer>."
    )
    with pytest.raises(InputError, match="task must be one of"):
        template_prompt("segmentation", "x")


def test_uploads_that_are_not_images_or_are_too_large_say_so(tmp_path, square_png):
    media = check_media(square_png, 40)
    assert (media.kind, media.size) == ("image", (150, 100))
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(InputError, match=r"notes.txt is not an image or a video this demo can read"):
        check_media(text, 40)
    fake_png = tmp_path / "fake.png"
    fake_png.write_bytes(b"\x89PNG garbage")
    with pytest.raises(InputError, match="fake.png is not an image or a video"):
        check_media(fake_png, 40)
    big = tmp_path / "big.png"
    Image.new("1", (10000, 10000)).save(big)  # 100 MP, 12 KB on disk: only the header is read
    with pytest.raises(InputError, match=r"10000x10000 \(100.0 MP\), over the demo's limit of 40 MP"):
        check_media(big, 40)
    bad_video = tmp_path / "clip.mp4"
    bad_video.write_bytes(b"\x00\x00\x00\x18ftypmp42 but then nothing")
    with pytest.raises(InputError, match="clip.mp4: the video does not decode"):
        check_media(bad_video, 40)
    with pytest.raises(InputError, match="no input"):
        check_media(None, 40)


def test_a_truncated_image_fails_when_loaded_with_its_reason(tmp_path, square_png):
    cut = tmp_path / "cut.png"
    cut.write_bytes(square_png.read_bytes()[:120])  # the header survives, the pixels do not
    media = check_media(cut, 40)
    record = build_record(media, "grounding", "Find it.", parse_truth("grounding", ""))
    with pytest.raises(InputError, match="cannot read image"):
        load_sample(record, VisionSpec())


def test_ground_truth_reads_like_an_answer():
    t = parse_truth("detection", '[{"bbox_2d": [1, 2, 3, 4], "label": "dog"}, [5, 6, 7, 8]]', "cat")
    assert t.given and t.solution == {"boxes": [[1, 2, 3, 4], [5, 6, 7, 8]], "labels": ["dog", "cat"]}
    assert parse_truth("detection", "[]").solution == {"boxes": [], "labels": []}
    assert parse_truth("grounding", "[10, 20, 30, 40]").solution == {"box": [10, 20, 30, 40]}
    assert parse_truth("grounding", '{"box": [1, 2, 3, 4]}').solution == {"box": [1, 2, 3, 4]}
    assert parse_truth("counting", "five").solution == {"count": 5}
    assert parse_truth("temporal_grounding", "2 to 3.5").solution == {"segment": [2.0, 3.5]}
    assert parse_truth("classification", "red circle").solution == {"label": "red circle"}
    assert parse_truth("chart_to_code", "plt.bar([1], [2])").solution == {"code": "plt.bar([1], [2])"}
    assert not parse_truth("counting", "  ").given
    with pytest.raises(InputError, match="expected one box for grounding, got 2"):
        parse_truth("grounding", "[1, 2, 3, 4] [5, 6, 7, 8]")
    with pytest.raises(InputError, match="expected a whole number"):
        parse_truth("counting", "many")
    with pytest.raises(InputError, match="expected 'start to end'"):
        parse_truth("temporal_grounding", "at some point")


def test_record_is_resized_and_mapped_exactly_as_in_training(square_png):
    media = check_media(square_png, 40)
    record = build_record(
        media, "grounding", "Find the red square.", parse_truth("grounding", json.dumps(SQUARE))
    )
    assert record["images"] == [str(square_png)]
    assert record["prompt"][0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "Find the red square."},
    ]
    sample = load_sample(record, VisionSpec())
    assert sample.images[0].size == (140, 112)  # smart resize of 150x100: sides rounded to multiples of 28
    assert sample.solution["box"] == pytest.approx(SQUARE_MODEL)
    assert sample.solution_original["box"] == SQUARE


def test_bad_records_become_one_line_messages(square_png, tmp_path):
    media = check_media(square_png, 40)
    with pytest.raises(InputError, match="the prompt is empty"):
        build_record(media, "grounding", "   ", parse_truth("grounding", ""))
    record = build_record(media, "temporal_grounding", "When?", parse_truth("temporal_grounding", ""))
    with pytest.raises(InputError, match="^task 'temporal_grounding' needs a 'video'$"):
        load_sample(record, VisionSpec())
    outside = build_record(media, "grounding", "Find it.", parse_truth("grounding", "[100, 50, 400, 90]"))
    with pytest.raises(InputError, match=r"does not fit the 150x100 image"):
        load_sample(outside, VisionSpec())
    video = Media(tmp_path / "x.mp4", "video", (64, 64))
    with pytest.raises(InputError, match="chart-to-code needs an image"):
        build_record(video, "chart_to_code", "Code?", parse_truth("chart_to_code", ""))
