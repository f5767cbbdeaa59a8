"""The two sides of ``benchmarks/train_step.py``: a row's settings, its records, an mmrft ``Trainer`` and a TRL
``GRPOTrainer`` configured alike, and the counters both are measured with (see that script's docstring)."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import re
from pathlib import Path

import torch

from mmrft.memory import RSSWatch

G = 8
PROMPTS_PER_STEP = 8
LR = 1e-5
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One benchmark row: what both sides run."""

    name: str = "custom"
    max_completion: int = 12
    beta: float = 0.0
    mu: int = 1
    image_size: int = 112
    images_per_prompt: int = 1
    video_frames: int = 0
    gradient_checkpointing: bool = False
    lora: bool = False


# The target list of issue 10: mmrft at least 2x TRL's throughput on every row.
MATRIX = [
    Setting("12 tokens", 12),
    Setting("64 tokens", 64),
    Setting("256 tokens", 256),
    Setting("64 tokens, beta 0.04", 64, beta=0.04),
    Setting("64 tokens, mu 2", 64, mu=2),
    Setting("448 px", 12, image_size=448),
    Setting("4 images a prompt", 12, images_per_prompt=4),
    Setting("8-frame video", 12, video_frames=8),
    Setting("64 tokens, gradient checkpointing", 64, gradient_checkpointing=True),
    Setting("64 tokens, LoRA", 64, lora=True),
]


def _core(model):
    """The Qwen*VLModel (``.visual``, ``.language_model``) under a peft wrapper or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


class Counter:
    """Forward hooks on a model's vision tower and decoder: calls, images and tokens since the last ``take``."""

    def __init__(self, hf_model):
        core = _core(hf_model)
        self.vision_calls = self.images = self.patches = self.lm_calls = self.lm_tokens = 0
        self.handles = [
            core.visual.register_forward_hook(self._vision, with_kwargs=True),
            core.language_model.register_forward_hook(self._lm, with_kwargs=True),
        ]

    def _vision(self, module, args, kwargs, output):
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        pixels = args[0] if args else kwargs["hidden_states"]
        self.vision_calls += 1
        self.images += 0 if grid is None else int(grid.shape[0])
        self.patches += int(pixels.shape[0])

    def _lm(self, module, args, kwargs, output):
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids", args[0] if args else None)
        self.lm_calls += 1
        self.lm_tokens += int(x.shape[0] * x.shape[1]) if x is not None else 0

    def take(self) -> dict[str, int]:
        out = {
            "vision_calls": self.vision_calls,
            "vision_images": self.images,
            "vision_patches": self.patches,
            "lm_calls": self.lm_calls,
            "lm_tokens": self.lm_tokens,
        }
        self.vision_calls = self.images = self.patches = self.lm_calls = self.lm_tokens = 0
        return out


class PeakMemory:
    """Peak RSS of a stretch of work above the RSS at its start (Linux: VmHWM reset through clear_refs)."""

    def __init__(self):
        self.ok = Path("/proc/self/clear_refs").exists()
        self.base = 0
        self._watch = RSSWatch()

    @staticmethod
    def _status(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    def start(self) -> None:
        if not self.ok:
            return
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so the peak is this step's
        except OSError:
            self.ok = False
            return
        # reset the peak RSS to the current RSS; kept across the trainer's own per-phase resets
        self._watch = RSSWatch()
        self.ok = self._watch.start()
        self.base = self._status("VmRSS")

    def peak_mb(self) -> float | None:
        return (self._watch.peak() - self.base) / 2**20 if self.ok else None


def make_inputs(work: Path, preset: str, n_records: int, s: Setting) -> tuple[Path, Path]:
    """The tiny model and the records of a setting (classification of shapes; k images or a video each)."""
    from data_pipelines.io import write_jsonl
    from data_pipelines.prompts import user_prompt
    from data_pipelines.synthetic import write_shapes_dataset
    from mmrft.models.tiny import build_tiny

    model_dir = Path(build_tiny(work / f"model_{preset}", seed=0, preset=preset))
    per = s.video_frames or s.images_per_prompt
    data = work / f"data_{s.image_size}_{per}_{s.video_frames}"
    shapes = write_shapes_dataset(
        data, task="classification", n=n_records * per, seed=0, question="shape", image_size=s.image_size
    )
    if per == 1:
        return model_dir, Path(shapes)
    recs = [json.loads(line) for line in Path(shapes).read_text().splitlines()]
    question = recs[0]["prompt"][0]["content"][-1]["text"]
    out = []
    for i in range(n_records):
        group = recs[i * per : (i + 1) * per]
        rec = {"id": f"bench-{i:05d}", "task": "classification", "solution": group[0]["solution"]}
        if s.video_frames:
            import numpy as np
            from PIL import Image

            from data_pipelines.synthetic.video import write_video

            frames = np.stack([np.asarray(Image.open(data / r["images"][0]).convert("RGB")) for r in group])
            write_video(data / "videos" / f"{i:05d}.mp4", frames, fps=2)
            rec["video"] = {"path": f"videos/{i:05d}.mp4", "fps": 2.0, "max_frames": s.video_frames}
            rec["prompt"] = user_prompt(question, n_images=0, video=True)
        else:
            rec["images"] = [r["images"][0] for r in group]
            rec["prompt"] = user_prompt(question, n_images=per)
        out.append(rec)
    path = data / "bench.jsonl"
    write_jsonl(path, out)
    return model_dir, path


def mmrft_trainer(model_dir: Path, train_file: Path, out: Path, rollouts: int, s: Setting):
    from mmrft.config import load_config
    from mmrft.trainer import Trainer

    px = s.image_size * s.image_size
    overrides = [
        f"model.path={model_dir}",
        "model.dtype=float32",
        "model.attn_implementation=sdpa",
        f"model.gradient_checkpointing={str(s.gradient_checkpointing).lower()}",
        f"model.lora_r={LORA['r'] if s.lora else 0}",
        f"model.lora_alpha={LORA['alpha']}",
        f"model.lora_dropout={LORA['dropout']}",
        f"data.train_file={train_file}",
        f"data.eval_file={train_file}",
        "data.shuffle=false",
        f"data.max_pixels={max(px, 1280 * 28 * 28)}",
        f"rollout.group_size={G}",
        f"rollout.max_completion_length={s.max_completion}",
        "rollout.max_prompt_length=4096",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "rollout.top_k=0",
        f"train.prompts_per_step={PROMPTS_PER_STEP}",
        f"train.micro_batch_size={PROMPTS_PER_STEP * G}",
        f"train.lr={LR}",
        "train.adam_betas=[0.9, 0.99]",
        "train.weight_decay=0.0",
        "train.max_grad_norm=1.0",
        "train.device=cpu",
        "train.seed=0",
        "train.progress_bar=false",
        "train.tensorboard=false",
        "train.plot=false",
        "train.sample_every=1000000",
        f"grpo.steps={rollouts}",
        f"grpo.beta={s.beta}",
        f"grpo.num_iterations={s.mu}",
        "grpo.loss_aggregation=token_mean",
        "grpo.scale_rewards=group",
        "grpo.epsilon_low=0.2",
        "grpo.epsilon_high=0.2",
        "rewards=[accuracy]",
        "eval.max_samples=8",
        f"train.output_dir={out}",
    ]
    if s.video_frames:  # frames kept at the image size (the default per-frame floor is 128 tokens)
        overrides += [f"data.video_min_pixels={px}", f"data.video_max_pixels={px}",
                      f"data.video_total_pixels={px * s.video_frames}", "data.video_fps=2.0",
                      f"data.video_max_frames={s.video_frames}", f"data.video_min_frames={min(4, s.video_frames)}"]  # fmt: skip
    return Trainer(load_config(None, overrides))


def _trl_row(sample) -> dict:
    """A Sample in TRL's conversational form with an ``images`` column (a video: every second frame)."""
    from PIL import Image

    images = list(sample.images)
    prompt = sample.prompt
    if sample.video is not None:
        images = [Image.fromarray(f) for f in sample.video.frames[::2]]
        content = [{"type": "image"} for _ in images]
        content += [c for c in prompt[0]["content"] if c.get("type") == "text"]
        prompt = [{"role": "user", "content": content}]
    return {
        "prompt": prompt,
        "images": images,
        "solution": sample.solution,
        "task": sample.task,
        "id": sample.id,
    }


def trl_trainer(
    model_dir: Path, samples: list, out: Path, rollouts: int, callbacks, s: Setting, seen_ids: list
):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import GRPOConfig, GRPOTrainer

    import rewards

    model = AutoModelForImageTextToText.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation="sdpa", local_files_only=True
    )
    processor = AutoProcessor.from_pretrained(str(model_dir), local_files_only=True)
    accuracy = rewards.get("accuracy")

    @functools.wraps(accuracy)  # keeps TRL's reward name; records which records each rollout scored
    def accuracy_spy(completions, **columns):
        seen_ids.append(list(columns["id"]))
        return accuracy(completions, **columns)

    peft_config = None
    if s.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                 target_modules=LORA["targets"], task_type="CAUSAL_LM")  # fmt: skip
    args = GRPOConfig(
        output_dir=str(out),
        max_steps=rollouts * s.mu,
        per_device_train_batch_size=PROMPTS_PER_STEP * G,  # completions per step, one micro-batch
        gradient_accumulation_steps=1,
        steps_per_generation=1,
        num_generations=G,
        num_iterations=s.mu,
        max_completion_length=s.max_completion,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=s.beta,
        loss_type="dapo",
        scale_rewards="group",
        epsilon=0.2,
        learning_rate=LR,
        adam_beta1=0.9,
        adam_beta2=0.99,
        weight_decay=0.0,
        lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": 0.1},
        max_grad_norm=1.0,
        gradient_checkpointing=s.gradient_checkpointing,  # TRL's default is True; the row decides here
        gradient_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        shuffle_dataset=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=[accuracy_spy],
        args=args,
        train_dataset=Dataset.from_list([_trl_row(x) for x in samples]),
        processing_class=processor,
        callbacks=callbacks,
        peft_config=peft_config,
    )
