"""The hostile corpus (rewards.sandbox.battery.CASES) against three isolation levels on this machine.

- ``auto``: the strongest the machine allows (CI: root in a container: namespaces, uid, Landlock, seccomp);
- ``no-namespaces``: what a platform without namespaces gets (uid or no capabilities, Landlock, seccomp);
- ``minimal``: the floor alone (process, rlimits, scrubbed env, scratch dir, timeout, output cap).

Every case runs where it is harmless by construction (bounded forks and allocations, writes to its own
canary only). A case is asserted contained whenever a layer that contains it is present; the floor cases
(timeouts, memory, output, environment secrets, plt.show, file size, descriptors) are asserted everywhere.
Each case also asserts its outcome, unchanged files outside the scratch dir, no leaked secret and a wall
time under the timeout plus a margin (see ``run_battery``). The secret is put in this process's
environment before any pool starts, so a pool that passed its environment on would leak it. The last test
runs the same programs through ``chart_render`` and checks their scores and ``fail/<reason>`` counts.
"""

from __future__ import annotations

import os

import pytest

from rewards.sandbox import SandboxConfig, SandboxPool
from rewards.sandbox.battery import CASES, SECRET_ENV, layer_tags, run_battery

LEVELS = {
    "auto": {},
    "no-namespaces": {"namespaces": False},
    "minimal": {"isolation": "minimal"},
}
TOKEN = "tok" + "5ecre7" * 4


@pytest.fixture(scope="module")
def reports():
    old = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = TOKEN
    out = {}
    try:
        for level, kw in LEVELS.items():
            cfg = SandboxConfig(workers=2, timeout_s=2.0, cpu_s=2, memory_mb=512, width_px=80, height_px=60,
                                dpi=20, **kw)  # fmt: skip
            with SandboxPool(cfg) as pool:
                layers, notes = pool.isolation()
                out[level] = (layer_tags(layers), {r.name: r for r in run_battery(pool)})
    finally:
        if old is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = old
    return out


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_is_contained_where_a_layer_covers_it(reports, level, case):
    tags, by_name = reports[level]
    rep = by_name[case.name]
    covered = not case.needs or bool(tags & set(case.needs))
    if not covered:
        if not rep.ran:
            assert not case.harmless and rep.skipped.startswith("needs ")
        pytest.skip(f"{level}: no layer among {case.needs} on this machine ({sorted(tags)}); ran={rep.ran}")
    assert rep.ran
    assert rep.contained, f"{case.name} at {level}: {rep.problems}"


def test_minimal_level_reports_what_it_does_not_contain(reports):
    tags, by_name = reports["minimal"]
    assert not tags & {"namespaces", "landlock", "seccomp"}
    # with nothing but the floor, a network connection from the code is possible and is reported
    assert by_name["network"].ran and not by_name["network"].contained
    assert any("TCP connection" in p or "ESCAPED net" in p for p in by_name["network"].problems)
    # cases that could hurt the machine without a containing layer are not run at all
    assert not by_name["kill_everything"].ran and by_name["kill_everything"].skipped


def test_corpus_through_chart_render_scores_zero_and_counts_each_reason(tmp_path, monkeypatch):
    """The same programs as completions: failures score 0 and land in ``fail/<reason>``; the cases that
    draw a chart are scored normally (plt.show() after the reference chart still scores 1)."""
    import string

    from rewards.chart.reward import chart_render
    from rewards.sandbox.battery import CHART
    from rewards.sandbox.config import FAIL_REASONS

    monkeypatch.setenv(SECRET_ENV, TOKEN)  # before this call's pool (its own settings) starts
    cases = [c for c in CASES if c.harmless]
    for c in cases:
        (tmp_path / c.name).mkdir()
    codes = [string.Template(c.code).substitute(canary=tmp_path / c.name, port=9, token=TOKEN, site=tmp_path,
                                                env=SECRET_ENV) for c in cases]  # fmt: skip
    scores = chart_render(
        [f"```python\n{code}```" for code in codes], solution=[{"code": CHART}] * len(cases),
        timeout_s=2.0, memory_mb=512, workers=2, width_px=80, height_px=60, dpi=21,
    )  # fmt: skip
    failing = [c for c in cases if "" not in c.reasons]
    for case, score in zip(cases, scores):
        if case in failing:
            assert score == 0.0, case.name
        elif case.name == "plt_show":
            assert score == pytest.approx(1.0, abs=1e-6)
        else:
            assert 0.0 < score < 1.0, case.name  # a chart, just not the reference
    m = scores.metrics
    assert sum(m[f"fail/{r}"] for r in FAIL_REASONS) == len(failing)
    for reason in FAIL_REASONS:
        sure = sum(c.reasons == (reason,) for c in failing)
        possible = sum(reason in c.reasons for c in failing)
        assert sure <= m[f"fail/{reason}"] <= possible, reason
