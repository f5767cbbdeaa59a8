"""``mmrft data``: prepare datasets from real formats, write synthetic tasks, preview records.

mmrft data prepare coco ANNOTATIONS.json OUT --images DIR [--shots K] [--categories a,b]
mmrft data prepare refcoco REFS.p OUT --images DIR [--split val]
mmrft data prepare classification ROOT OUT [--shots K] [--no-choices]
mmrft data prepare temporal ANNOTATIONS OUT --videos DIR [--format charades|activitynet]
mmrft data prepare chart SRC OUT
mmrft data prepare jsonl FILE OUT [--strict]
mmrft data synth TASK OUT [--n N] [--seed S] [--split NAME]
mmrft data preview FILE [--n 16] [--out preview.png]
mmrft data filter --model DIR --data FILE [--k 8] [--keep 0.1:0.9] --out FILE [--unsolved FILE] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys

from data_pipelines.prompts import PROMPT_STYLES  # a constant; no heavy import
from data_pipelines.tasks import TASKS, get_task  # the registry; no heavy import


def _synth_tasks() -> tuple[str, ...]:
    """The tasks a built-in generator writes (the spec's ``synthetic``)."""
    return tuple(name for name, spec in TASKS.items() if spec.synthetic is not None)


def _common(p: argparse.ArgumentParser, prompt_style: str) -> None:
    p.add_argument(
        "--prompt-style",
        default=prompt_style,
        choices=PROMPT_STYLES,
        help=f"answer form the prompt asks for (default {prompt_style})",
    )
    p.add_argument(
        "--media",
        default="link",
        choices=("link", "copy", "absolute"),
        help="place media files by symlink (default), copy, or keep absolute paths",
    )
    p.add_argument("--name", default=None, help="dataset name: output file stem and record id prefix")


def _coord(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--coord-space",
        default="pixel",
        choices=("pixel", "norm1000"),
        help="pixel: Qwen2.5-VL (pixels of the resized image); norm1000: Qwen2-VL",
    )


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="prepare, synthesise and preview datasets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = data.add_subparsers(dest="data_command", metavar="ACTION")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    prep = sub.add_parser("prepare", help="convert a dataset in a known format to JSONL records")
    kinds = prep.add_subparsers(dest="kind", metavar="KIND")
    prep.set_defaults(func=lambda args: (prep.print_help(), 2)[1])

    p = kinds.add_parser(
        "coco", help="COCO/LVIS detection json -> detection records (one per image+category)"
    )
    p.add_argument("src", help="COCO-format annotations json")
    p.add_argument("out", help="output .jsonl file or folder")
    p.add_argument("--images", required=True, help="folder holding the json's image files")
    p.add_argument("--shots", type=int, default=None, help="keep k images per category (few-shot), seeded")
    p.add_argument("--categories", default=None, help="comma-separated category subset (e.g. novel classes)")
    p.add_argument("--negatives", type=int, default=0, help="per image, records for absent categories")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--with-score", action="store_true", help="ask for a confidence per box")
    _coord(p)
    _common(p, "think_answer")
    p.set_defaults(func=_prepare)

    p = kinds.add_parser("refcoco", help="RefCOCO/+/g refs + instances.json -> grounding records")
    p.add_argument("src", help="refs(unc).p pickle (or the same list as .json)")
    p.add_argument("out", help="output .jsonl file or folder")
    p.add_argument("--images", required=True, help="folder holding the COCO images")
    p.add_argument("--instances", default=None, help="instances.json (default: next to SRC)")
    p.add_argument("--split", default=None, help="refer split to keep: train, val, testA, testB, test")
    _coord(p)
    _common(p, "think_answer")
    p.set_defaults(func=_prepare)

    p = kinds.add_parser(
        "classification", help="ImageFolder tree (class per folder) -> classification records"
    )
    p.add_argument("src", help="root folder: ROOT/<class>/<image>")
    p.add_argument("out", help="output .jsonl file or folder")
    p.add_argument("--shots", type=int, default=None, help="keep k images per class, seeded")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-choices", action="store_true", help="leave the candidate list out of the prompt")
    p.add_argument(
        "--labels",
        default="pretty",
        choices=("pretty", "raw"),
        help="pretty: '001.Black_footed_Albatross' -> 'Black footed Albatross'",
    )
    p.add_argument("--subject", default="object", help="what the question asks about, e.g. 'bird species'")
    _common(p, "answer_only")
    p.set_defaults(func=_prepare)

    p = kinds.add_parser(
        "temporal", help="Charades-STA txt / ActivityNet Captions json -> temporal grounding"
    )
    p.add_argument(
        "src", help="annotations: Charades-STA 'VID START END##sentence' lines, or ActivityNet json"
    )
    p.add_argument("out", help="output .jsonl file or folder")
    p.add_argument("--videos", required=True, help="folder holding VIDEO_ID.mp4 files")
    p.add_argument("--format", default=None, choices=("charades", "activitynet"), help="default: by suffix")
    p.add_argument("--fps", type=float, default=None, help="sampling fps written into each record")
    p.add_argument("--max-frames", type=int, default=None, help="frame cap written into each record")
    _common(p, "think_answer")
    p.set_defaults(func=_prepare)

    p = kinds.add_parser("chart", help="chart image + .py code pairs -> chart-to-code records")
    p.add_argument("src", help="folder with NAME.png + NAME.py pairs")
    p.add_argument("out", help="output .jsonl file or folder")
    _common(p, "answer_only")
    p.set_defaults(func=_prepare)

    p = kinds.add_parser("jsonl", help="validate and normalise your own JSONL records")
    p.add_argument("src", help="records .jsonl")
    p.add_argument("out", help="output .jsonl file or folder")
    p.add_argument(
        "--strict", action="store_true", help="stop at the first bad record (default: skip, count)"
    )
    p.add_argument("--no-media-check", action="store_true", help="check the schema only, do not decode media")
    p.add_argument("--max-pixels", type=int, default=1280 * 28 * 28, help="image pixel budget for the check")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("synth", help="write a seeded synthetic task (shapes, videos, charts)")
    p.add_argument("task", choices=_synth_tasks())
    p.add_argument("out", help="output folder")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train")
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--prompt-style", default="answer_only", choices=PROMPT_STYLES)
    p.add_argument("--background", default="plain", choices=("plain", "noise"), help="shapes tasks")
    p.add_argument("--min-size-frac", type=float, default=None, help="shapes: smallest side / image size")
    p.add_argument("--max-size-frac", type=float, default=None, help="shapes: largest side / image size")
    p.add_argument("--distractors", type=int, default=None, help="shapes: at most this many other shapes")
    p.add_argument(
        "--question",
        default="shape",
        choices=("shape", "color"),
        help="classification: ask for the shape or its colour",
    )
    p.add_argument(
        "--coord-space",
        default="pixel",
        choices=("pixel", "norm1000"),
        help="grounding, detection, tracking: the box frame the prompt asks for",
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser("preview", help="contact sheet PNG of records with ground truth in the model frame")
    p.add_argument("file", help="records .jsonl")
    p.add_argument("--n", type=int, default=16, help="records to show")
    p.add_argument("--out", default=None, help="PNG path (default: FILE with .preview.png)")
    p.add_argument("--seed", type=int, default=None, help="pick records at random with this seed")
    p.add_argument("--cell", type=int, default=256, help="tile size in pixels")
    p.add_argument("--max-pixels", type=int, default=1280 * 28 * 28, help="image pixel budget (model frame)")
    p.add_argument("--video-min-pixels", type=int, default=128 * 28 * 28, help="per-frame minimum for video")
    p.set_defaults(func=_preview)

    p = sub.add_parser(
        "filter", help="keep the records a model solves sometimes: pass rate under K samples in a band"
    )
    p.add_argument("--model", required=True, help="checkpoint directory that samples the answers")
    p.add_argument("--data", required=True, help="records .jsonl to score")
    p.add_argument("--out", required=True, help="where the kept records go (.jsonl), with their pass rates")
    p.add_argument("--k", type=int, default=8, help="answers sampled per record (default 8)")
    p.add_argument("--keep", default="0.1:0.9", help="pass-rate band LO:HI kept, inclusive (default 0.1:0.9)")
    p.add_argument("--unsolved", default=None, help="also write the never-solved records (pass rate 0) here")
    p.add_argument("--config", default=None, help="YAML recipe: its rewards, rollout sampling and batch size")
    p.add_argument(
        "--temperature", type=float, default=None, help="sampling temperature (rollout.temperature)"
    )
    p.add_argument(
        "--seed", type=int, default=None, help="sampling seed (train.seed); same seed, same result"
    )
    p.add_argument(
        "--pass-threshold",
        type=float,
        default=None,
        help="share of the best total reward that passes (eval.pass_threshold)",
    )
    p.add_argument(
        "overrides", nargs="*", help="dotted config overrides, e.g. rewards=[iou] eval.batch_size=8"
    )
    p.set_defaults(func=_filter)


def _fail(message: str) -> int:
    print(f"mmrft data: error: {message}", file=sys.stderr)
    return 1


def _prepare(args: argparse.Namespace) -> int:
    from data_pipelines import converters
    from data_pipelines.records import RecordError
    from data_pipelines.vision import VisionSpec

    common = {
        "prompt_style": getattr(args, "prompt_style", None),
        "media": getattr(args, "media", None),
        "name": getattr(args, "name", None),
    }
    try:
        if args.kind == "coco":
            cats = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
            result = converters.convert_coco(
                args.src,
                args.images,
                args.out,
                shots=args.shots,
                categories=cats,
                negatives=args.negatives,
                seed=args.seed,
                coord_space=args.coord_space,
                with_score=args.with_score,
                **{**common, "name": args.name or "coco"},
            )
        elif args.kind == "refcoco":
            result = converters.convert_refcoco(
                args.src,
                args.images,
                args.out,
                instances=args.instances,
                split=args.split,
                coord_space=args.coord_space,
                **{**common, "name": args.name or "refcoco"},
            )
        elif args.kind == "classification":
            result = converters.convert_classification(
                args.src,
                args.out,
                shots=args.shots,
                seed=args.seed,
                choices=not args.no_choices,
                labels=args.labels,
                subject=args.subject,
                **common,
            )
        elif args.kind == "temporal":
            result = converters.convert_temporal(
                args.src,
                args.videos,
                args.out,
                fmt=args.format,
                fps=args.fps,
                max_frames=args.max_frames,
                **common,
            )
        elif args.kind == "chart":
            result = converters.convert_chart(args.src, args.out, **common)
        else:
            result = converters.convert_jsonl(
                args.src,
                args.out,
                on_bad_record="error" if args.strict else "skip",
                vision=VisionSpec(max_pixels=args.max_pixels),
                check_media=not args.no_media_check,
            )
    except (RecordError, ValueError, FileNotFoundError, KeyError) as e:
        return _fail(str(e) if not isinstance(e, KeyError) else f"missing key {e} in {args.src}")
    print(result.summary())
    return 0


def _synth(args: argparse.Namespace) -> int:
    common = {"n": args.n, "seed": args.seed, "split": args.split, "prompt_style": args.prompt_style}
    try:
        generator = get_task(args.task).synthetic
        if generator == "shapes":
            from data_pipelines.synthetic import write_shapes_dataset

            path = write_shapes_dataset(
                args.out, args.task, image_size=args.image_size, background=args.background,
                min_size_frac=args.min_size_frac, max_size_frac=args.max_size_frac,
                distractors=args.distractors, coord_space=args.coord_space, question=args.question, **common,
            )  # fmt: skip
        elif generator == "video":
            from data_pipelines.synthetic.video import write_video_dataset

            path = write_video_dataset(
                args.out, args.task, image_size=args.image_size, coord_space=args.coord_space, **common
            )
        elif generator == "charts":
            from data_pipelines.synthetic.charts import write_chart_dataset

            path = write_chart_dataset(args.out, **common)
        else:
            return _fail(f"task {args.task!r} names generator {generator!r}; built in: shapes, video, charts")
    except ValueError as e:
        return _fail(str(e))
    print(f"wrote {args.n} {args.task} records to {path}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from pathlib import Path

    from data_pipelines.dataset import JsonlDataset
    from data_pipelines.preview import write_preview
    from data_pipelines.records import RecordError
    from data_pipelines.vision import VisionSpec

    out = Path(args.out) if args.out else Path(args.file).with_suffix(".preview.png")
    try:
        vision = VisionSpec(max_pixels=args.max_pixels, video_min_pixels=args.video_min_pixels)
        ds = JsonlDataset(args.file, vision=vision, on_bad_record="skip")
        write_preview(ds, out, n=args.n, seed=args.seed, cell=args.cell)
    except (RecordError, ValueError, FileNotFoundError) as e:
        return _fail(str(e))
    print(f"wrote {out} ({min(args.n, len(ds))} records); {ds.skipped_summary()}")
    return 0


def _filter(args: argparse.Namespace) -> int:
    from mmrft.config import ConfigError, load_config

    overrides = [*args.overrides, f"model.path={args.model}", "model.tiny=null"]
    if args.seed is not None:
        overrides.append(f"train.seed={args.seed}")
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        return _fail(f"config error: {e}")
    from data_pipelines.records import RecordError
    from mmrft import distributed, selection

    temperature = cfg.rollout.temperature if args.temperature is None else args.temperature
    threshold = cfg.eval.pass_threshold if args.pass_threshold is None else args.pass_threshold
    try:
        band = selection.parse_band(args.keep)
        result, info = selection.run_filter(
            cfg, args.data, k=args.k, temperature=temperature, pass_threshold=threshold, band=band,
            out=args.out, unsolved=args.unsolved,
            task_rewards=args.config is None and not any(o.startswith("rewards=") for o in args.overrides),
        )  # fmt: skip
    except (RecordError, ValueError, FileNotFoundError) as e:
        return _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    if info.is_main:
        print(selection.report(result, args.k, temperature, cfg.train.seed, band, args.out, args.unsolved))
    distributed.shutdown()
    return 0
