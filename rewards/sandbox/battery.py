"""The hostile battery: code that attacks the sandbox, and checks of what it managed to do.

Each :class:`Case` is a program in the threat model (loops, memory, processes, files, secrets, network,
shells, output floods, ``plt.show``, ctypes/importlib tricks). :func:`run_battery` runs every case on a
pool and checks, on the host, its failure reason, that no file outside the scratch dir changed (a canary
directory per case, ``/tmp`` and site-packages), that the secret in the caller's environment and in a
canary file never reached the result, that no TCP connection reached a listener, that no process outlived
its render, and that the wall time stayed under the timeout plus a margin.

A case names the isolation layers that contain it (any one suffices; none = the floor). A case whose
layers this machine lacks is still run when harmless by construction (bounded loops, writes only to its
canary), and skipped otherwise (``kill(-1)`` as root without namespaces could take the host down).
``mmrft sandbox selftest`` and ``tests/rewards/hostile`` both use this module.
"""

from __future__ import annotations

import hashlib
import os
import resource
import secrets
import shutil
import socket
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rewards.sandbox.config import RenderResult, SandboxConfig
from rewards.sandbox.pool import MARGIN_S, SandboxPool

SECRET_ENV = "MMRFT_SANDBOX_TEST_SECRET"
CHART = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [2, 1, 3], color='tab:red')\nplt.title('ok')\n"


@dataclass(frozen=True)
class Case:
    """One hostile program. ``code`` is a ``string.Template``: $canary (a host dir the code should not
    reach), $port (a listening TCP port), $token (the secret), $site (site-packages), $env (SECRET_ENV).
    ``reasons``: acceptable outcomes ("" = rendered). ``needs``: layers that contain it (any one).
    ``harmless``: safe to run even where no needed layer is present."""

    name: str
    threat: str
    code: str
    reasons: tuple[str, ...]
    needs: tuple[str, ...] = ()
    harmless: bool = True


_PROBE_END = "\nprint('END')\n"  # the probing cases draw nothing: their outcome is no_figure or error

CASES = (
    Case("infinite_loop", "loops forever", "while True:\n    pass\n", ("timeout",)),
    Case("sleep_forever", "blocks without using CPU", "import time\ntime.sleep(3600)\n", ("timeout",)),
    Case(
        "memory_bomb",
        "allocates all memory (bounded at 2 GiB)",
        "chunks = []\nfor i in range(8):\n    chunks.append(b'x' * (256 << 20))\n",
        ("memory",),
    ),
    Case(
        "fork_bomb",
        "forks processes that leave the process group (bounded: 12 forks, each lives 3 s)",
        "import os, time\nfor i in range(12):\n    if os.fork() == 0:\n        try:\n            os.setsid()\n"
        "        finally:\n            time.sleep(3)\n            os._exit(0)\nprint('FORKED ALL')\n",
        ("error",),
        needs=("seccomp", "uid"),
    ),
    Case(
        "write_outside",
        "writes, deletes and chmods files outside the scratch dir",
        "import os\nfor op in (lambda: open('$canary/pwned.txt', 'w').write('x'),\n"
        "           lambda: os.remove('$canary/keep.txt'),\n"
        "           lambda: os.chmod('$canary/keep.txt', 0o777),\n"
        "           lambda: open('/tmp/mmrft-pwned-$token', 'w').write('x'),\n"
        "           lambda: open('$site/mmrft-pwned-$token.txt', 'w').write('x')):\n"
        "    try:\n        op()\n    except OSError:\n        pass\n" + _PROBE_END,
        ("no_figure",),
        needs=("namespaces", "landlock"),
    ),
    Case(
        "env_secret",
        "reads secrets from its environment and shows them in the chart",
        "import os\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\n"
        "plt.title(repr(dict(os.environ)))\nprint(os.environ.get('$env'))\n",
        ("",),
    ),
    Case(
        "proc_secret",
        "reads other processes' environments through /proc and shows them in the chart",
        "import os\nimport matplotlib.pyplot as plt\nfound = []\ntry:\n    pids = os.listdir('/proc')\n"
        "except OSError:\n    pids = []\nfor pid in pids:\n"
        "    try:\n        found.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n        pass\nplt.plot([1, 2])\nplt.title(' '.join(found)[:5000])\nprint(found)\n",
        ("",),
        needs=("namespaces", "landlock", "uid"),
    ),
    Case(
        "file_secret",
        "reads a secret file and the home directory and shows them in the chart",
        "import os\nimport matplotlib.pyplot as plt\nfound = []\n"
        "for path in ('$canary/secret.txt', os.path.expanduser('~/.ssh/id_rsa'), '/root/.bash_history'):\n"
        "    try:\n        found.append(open(path).read())\n    except OSError:\n        pass\n"
        "plt.plot([1, 2])\nplt.title(' '.join(found))\nprint(found)\n",
        ("",),
        needs=("namespaces", "landlock", "uid"),
    ),
    Case(
        "network",
        "opens TCP and UDP connections to the host",
        "import socket\nfor kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):\n    try:\n"
        "        s = socket.socket(socket.AF_INET, kind)\n        s.settimeout(1)\n"
        "        s.connect(('127.0.0.1', $port))\n        s.send(b'$token')\n        print('ESCAPED net')\n"
        "    except OSError:\n        pass\n" + _PROBE_END,
        ("no_figure",),
        needs=("namespaces", "seccomp"),
    ),
    Case(
        "shell",
        "spawns shells through os.system, subprocess, posix via importlib, and libc via ctypes",
        "import ctypes, importlib, os, subprocess\n"
        "os.system('touch $canary/sh1')\n"
        "try:\n    subprocess.run(['/bin/sh', '-c', 'touch $canary/sh2'], timeout=1)\nexcept Exception:\n    pass\n"
        "importlib.import_module('posix').system('touch $canary/sh3')\n"
        "ctypes.CDLL(None).system(b'touch $canary/sh4')\n" + _PROBE_END,
        ("no_figure",),
        needs=("namespaces", "landlock", "seccomp"),
    ),
    Case(
        "output_flood",
        "prints gigabytes (bounded at 1 GiB)",
        "import sys\nchunk = 'A' * (1 << 20)\nfor i in range(1024):\n    sys.stdout.write(chunk)\n"
        + _PROBE_END,
        ("timeout", "no_figure"),
    ),
    Case("plt_show", "calls plt.show() and plt.pause()", CHART + "plt.show()\nplt.pause(30)\n", ("",)),
    Case(
        "big_file",
        "writes a file larger than the file-size limit",
        "with open('big.bin', 'wb') as f:\n    for i in range(64):\n        f.write(b'x' * (1 << 20))\n",
        ("error",),
    ),
    Case(
        "fill_disk",
        "fills the disk with many files under the size limit (bounded at 1 GiB)",
        "for i in range(128):\n    with open(f'fill{i}.bin', 'wb') as f:\n        f.write(b'x' * (8 << 20))\n",
        ("error", "output_limit"),
    ),
    Case(
        "many_files",
        "opens files until the descriptor limit",
        "fs = [open(f'f{i}.txt', 'w') for i in range(4096)]\n",
        ("error",),
    ),
    Case(
        "ctypes_syscalls",
        "uses ctypes to call socket, unshare, mount, setuid and ptrace on its parent directly",
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "calls = {'socket': lambda: libc.socket(2, 1, 0), 'unshare': lambda: libc.unshare(0x10000000),\n"
        "         'mount': lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None),\n"
        "         'setuid': lambda: libc.setuid(0),\n"
        "         'ptrace': lambda: libc.ptrace(16, os.getppid() or 1, 0, 0)}\n"
        "for name, call in calls.items():\n    if call() >= 0:\n        print('ESCAPED', name)\n"
        + _PROBE_END,
        ("no_figure",),
        needs=("seccomp",),
        harmless=False,
    ),
    Case(
        "starve_others",
        "renices every process of its uid, and lowers its parent's open-file limit",
        "import os, resource\nfor call in (lambda: os.setpriority(os.PRIO_USER, 0, 19),\n"
        "             lambda: resource.prlimit(os.getppid() or 1, resource.RLIMIT_NOFILE, (8, 8))):\n"
        "    try:\n        call()\n    except OSError:\n        pass\n" + _PROBE_END,
        ("no_figure",),
        needs=("namespaces", "seccomp", "uid"),
        harmless=False,
    ),
    Case(
        "kill_everything",
        "signals every process it can (kill(-1)), its parent and its process group",
        "import os, signal\nfor pid in (-1, os.getppid()):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\n" + _PROBE_END,
        ("no_figure",),
        needs=("namespaces", "seccomp"),
        harmless=False,
    ),
)


@dataclass
class CaseReport:
    """What one case did. ``contained``: every check passed. ``problems``: the checks that failed."""

    name: str
    threat: str
    ran: bool
    contained: bool
    reason: str = ""
    wall_s: float = 0.0
    """Seconds the caller waited for this case's result."""
    problems: list[str] = field(default_factory=list)
    skipped: str = ""


def layer_tags(layers: list[str]) -> set[str]:
    """Short tags (namespaces, uid, landlock, seccomp) from a pool's layer descriptions."""
    tags = set()
    for layer in layers:
        for tag in ("namespaces", "landlock", "seccomp"):
            if layer.startswith(tag):
                tags.add(tag)
        if layer.startswith("uid "):
            tags.add("uid")
    return tags


def _snapshot(root: str) -> dict[str, str]:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[p] = f"{st.st_mode:o}:{hashlib.sha256(Path(p).read_bytes()).hexdigest()}"
    return out


def _stray_processes(worker_pids: set[int]) -> list[int]:
    """Live processes whose parent is one of the pool's workers once every render has finished: renders'
    children that outlived them (the worker is their subreaper)."""
    out = []
    for d in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not d.isdigit():
            continue
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) in worker_pids and fields[0] != "Z":
            out.append(int(d))
    return out


def run_battery(
    pool: SandboxPool, cases: tuple[Case, ...] = CASES, run_all: bool = False
) -> list[CaseReport]:
    """Run ``cases`` on ``pool`` and check each (see the module doc). Sets SECRET_ENV in this process's
    environment while the cases run unless it is set already (the pool must never pass it on); set it
    before starting the pool to also test that the pool's workers never received it."""
    cfg: SandboxConfig = pool.cfg
    pool.wait_ready()  # the caller-side wall times below must not include a worker's start
    layers, _ = pool.isolation()
    tags = layer_tags(layers)
    had_secret = SECRET_ENV in os.environ
    token = os.environ.get(SECRET_ENV) or "tok" + secrets.token_hex(12)
    os.environ[SECRET_ENV] = token
    site = next((p for p in pool_site_dirs() if os.access(p, os.W_OK)), tempfile.gettempdir())
    work = tempfile.mkdtemp(prefix="mmrft-battery-")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    # a process holding the secret in its initial environment, like a trainer started with a token
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env={SECRET_ENV: token},
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    reports: list[CaseReport] = []
    runnable: list[tuple[Case, str, str]] = []
    for case in cases:
        if case.needs and not tags & set(case.needs) and not (case.harmless or run_all):
            reports.append(
                CaseReport(case.name, case.threat, False, False, skipped="needs " + "/".join(case.needs))
            )
            continue
        canary = os.path.join(work, case.name)
        os.makedirs(canary)
        Path(canary, "keep.txt").write_text("keep")
        Path(canary, "secret.txt").write_text(token)
        os.chmod(canary, 0o700)
        code = string.Template(case.code).substitute(
            canary=canary, port=port, token=token, site=site, env=SECRET_ENV
        )
        runnable.append((case, canary, code))
    before = {canary: _snapshot(canary) for _, canary, _ in runnable}
    nice_before = os.getpriority(os.PRIO_PROCESS, 0)
    prlimit = getattr(resource, "prlimit", None)  # Linux only
    limits_before = (
        {w.proc.pid: prlimit(w.proc.pid, resource.RLIMIT_NOFILE) for w in pool.workers()} if prlimit else {}
    )
    tmp_before = set(os.listdir("/tmp"))
    worker_pids = {w.proc.pid for w in pool.workers()}
    try:
        futures = [pool.submit(code) for _, _, code in runnable]
        results: list[RenderResult] = [f.result() for f in futures]
    finally:
        holder.kill()
        holder.wait()
        if not had_secret:
            os.environ.pop(SECRET_ENV, None)
    time.sleep(0.2)
    stray = _stray_processes(worker_pids | {w.proc.pid for w in pool.workers()})
    connections = 0
    while True:
        try:
            conn, _ = listener.accept()
            conn.close()
            connections += 1
        except OSError:
            break
    listener.close()
    starved = os.getpriority(os.PRIO_PROCESS, 0) != nice_before or any(
        prlimit(pid, resource.RLIMIT_NOFILE) != lim
        for pid, lim in limits_before.items()
        if os.path.exists(f"/proc/{pid}")
    )
    new_tmp = [n for n in set(os.listdir("/tmp")) - tmp_before if "pwned" in n]
    new_site = [n for n in os.listdir(site) if n.startswith("mmrft-pwned-")]
    for (case, canary, _), r in zip(runnable, results):
        problems = []
        if r.reason not in case.reasons:
            problems.append(f"reason {r.reason or 'ok'!r} ({r.detail}), expected one of {case.reasons}")
        if r.total_s > cfg.timeout_s + MARGIN_S:
            problems.append(f"the caller waited {r.total_s:.1f}s, over the timeout plus {MARGIN_S:g}s")
        if _snapshot(canary) != before[canary]:
            problems.append("files outside the scratch dir changed")
        blob = r.output + r.detail + repr(r.elements)
        if token in blob:
            problems.append("the secret reached the result")
        if "ESCAPED" in r.output:
            problems.append(
                "escaped: " + " ".join(ln for ln in r.output.splitlines() if "ESCAPED" in ln)[:200]
            )
        if len(r.output.encode()) > cfg.max_output_bytes + 4:
            problems.append("captured output over the cap")
        if case.name == "write_outside" and (new_tmp or new_site):
            problems.append(f"files created in /tmp or site-packages: {new_tmp + new_site}")
        if case.name == "network" and connections:
            problems.append(f"{connections} TCP connection(s) reached the host")
        if case.name == "starve_others" and starved:
            problems.append("the priority or limits of processes outside the sandbox changed")
        if case.name == "fork_bomb" and stray:
            problems.append(f"{len(stray)} process(es) outlived the render")
        reports.append(CaseReport(case.name, case.threat, True, not problems, r.reason, r.total_s, problems))
    for name in new_tmp:
        os.unlink(os.path.join("/tmp", name))
    for name in new_site:
        os.unlink(os.path.join(site, name))
    shutil.rmtree(work, ignore_errors=True)
    order = {c.name: i for i, c in enumerate(cases)}
    return sorted(reports, key=lambda rep: order[rep.name])


def pool_site_dirs() -> list[str]:
    """site-packages directories of this interpreter (where a tampering render would write)."""
    import site

    return [p for p in site.getsitepackages() if os.path.isdir(p)]
