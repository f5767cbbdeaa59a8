"""Build a tiny Qwen2.5-VL from nothing, offline, in about a second.

Same architecture as the released checkpoints (M-RoPE, windowed vision attention, patch 14, merge 2,
temporal patch 2) at toy width, with a byte-level BPE tokenizer trained here on a small corpus and
carrying Qwen's 14 special tokens and chat template. Used by the tests, the quickstart and the
benchmarks; never committed (the saved format differs across transformers majors).

    mmrft make-tiny DIR [--seed S] [--preset tiny|small]
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from mmrft.checkpoint.files import recover_dir, replace_dir, tmp_dir_for

# Qwen2.5-VL's special tokens, in the released order.
QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The chat template format of Qwen2-VL / Qwen2.5-VL (vision placeholders expand in the processor).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinyPreset:
    """Sizes of a tiny model. head_dim = hidden / heads; mrope_section sums to head_dim / 2."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vision_hidden: int
    vision_depth: int
    vision_heads: int
    vision_intermediate: int
    mrope_section: tuple[int, int, int]
    vocab_size: int


PRESETS = {
    # about 0.6 M parameters: the tests' model
    "tiny": TinyPreset(128, 2, 4, 2, 256, 64, 2, 4, 128, (4, 6, 6), 1024),
    # about 4 M parameters: enough capacity for the quickstart to learn in minutes on CPU
    "small": TinyPreset(256, 4, 4, 2, 768, 128, 4, 4, 384, (8, 12, 12), 1024),
}

_WORDS = (
    "the a an of in on at to is are what which how many shape shapes color colour image picture video "
    "answer think choose from find box detect every each one two three four five six seven eight nine "
    "ten zero none no yes objects object label labels count counting grounding classification detection "
    "circle square triangle star cross ellipse rectangle diamond hexagon red green blue yellow purple "
    "orange black white gray grey cyan magenta pink brown left right top bottom small large big "
    "first then reason step because so there start end second seconds time when appears chart bar line "
    "scatter plot code python import matplotlib pyplot plt figure title xlabel ylabel legend show"
).split()


def _corpus(seed: int) -> list[str]:
    """Text the tokenizer learns its merges from: chat scaffolding, task words, numbers, JSON."""
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(words.capitalize() + rng.choice([".", "?", "!", ":"]))
    for w in _WORDS:
        for _ in range(10):
            lines.append(f"<answer>{w}</answer>")
            lines.append(f"<think>{w}</think>")
            lines.append(f" {w}")
    for _ in range(1500):
        box = [rng.randint(0, 999) for _ in range(4)]
        lines.append(
            f'{{"bbox_2d": [{box[0]}, {box[1]}, {box[2]}, {box[3]}], "label": "{rng.choice(_WORDS)}"}}'
        )
        lines.append(
            f"<answer>{rng.randint(0, 30)}</answer> {rng.random() * 100:.1f}s to {rng.random() * 100:.1f}s"
        )
    lines += ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"] * 50
    lines += ["<|im_start|>assistant\n"] * 50
    return lines


def build_tokenizer(seed: int = 0, vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on `_corpus`, wrapped as transformers' Qwen2 tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    vocab = tok.get_vocab()
    merges = _merges_of(tok)
    tokenizer = Qwen2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _merges_of(tok) -> list[tuple[str, str]]:
    model = json.loads(tok.to_str())["model"]
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]


BUILD_STAMP = "tiny_build.json"


def is_tiny_build(path: str | Path, seed: int, preset: str, arch: str = "qwen2_5_vl") -> bool:
    """Whether ``path`` holds a finished ``build_tiny`` output of these settings."""
    stamp = Path(path) / BUILD_STAMP
    try:
        return json.loads(stamp.read_text()) == {"seed": seed, "preset": preset, "arch": arch}
    except (OSError, ValueError):
        return False


def build_tiny(
    out_dir: str | Path, seed: int = 0, preset: str = "tiny", arch: str = "qwen2_5_vl", replace: bool = False
) -> Path:
    """Write a tiny Qwen2.5-VL (or, with ``arch="qwen2_vl"``, Qwen2-VL) checkpoint, tokenizer and
    processor to ``out_dir``; return the path.

    Deterministic from ``seed``: the same seed gives the same weights and vocabulary. Atomic: built in
    ``.NAME.tmp`` beside ``out_dir`` and renamed into place, so a kill leaves the old folder or the new
    one. An existing ``out_dir`` is replaced when it is empty, an earlier tiny build, or ``replace``;
    any other folder is left alone (a ValueError).
    """
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if arch not in ("qwen2_5_vl", "qwen2_vl"):
        raise ValueError(f"unknown tiny arch {arch!r}; available: qwen2_5_vl, qwen2_vl")
    if preset not in PRESETS:
        raise ValueError(f"unknown tiny preset {preset!r}; available: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    final = Path(out_dir)
    recover_dir(final)
    if final.is_dir() and any(final.iterdir()) and not replace and not (final / BUILD_STAMP).is_file():
        raise ValueError(f"{final} exists and is not a tiny-model folder; give a new or empty directory")
    out = tmp_dir_for(final)

    tokenizer = build_tokenizer(seed, p.vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=p.hidden,
        intermediate_size=p.intermediate,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads,
        max_position_embeddings=4096,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 10000.0,
            "mrope_section": list(p.mrope_section),
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
    token_ids = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    if arch == "qwen2_5_vl":
        config = Qwen2_5_VLConfig(
            text_config=text_config,
            vision_config=dict(
                depth=p.vision_depth,
                hidden_size=p.vision_hidden,
                intermediate_size=p.vision_intermediate,
                num_heads=p.vision_heads,
                out_hidden_size=p.hidden,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
                tokens_per_second=2,
                window_size=112,
                fullatt_block_indexes=[p.vision_depth - 1],
            ),
            **token_ids,
        )
        model_cls, processor_cls = Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        config = Qwen2VLConfig(
            text_config=text_config,
            vision_config=dict(
                depth=p.vision_depth,
                embed_dim=p.vision_hidden,
                hidden_size=p.hidden,
                mlp_ratio=p.vision_intermediate // p.vision_hidden,
                num_heads=p.vision_heads,
                patch_size=14,
                spatial_merge_size=2,
                temporal_patch_size=2,
            ),
            **token_ids,
        )
        model_cls, processor_cls = Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.save_pretrained(out)

    image_processor = Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=1280 * 28 * 28)
    video_processor = Qwen2VLVideoProcessor()
    processor = processor_cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )
    processor.save_pretrained(out)
    (out / BUILD_STAMP).write_text(json.dumps({"seed": seed, "preset": preset, "arch": arch}))
    replace_dir(out, final)
    return final
