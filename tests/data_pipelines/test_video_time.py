"""Video: sampling with timestamps, the time the model's input encodes, synthetic video tasks, bad videos."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from data_pipelines.dataset import JsonlDataset
from data_pipelines.records import RecordError
from data_pipelines.synthetic.video import write_video, write_video_dataset
from data_pipelines.video import load_video, num_frames, sample_indices
from data_pipelines.vision import VisionSpec


@pytest.fixture(scope="module")
def event_video(tmp_path_factory):
    """10 s at 10 fps (100 frames), white; a red square from exactly 6.0 s (frame 60) to the end."""
    frames = np.full((100, 64, 64, 3), 255, np.uint8)
    frames[60:, 16:48, 16:48] = (255, 0, 0)
    path = tmp_path_factory.mktemp("video") / "event.mp4"
    write_video(path, frames, fps=10)
    return path


def _red(frame: np.ndarray) -> bool:
    centre = frame[frame.shape[0] // 2, frame.shape[1] // 2].astype(int)
    return centre[0] > 200 and centre[1] < 60 and centre[2] < 60


def test_frame_count_rules_by_hand():
    assert num_frames(250, 25.0, 2.0, 4, 768) == 20  # 10 s * 2 fps
    assert num_frames(250, 25.0, 0.1, 4, 768) == 4  # 1 frame raised to min_frames
    assert num_frames(250, 25.0, 2.0, 4, 9) == 8  # max_frames 9 -> even 8
    assert num_frames(5, 25.0, 2.0, 4, 768) == 4  # never more than the video (5 -> even 4)
    assert sample_indices(100, 5) == [0, 25, 50, 74, 99]  # linspace(0, 99, 5) = 0, 24.75, 49.5, 74.25, 99


def test_sampled_frames_carry_their_times(event_video):
    clip = load_video(event_video, VisionSpec())
    # 10 s at 2 fps -> 20 frames at linspace(0, 99, 20): spacing 99/19 = 5.21 frames
    assert clip.frames.shape == (20, 336, 336, 3)  # 64 px upscaled to the 128-token video minimum
    assert clip.frame_indices[:4] == [0, 5, 10, 16] and clip.frame_indices[-1] == 99
    assert clip.timestamps[:4] == pytest.approx([0.0, 0.5, 1.0, 1.6])
    assert clip.fps == pytest.approx(2.0) and clip.duration == pytest.approx(10.0)
    first = next(k for k, f in enumerate(clip.frames) if _red(f))
    assert clip.timestamps[first - 1] < 6.0 <= clip.timestamps[first]  # frame 12 = video frame 63, 6.3 s
    meta = clip.metadata
    assert meta["total_num_frames"] == 100 and meta["fps"] == 10.0 and len(meta["frames_indices"]) == 20


def test_time_the_model_input_encodes_matches_the_event(event_video, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mmrft.models.tiny import build_tiny

    model_dir = build_tiny(tmp_path / "tiny", seed=0)
    processor = AutoProcessor.from_pretrained(model_dir)
    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    tokens_per_second = model.config.vision_config.tokens_per_second

    clip = load_video(event_video, VisionSpec())
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encoded_event_time(**video_kwargs) -> float:
        out = processor(
            text=[text], videos=[clip.frames], do_sample_frames=False, return_tensors="pt", **video_kwargs
        )
        # the processor kept our frames as they are: 20 frames -> 10 temporal patches of 336/14 = 24 x 24
        assert out["video_grid_thw"].tolist() == [[10, 24, 24]]
        pos, _ = model.model.get_rope_index(
            out["input_ids"], out["mm_token_type_ids"], video_grid_thw=out["video_grid_thw"],
            second_per_grid_ts=torch.as_tensor(out["second_per_grid_ts"]), attention_mask=out["attention_mask"],
        )  # fmt: skip
        t_pos = pos[0, 0, out["mm_token_type_ids"][0] == 2].reshape(10, -1)[:, 0]  # first token of each patch
        patch = next(k for k, f in enumerate(clip.frames) if _red(f)) // 2  # frame 12 -> temporal patch 6
        return float(t_pos[patch] - t_pos[0]) / tokens_per_second

    # with our metadata: sampled fps = 20 / 100 * 10 = 2, second_per_grid_ts = 2 / 2 = 1 s, so patch 6
    # sits at 6 * 1 s * 2 tokens/s = position 12 = 6.0 s: the event's time, within one patch (1 s).
    assert encoded_event_time(video_metadata=[clip.metadata]) == pytest.approx(6.0, abs=1.0)
    # without it transformers assumes 24 fps: second_per_grid_ts = 2/24, patch 6 sits at
    # int(6 * 2/24 * 2) = position 1 = 0.5 s: a temporal-grounding model would learn wrong times.
    assert encoded_event_time() == pytest.approx(0.5)


def test_synthetic_temporal_grounding_segment_matches_the_frames(tmp_path):
    path = write_video_dataset(tmp_path, "temporal_grounding", n=3, fps=4, min_duration=6, max_duration=8)
    ds = JsonlDataset(path, vision=VisionSpec(video_min_pixels=112 * 112, video_fps=4.0))
    for i in range(len(ds)):
        s = ds[i]
        start, end = s.solution["segment"]
        assert s.solution == s.solution_original and s.solution["duration"] == pytest.approx(s.video.duration)
        target = s.columns["meta"]["target"]
        assert target["color"] in s.prompt[0]["content"][1]["text"]
        # at 4 fps every video frame is sampled: the target shows exactly in frames with start <= t < end
        diff = [np.abs(f.astype(int) - s.video.frames[0].astype(int)).max() > 100 for f in s.video.frames]
        expect = [start <= t < end for t in s.video.timestamps]
        assert diff[1:] == expect[1:] and not expect[0]


def test_synthetic_tracking_boxes_follow_the_sampled_frames(tmp_path):
    path = write_video_dataset(tmp_path, "tracking", n=2, fps=4, min_duration=4, max_duration=4)
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    ds = JsonlDataset(path, vision=VisionSpec(video_min_pixels=112 * 112, video_fps=2.0))
    s = ds[0]
    # 4 s at 4 fps = 16 frames, sampled at 2 fps -> 8 frames at linspace(0, 15, 8) = 0, 2.14, ... 15
    assert s.video.frame_indices == [0, 2, 4, 6, 9, 11, 13, 15]
    assert s.solution["boxes"] == [raw[0]["solution"]["boxes"][k] for k in s.video.frame_indices]
    assert s.solution["times"] == pytest.approx([k / 4 for k in s.video.frame_indices])


def test_synthetic_videos_are_byte_identical(tmp_path):
    for d in ("a", "b"):
        write_video_dataset(tmp_path / d, "tracking", n=2, seed=5, min_duration=3, max_duration=3)
    digest = [
        hashlib.sha256(p.read_bytes()).hexdigest()
        for d in ("a", "b")
        for p in sorted((tmp_path / d).rglob("*.*"))
    ]
    assert digest[:3] == digest[3:]


@pytest.fixture
def bad_videos(tmp_path, event_video):
    (tmp_path / "garbage.mp4").write_bytes(b"\x00\x01 not a video" * 50)
    (tmp_path / "truncated.mp4").write_bytes(event_video.read_bytes()[:1500])
    good = {"id": "ok", "task": "temporal_grounding", "video": str(event_video), "prompt": "When?",
            "solution": {"segment": [6.0, 10.0], "duration": 10.0}}  # fmt: skip
    lines = [good] + [dict(good, id=name, video=f"{name}.mp4") for name in ("garbage", "truncated")]
    path = tmp_path / "videos.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_unreadable_and_truncated_videos_in_both_modes(bad_videos):
    strict = JsonlDataset(bad_videos)
    for i, name in ((1, "garbage"), (2, "truncated")):
        with pytest.raises(RecordError, match=rf"videos.jsonl:{i + 1}: record '{name}': .*{name}.mp4") as e:
            strict[i]
        assert e.value.reason == "corrupt_video"
    skip = JsonlDataset(bad_videos, on_bad_record="skip")
    assert [s.id for s in skip] == ["ok"] and skip.skipped == {"corrupt_video": 2}


def test_decord_backend_names_the_extra_when_missing(event_video):
    try:
        import decord  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'mmrft\[video\]'"):
            load_video(event_video, VisionSpec(video_backend="decord"))
    else:
        clip = load_video(event_video, VisionSpec(video_backend="decord"))
        ref = load_video(event_video, VisionSpec())
        assert clip.frame_indices == ref.frame_indices and clip.timestamps == pytest.approx(ref.timestamps)
        assert clip.frames.shape == ref.frames.shape and clip.metadata == ref.metadata
        assert np.abs(clip.frames.astype(int) - ref.frames.astype(int)).mean() < 2.0  # same decoded pixels


def test_processor_built_with_processor_kwargs_keeps_our_frames(tmp_path):
    from PIL import Image
    from transformers import AutoProcessor

    from data_pipelines.vision import processor_kwargs, resize_for_model
    from mmrft.models.tiny import build_tiny

    spec = VisionSpec(max_pixels=64 * 28 * 28, video_min_pixels=16 * 28 * 28, video_max_pixels=32 * 28 * 28)
    processor = AutoProcessor.from_pretrained(build_tiny(tmp_path / "tiny", seed=0), **processor_kwargs(spec))
    image, _ = resize_for_model(Image.new("RGB", (500, 300), "white"), spec)
    frames = np.full((8, 60, 100, 3), 255, np.uint8)
    write_video(tmp_path / "v.mp4", frames, fps=4)
    clip = load_video(tmp_path / "v.mp4", spec)
    # 500x300 under 64*784 = 50,176 px: beta = 1.729 -> 173.5 -> 168 high, 289.2 -> 280 wide
    assert image.size == (280, 168)
    out = processor.image_processor(images=[image], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 168 // 14, 280 // 14]]  # not resized again
    t, h, w, _ = clip.frames.shape
    vout = processor.video_processor(videos=[clip.frames], do_sample_frames=False, return_tensors="pt")
    assert vout["video_grid_thw"].tolist() == [[t // 2, h // 14, w // 14]]


def test_tracking_without_times_needs_one_box_per_sampled_frame(tmp_path, event_video):
    rec = {"id": "t", "task": "tracking", "video": {"path": str(event_video), "max_frames": 4}, "prompt": "Track.",
           "solution": {"boxes": [[16, 16, 48, 48], None, [16, 16, 48, 48], [16, 16, 48, 48]]}}  # fmt: skip
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(rec) + "\n" + json.dumps(dict(rec, id="u", video=str(event_video))) + "\n")
    ds = JsonlDataset(path, vision=VisionSpec(video_min_pixels=64 * 64))
    s = ds[0]  # 4 frames sampled, 4 boxes given; 64 px frames upscaled to 84 px: 16 * 84/64 = 21
    assert s.video.frames.shape[0] == 4 and s.solution["boxes"][1] is None
    assert s.solution["boxes"][0] == pytest.approx([21, 21, 63, 63])
    with pytest.raises(RecordError, match=r"t.jsonl:2: record 'u': solution.boxes has 4 boxes but 20 frames"):
        ds[1]
