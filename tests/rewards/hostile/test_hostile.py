"""The hostile corpus (rewards.sandbox.battery.CASES) against three isolation levels on this machine.

- ``auto``: the strongest the machine allows (CI: root in a container: namespaces, uid, Landlock, seccomp);
- ``no-namespaces``: what a platform without namespaces gets (uid or no capabilities, Landlock, seccomp);
- ``minimal``: the floor alone (process, rlimits, scrubbed env, scratch dir, timeout, output cap).

Every case runs where it is harmless by construction (bounded forks and allocations, writes to its own
canary only). A case is asserted contained whenever a layer that contains it is present; the floor cases
(timeouts, memory, output, environment secrets, plt.show, file size, descriptors) are asserted everywhere.
Each case also asserts its outcome, unchanged files outside the scratch dir, no leaked secret and a wall
time under the timeout plus a margin (see ``run_battery``). The secret is put in this process's
environment before any pool starts, so a pool that passed its environment on would leak it.
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
