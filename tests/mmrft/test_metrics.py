"""Step metrics combine like one process holding the whole batch; the memory report counts what it says."""

import os
from types import SimpleNamespace

import pytest
import torch

from mmrft.distributed import DistInfo
from mmrft.memory import PhasePeaks, RSSWatch, activation_estimate, memory_report
from mmrft.metrics import StepMetrics, per_pass
from mmrft.models.loading import load_model

ONE = DistInfo()


def test_each_kind_of_metric_combines_as_declared():
    m = StepMetrics()
    m.add_mean("completion_len", 4.0, 2)  # a micro-batch of 2 sequences, mean length 4
    m.add_mean("completion_len", 8.0, 6)
    m.add_mean("never", 3.0, 0)  # no items: reported as 0, not 0/0
    m.add_sum("loss", 0.25)
    m.add_sum("loss", -0.5)
    m.add_max("mem/update_peak_mib", 10.0)
    m.add_max("mem/update_peak_mib", 7.0)
    m.add_global("reward", 0.4)
    # policy_loss metrics of two micro-batches: 10 and 30 tokens, 2 and 6 sequences
    m.add_loss_metrics({"clip_frac": 0.1, "adv_abs_mean": 1.0, "adv_abs_max": 2.0, "tokens": 10.0}, 10, 2)
    m.add_loss_metrics({"clip_frac": 0.5, "adv_abs_mean": 0.5, "adv_abs_max": 3.0, "tokens": 30.0}, 30, 6)
    out = m.reduce(ONE)
    assert out["completion_len"] == pytest.approx((2 * 4 + 6 * 8) / 8)
    assert out["never"] == 0.0 and out["loss"] == pytest.approx(-0.25) and out["reward"] == 0.4
    assert out["mem/update_peak_mib"] == 10.0
    assert out["clip_frac"] == pytest.approx((10 * 0.1 + 30 * 0.5) / 40)  # token-weighted
    assert out["adv_abs_mean"] == pytest.approx((2 * 1.0 + 6 * 0.5) / 8)  # sequence-weighted
    assert out["adv_abs_max"] == 3.0 and out["tokens"] == 40.0


def test_every_mu_pass_is_kept():
    passes = [{"loss": 1.0, "grad_norm": 2.0}, {"loss": 3.0, "grad_norm": 4.0}]
    assert per_pass(passes) == {"loss": 3.0, "grad_norm": 4.0, "pass1/loss": 1.0, "pass1/grad_norm": 2.0,
                                "pass2/loss": 3.0, "pass2/grad_norm": 4.0}  # fmt: skip
    assert per_pass(passes[:1]) == passes[0]  # mu 1: no pass names


def test_memory_report_counts_parameters_gradients_and_adam_state(tiny_model_dir):
    lm = load_model(tiny_model_dir, device=torch.device("cpu"), freeze_vision=True, with_reference=True)
    n_all = sum(p.numel() for p in lm.policy.parameters())
    n_train = sum(p.numel() for p in lm.policy.parameters() if p.requires_grad)
    assert 0 < n_train < n_all
    r = memory_report(lm.policy, lm.reference, ONE, activations=123)
    assert r.parameters == 4 * n_all and r.reference_parameters == 4 * n_all  # float32
    assert r.gradients == 4 * n_train and r.optimizer_state == 2 * 4 * n_train
    assert r.total == 4 * (2 * n_all + 3 * n_train) + 123
    assert "rank 0 (cpu)" in r.line()


def test_activation_estimate_by_hand():
    cfg = SimpleNamespace(hidden_size=8, num_attention_heads=2, num_key_value_heads=1, intermediate_size=16,
                          num_hidden_layers=2, vocab_size=10)  # fmt: skip
    # tokens 2*3 + 4*5 = 26; per layer and token 6*8 + 2*4 + 3*16 = 104 values; head 2 x fp32 x 4*5*10
    head = 2 * 4 * 200
    assert activation_estimate(cfg, 2, 4, 3, 5, 2, checkpointing=False) == 2 * 26 * 104 * 2 + head
    assert activation_estimate(cfg, 2, 4, 3, 5, 2, checkpointing=True) == (2 * 26 * 8 + 26 * 104) * 2 + head


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc clear_refs")
def test_phase_peaks_are_reset_between_phases_on_cpu():
    peaks = PhasePeaks(torch.device("cpu"))
    with peaks.phase("big"):
        x = torch.ones(64 * 2**20)  # 256 MiB, touched
        del x
    with peaks.phase("small"):
        torch.ones(16)
    out = peaks.metrics()
    assert set(out) == {"mem/big_peak_mib", "mem/small_peak_mib"}
    assert out["mem/big_peak_mib"] - out["mem/small_peak_mib"] > 200


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc clear_refs")
def test_an_outer_watch_keeps_its_peak_across_the_phase_resets():
    outer = RSSWatch()
    assert outer.start()
    peaks = PhasePeaks(torch.device("cpu"))
    with peaks.phase("big"):
        x = torch.ones(64 * 2**20)  # 256 MiB, touched
        del x
    with peaks.phase("small"):  # resets the process's high-water mark
        torch.ones(16)
    assert (
        outer.stop() / 2**20
        >= peaks.metrics()["mem/big_peak_mib"]
        > peaks.metrics()["mem/small_peak_mib"] + 200
    )
