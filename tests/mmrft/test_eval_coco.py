"""`mmrft eval --predictions` on a detection set gives the COCO numbers pycocotools gives when called
directly on the same detections: records with no objects, missing predictions, unparsable answers,
unlabelled boxes and a prediction for an id that is no record's included."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data_pipelines.dataset import JsonlDataset
from mmrft.cli import main

W, H = 150, 100  # resized to 140 x 112 for the model: sx = 14/15, sy = 1.12, so the frame mapping is live
CATS = ["circle", "square", "triangle"]


def _gt(rng, n):
    boxes = []
    for _ in range(n):
        x, y = rng.uniform(0, W - 40), rng.uniform(0, H - 40)
        boxes.append(
            [round(x, 1), round(y, 1), round(x + rng.uniform(10, 40), 1), round(y + rng.uniform(10, 40), 1)]
        )
    return boxes


def _jitter(rng, box, amount):
    x1, y1, x2, y2 = (v + rng.uniform(-amount, amount) for v in box)
    return [max(0.0, x1), max(0.0, y1), min(W - 1, max(x2, x1 + 1)), min(H - 1, max(y2, y1 + 1))]


def _dataset(tmp_path):
    """24 records: k objects of one class each (k = 0 for every sixth), their predictions in the model
    frame, and what pycocotools should see (original pixels, one image per record)."""
    rng = np.random.default_rng(0)
    Image.new("RGB", (W, H), "white").save(tmp_path / "im.png")
    records, preds, expected = [], [], []
    for i in range(24):
        cat = CATS[i % 3]
        boxes = [] if i % 6 == 5 else _gt(rng, int(rng.integers(1, 4)))
        records.append({"id": f"r{i}", "task": "detection", "images": ["im.png"],
                        "prompt": f"Detect every {cat}.", "solution": {"boxes": boxes, "labels": [cat] * len(boxes)}})  # fmt: skip
        expected.append([])
        if i == 7:
            continue  # no prediction at all: its objects are misses
        if i == 8:
            preds.append({"id": "r8", "completion": "<answer>I cannot tell</answer>"})  # unparsable
            continue
        dets = [(_jitter(rng, b, 3), cat, round(float(rng.uniform(0.05, 1)), 3)) for b in boxes]
        if i % 4 == 0:  # a false positive, of another class on some records
            fp_cat = CATS[(i + 1) % 3] if i % 8 == 0 else cat
            dets.append((_jitter(rng, [10, 10, 60, 60], 5), fp_cat, round(float(rng.uniform(0.05, 1)), 3)))
        if i == 10:  # a duplicate of its first box with a lower confidence
            dets.append((dets[0][0], cat, 0.01))
        expected[i] = dets
        answer = []
        for k, (b, c, s) in enumerate(dets):
            entry = {"bbox_2d": [b[0] * 14 / 15, b[1] * 1.12, b[2] * 14 / 15, b[3] * 1.12], "label": c}
            if not (i == 3 and k == 0):  # no confidence: scored 1.0
                entry["score"] = s
            else:
                expected[i][k] = (b, c, 1.0)
            answer.append(entry)
        if i == 2:
            answer.append({"bbox_2d": [1, 1, 20, 20]})  # unlabelled: belongs to no class
        text = json.dumps(answer)
        preds.append(
            {"id": f"r{i}", "completion": f"<think>looking</think><answer>{text}</answer>" if i % 2 else text}
        )
    preds.append({"id": "not-a-record", "completion": "[]"})
    data = tmp_path / "det.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    pfile = tmp_path / "preds.jsonl"
    pfile.write_text("".join(json.dumps(p) + "\n" for p in preds))
    return data, pfile, records, expected


def _direct(records, expected, scale) -> COCOeval:
    """pycocotools as a user would call it: GT from the records, detections with loadRes."""
    sx, sy = scale
    images = [{"id": i + 1} for i in range(len(records))]
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(CATS)]
    anns = []
    for i, r in enumerate(records):
        for b in r["solution"]["boxes"]:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": CATS.index(r["solution"]["labels"][0]) + 1,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1]),
                         "iscrowd": 0})  # fmt: skip
    gt = COCO()
    gt.dataset = {"images": images, "categories": cats, "annotations": anns}
    gt.createIndex()
    dets = []
    for i, row in enumerate(expected):
        # what the model wrote (original * scale), mapped back the only way there is: / scale
        ordered = sorted(row, key=lambda d: (-d[2], *[v * s for v, s in zip(d[0], (sx, sy, sx, sy))], d[1]))
        for b, c, s in ordered:
            x1, y1, x2, y2 = (
                (b[0] * 14 / 15) / sx,
                (b[1] * 1.12) / sy,
                (b[2] * 14 / 15) / sx,
                (b[3] * 1.12) / sy,
            )
            dets.append({"image_id": i + 1, "category_id": CATS.index(c) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "score": s})  # fmt: skip
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev


def test_predictions_give_the_pycocotools_numbers(tmp_path, capsys):
    data, pfile, records, expected = _dataset(tmp_path)
    scale = JsonlDataset(data).load(0).scales[0]
    assert scale == pytest.approx((14 / 15, 1.12))
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(pfile), "--data", str(data), "--out", str(out)]) == 0
    ev = json.loads((out / "eval.json").read_text())
    m = ev["metrics"]
    direct = _direct(records, expected, scale)
    assert m["detection/AP"] == pytest.approx(direct.stats[0], abs=1e-9)
    assert m["detection/AP50"] == pytest.approx(direct.stats[1], abs=1e-9)
    assert m["detection/AP75"] == pytest.approx(direct.stats[2], abs=1e-9)
    assert m["detection/AR100"] == pytest.approx(direct.stats[8], abs=1e-9)
    per_class = []
    for k, c in enumerate(CATS):
        p = direct.eval["precision"][:, :, k, 0, -1]
        per_class.append(p[p > -1].mean())
        assert m[f"detection/AP/{c}"] == pytest.approx(per_class[-1], abs=1e-9)
    assert m["detection/mAP_mean_of_classes"] == pytest.approx(np.mean(per_class), abs=1e-9)
    assert 0.1 < m["detection/AP"] < m["detection/AP50"] < 0.95  # non-trivial numbers by construction
    # every record counted, failures reported apart
    assert ev["records"]["evaluated"] == 24 and ev["records"]["missing_prediction"] == 1
    assert ev["records"]["unknown_prediction_ids"] == 1 and ev["unknown_prediction_ids"] == ["not-a-record"]
    assert m["detection/failed_rate"] == pytest.approx(1 / 24)
    assert m["detection/parse_fail_rate"] == pytest.approx(1 / 24)
    assert m["detection/unlabeled_boxes"] == 1.0
    missing = {"id": "r7", "status": "missing_prediction", "error": "no prediction for this id"}
    assert missing in ev["failures"]
    assert ev["decoding"]["mode"] == "external"
    # the parsed answers are in original pixels
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"r{i}" for i in range(24)]
    first = rows[0]["parsed"][0]["boxes"]
    want = sorted(expected[0], key=lambda d: -d[2])[0]
    assert first[0]["box"] == pytest.approx(want[0], abs=1e-9) and first[0]["label"] == want[1]
    assert rows[8]["parsed"][0]["failure"] == "parse_fail"
    assert "detection/AP" in capsys.readouterr().out


def test_no_detections_at_all_scores_zero_not_an_error(tmp_path):
    data, _, records, _ = _dataset(tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("".join(json.dumps({"id": r["id"], "completion": "[]"}) + "\n" for r in records))
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(empty), "--data", str(data), "--out", str(out)]) == 0
    m = json.loads((out / "eval.json").read_text())["metrics"]
    assert m["detection/AP"] == 0.0 and m["detection/mAP_mean_of_classes"] == 0.0
    assert m["detection/parse_fail_rate"] == 0.0  # "[]" is a valid "no objects" answer
