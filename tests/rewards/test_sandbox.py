"""The sandbox's building blocks and a warm pool rendering real charts (hostile code: tests/rewards/hostile)."""

from __future__ import annotations

import io
import os
import platform
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from rewards.sandbox import SandboxConfig, SandboxPool, frames, linux, seccomp
from rewards.sandbox import pool as pool_module
from rewards.sandbox.battery import layer_tags
from rewards.sandbox.isolation import Plan
from rewards.sandbox.pool import MARGIN_S

linux_only = pytest.mark.skipif(platform.system() != "Linux", reason="Linux isolation layers")

BAR = (
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots()\n"
    "ax.bar(['a', 'b', 'c'], [3, 1, 2], color=['#ff0000', '#00ff00', '#0000ff'])\n"
    "ax.set_title('Sales')\nax.set_xlabel('shop')\n"
)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(SandboxConfig(workers=2, timeout_s=2.5, cpu_s=3, memory_mb=512, width_px=160, height_px=120,
                                   dpi=40)) as p:  # fmt: skip
        yield p


# ------------------------------------------------------------------------------------------- units


def test_config_rejects_bad_values_with_the_field_name():
    with pytest.raises(ValueError, match="sandbox.isolation"):
        SandboxConfig(isolation="none")
    with pytest.raises(ValueError, match="sandbox.timeout_s"):
        SandboxConfig(timeout_s=0)
    cfg = SandboxConfig(extra_ro_paths=("/opt/fonts",))
    assert SandboxConfig.from_json(cfg.to_json()) == cfg


def test_frames_round_trip_and_reject_oversized_or_partial():
    raw = frames.encode({"op": "x", "n": 1}, b"payload")
    assert frames.split_frame(raw, 100) == ({"op": "x", "n": 1}, b"payload")
    assert frames.split_frame(raw, 3) is None  # payload over the cap
    assert frames.split_frame(raw[:-1], 100) is None  # truncated
    assert frames.split_frame(raw + b"x", 100) is None  # trailing bytes
    r, w = os.pipe()
    frames.write_frame(w, {"a": [1, 2]}, b"\x00\x01")
    assert frames.read_frame(r, 10) == ({"a": [1, 2]}, bytearray(b"\x00\x01"))
    os.close(w)
    with pytest.raises(frames.FrameError):
        frames.read_frame(r, 10)
    os.close(r)


@pytest.mark.skipif(not seccomp.available(), reason="no seccomp syscall table for this machine")
def test_seccomp_filter_shape():
    prog = seccomp.build_filter(own_pid=1234, machine="x86_64")
    ins = [struct.unpack("=HBBI", prog[i : i + 8]) for i in range(0, len(prog), 8)]
    # starts by checking the architecture (AUDIT_ARCH_X86_64) and killing a foreign one
    assert (
        ins[0] == (0x20, 0, 0, 4)
        and ins[1] == (0x15, 1, 0, 0xC000003E)
        and ins[2][3] == seccomp.RET_KILL_PROCESS
    )
    # socket (41) is denied with EPERM (1)
    i = ins.index((0x15, 0, 1, 41))
    assert ins[i + 1] == (0x06, 0, 0, seccomp.RET_ERRNO | 1)
    # kill is allowed towards our own pid only: a JEQ on 1234 appears after loading arg0
    assert (0x15, 2, 0, 1234) in ins
    assert ins[-1] == (0x06, 0, 0, seccomp.RET_ALLOW)
    assert len(ins) < 4096  # the kernel's BPF program limit


def test_plan_without_a_layer_keeps_the_rest():
    plan = Plan(uid=61000, gid=61000, namespaces=True, landlock=True, seccomp=True, drop_user=True)
    assert plan.without("seccomp").namespaces and not plan.without("seccomp").seccomp
    assert layer_tags(["namespaces(net,mount)", "uid 61000", "landlock(abi 7)", "seccomp"]) == {
        "namespaces", "uid", "landlock", "seccomp"}  # fmt: skip


# ----------------------------------------------------------------------------------------- renders


def test_render_has_the_configured_size_and_exports_elements(pool):
    r = pool.run(BAR)
    assert r.ok, r.detail
    im = Image.open(io.BytesIO(r.png))
    assert im.size == (160, 120)  # 4 x 3 inches at 40 dpi, whatever figsize the code chose
    el = r.elements
    assert el["types"] == ["bar"]
    assert el["colors"] == [["bar", "#ff0000"], ["bar", "#00ff00"], ["bar", "#0000ff"]]
    assert {"Sales", "shop", "a", "b", "c"} <= set(el["texts"])
    assert el["layout"] == [[1, 1, 0, 1, 0, 1]]


def test_subplots_export_one_layout_cell_per_axes_and_each_drawing_type(pool):
    code = (
        "import matplotlib.pyplot as plt\nfig, (a, b) = plt.subplots(1, 2)\n"
        "a.pie([1, 2], colors=['#ff0000', '#0000ff'])\nb.scatter([1, 2], [3, 4], color='#00ff00', label='pts')\n"
        "b.legend()\nfig.suptitle('Two')\n"
    )
    el = pool.run(code).elements
    assert el["layout"] == [[1, 2, 0, 1, 0, 1], [1, 2, 0, 1, 1, 2]]
    assert el["types"] == ["pie", "scatter"]
    assert el["colors"] == [["pie", "#ff0000"], ["pie", "#0000ff"], ["scatter", "#00ff00"]]
    assert "Two" in el["texts"] and "pts" in el["texts"]


def test_outcomes_are_named(pool):
    codes = {
        "syntax": "def (:\n",
        "error": "raise KeyError('boom')",
        "no_figure": "x = 1",
        "exit_after_plot": BAR + "import sys\nsys.exit(3)\n",
        "saves_elsewhere": BAR
        + "plt.savefig('/no/such/dir/chart.pdf', bbox_inches='tight')\nfig.savefig('x.png')\n",
        "output": "print('hello from the chart')\n" + BAR,
    }
    res = dict(zip(codes, pool.map(list(codes.values()))))
    assert (res["syntax"].reason, res["error"].reason, res["no_figure"].reason) == (
        "syntax",
        "error",
        "no_figure",
    )
    assert "KeyError: 'boom'" in res["error"].detail
    assert res["exit_after_plot"].ok  # sys.exit after drawing still exports the figure
    assert res["saves_elsewhere"].ok and res["saves_elsewhere"].png[:4] == b"\x89PNG"  # own saves skipped
    assert res["output"].ok and "hello from the chart" in res["output"].output


def test_renders_do_not_share_state(pool):
    # the first render poisons matplotlib and leaves a figure; the next fork starts clean
    poison = (
        "import matplotlib.pyplot as plt\nplt.plot([1])\nplt.rcParams['lines.color'] = 'yellow'\nimport os\n"
    )
    assert pool.run(poison).ok
    r = pool.run(
        "import matplotlib.pyplot as plt\nprint(len(plt.get_fignums()), plt.rcParams['lines.color'])"
    )
    assert r.reason == "no_figure" and r.output.split() == ["0", "C0"]


@linux_only
def test_auto_isolation_uses_every_layer_the_kernel_allows_and_explains_the_rest(pool):
    layers, notes = pool.isolation()
    tags = layer_tags(layers)
    # on this project's CI (root, namespaces allowed) every layer is present; where the kernel refuses
    # one (e.g. Docker's default profile blocks unshare), a note says which and why
    if "namespaces" not in tags:
        assert any(n.startswith("namespaces unavailable") for n in notes), notes
    if seccomp.available() and "seccomp" not in tags:
        assert any(n.startswith("seccomp unavailable") for n in notes), notes
    if linux.landlock_abi() > 0 and "landlock" not in tags:
        assert any(n.startswith("landlock unavailable") for n in notes), notes
    if os.geteuid() == 0:
        assert "uid" in tags or any("dedicated uid unavailable" in n for n in notes), notes


def test_a_stuck_worker_is_killed_and_replaced_within_timeout_plus_margin():
    cfg = SandboxConfig(workers=1, timeout_s=1.0, cpu_s=1, memory_mb=512, width_px=80, height_px=60, dpi=20)
    with SandboxPool(cfg) as p:
        assert p.run(BAR).ok
        worker = p.workers()[0]
        os.kill(worker.proc.pid, signal.SIGSTOP)  # a worker that stops answering (and reading)
        t0 = time.monotonic()
        r = p.run(BAR + "#" * 300_000)  # more than a pipe holds: sending must not block either
        waited = time.monotonic() - t0
        assert r.reason == "sandbox" and "replaced" in r.detail
        assert cfg.timeout_s <= waited <= cfg.timeout_s + MARGIN_S + 1.0
        assert p.replaced == 1 and worker.proc.poll() is not None  # the old one is dead
        assert p.run(BAR).ok  # the replacement serves the next job


class _DiesAtStart(pool_module._Worker):
    """A replacement that starts as a process but exits before its start-up handshake."""

    def __init__(self, cfg, slot, home):
        self.cfg, self.slot, self.layers, self.notes, self.ready = cfg, slot, [], [], False
        self.proc = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _cannot_start(cfg, slot, home):
    raise OSError(24, "Too many open files")


@pytest.mark.parametrize("broken", [_cannot_start, _DiesAtStart], ids=["popen_fails", "dies_at_start"])
def test_a_replacement_that_fails_to_start_never_loses_the_slot(monkeypatch, broken):
    cfg = SandboxConfig(workers=1, timeout_s=2.0, cpu_s=2, memory_mb=512, width_px=80, height_px=60, dpi=20)
    with SandboxPool(cfg) as p:
        assert p.run(BAR).ok
        monkeypatch.setattr(pool_module, "_Worker", broken)  # from now on no worker can start
        os.killpg(p.workers()[0].proc.pid, signal.SIGKILL)  # the only worker dies
        # each job fails as a sandbox failure and returns; none blocks on the free queue (one slot)
        results = [p.submit(BAR).result(timeout=30) for _ in range(3)]
        assert [r.reason for r in results] == ["sandbox"] * 3, [r.detail for r in results]
        assert "worker replaced" in results[0].detail
        if broken is _cannot_start:
            assert "could not be started: OSError" in results[1].detail and p.workers() == []
            assert p.start_failures == 3  # the replacement, then one start per later job
        monkeypatch.undo()  # workers can start again: the same slot gets one and renders
        r = p.submit(BAR).result(timeout=60)
        if broken is _DiesAtStart:  # the slot still holds the last broken start: one more failure
            assert r.reason == "sandbox"
            r = p.submit(BAR).result(timeout=60)
        assert r.ok, r.detail
        assert len(p.workers()) == 1


def _orphans(root_pid: int) -> list[int]:
    """Sandbox processes of this checkout (forks of a worker) whose ancestry no longer reaches ``root_pid``."""
    out = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{d}/cmdline", "rb").read()
            if b"rewards.sandbox.worker" not in cmdline or pool_module._PKG_ROOT.encode() not in cmdline:
                continue  # not a sandbox process, or one of another checkout's pools on this machine
            pid, chain = int(d), []
            while pid not in (0, 1, root_pid) and len(chain) < 8:
                chain.append(pid)
                pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if pid != root_pid:
            out.append(int(d))
    return out


@linux_only
def test_killing_a_worker_mid_render_kills_its_render():
    cfg = SandboxConfig(workers=1, timeout_s=30.0, cpu_s=30, memory_mb=512, width_px=80, height_px=60, dpi=20)
    # sandbox processes of other pools on this machine (another test run, a demo) are not ours
    foreign = set(_orphans(os.getpid()))
    with SandboxPool(cfg) as p:
        p.isolation()
        worker = p.workers()[0]
        fut = p.submit("import time\ntime.sleep(600)")
        time.sleep(1.0)  # the render is sleeping inside the sandbox now
        os.kill(worker.proc.pid, signal.SIGKILL)
        r = fut.result(timeout=10)
        assert r.reason == "sandbox"
        deadline = time.monotonic() + 3
        while set(_orphans(os.getpid())) - foreign and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(_orphans(os.getpid())) - foreign == set()


@linux_only
def test_strict_isolation_refuses_to_run_without_namespaces():
    cfg = SandboxConfig(workers=1, isolation="strict", namespaces=False, timeout_s=2.0, memory_mb=512)
    with SandboxPool(cfg) as p:
        with pytest.raises(frames.FrameError, match="strict"):
            p.isolation()
        r = p.run(BAR)  # the replacement refuses too: no render ever runs under weaker isolation
        assert not r.ok and r.reason == "sandbox"


@linux_only
def test_detects_a_kernel_that_refuses_namespaces_and_degrades(tmp_path):
    # Inside `unshare --user` without a uid mapping, this process is the overflow uid and the kernel
    # refuses the render's own namespaces: the worker must notice, drop the layer, say why, and render.
    import shutil
    import subprocess
    import sys

    if shutil.which("unshare") is None or subprocess.run(["unshare", "--user", "true"]).returncode != 0:
        pytest.skip("cannot create a user namespace to simulate the refusal")
    script = (
        "from rewards.sandbox import SandboxPool, SandboxConfig\n"
        "with SandboxPool(SandboxConfig(workers=1, timeout_s=3, memory_mb=512)) as p:\n"
        "    layers, notes = p.isolation()\n"
        "    r = p.run('import matplotlib.pyplot as plt\\nplt.plot([1, 2])')\n"
        "    print(layers, notes, r.ok)\n"
    )
    out = subprocess.run(["unshare", "--user", sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})  # fmt: skip
    assert out.returncode == 0, out.stderr[-500:]
    assert "namespaces unavailable" in out.stdout and "namespaces(" not in out.stdout
    assert "seccomp" in out.stdout and out.stdout.strip().endswith("True")
