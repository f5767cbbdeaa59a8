"""The warm worker ("zygote") and the render process it forks for each job.

The worker is started by :class:`rewards.sandbox.pool.SandboxPool` with a scrubbed environment. It imports
matplotlib once, renders a warm-up figure, probes which isolation layers this machine allows (by running
the warm-up through them), then serves jobs from its stdin. It never runs untrusted code itself: each job
is a fresh ``fork()``, so no render can leave state behind for the next one.

A render process (see :func:`_render`) applies, in order: a new session and process group, closed file
descriptors, namespaces (network, mount, pid, ipc, uts; a user namespace when not root) with a minimal
read-only root and a tmpfs scratch dir, resource limits, a dedicated uid (or dropped capabilities),
a scrubbed environment, Landlock, seccomp, and only then ``exec`` of the code. The worker kills the
render's process group at the wall timeout and caps what it reads back.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from rewards.sandbox import frames, isolation
from rewards.sandbox.config import SandboxConfig

_WARMUP = "import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2], color='C1')\nplt.title('warm')\n"
_PRELOAD = (
    "numpy", "matplotlib.pyplot", "matplotlib.patches", "matplotlib.colors", "matplotlib.cm",
    "matplotlib.ticker", "matplotlib.gridspec", "matplotlib.lines", "matplotlib.collections",
    "matplotlib.dates", "matplotlib.font_manager", "mpl_toolkits.mplot3d", "math", "random", "json",
    "re", "datetime", "itertools", "functools", "collections", "string", "statistics", "ctypes",
    "socket", "subprocess", "PIL.PngImagePlugin",
)  # fmt: skip


def _disk_usage(path: str, max_entries: int = 4096) -> tuple[int, int]:
    """(bytes allocated, entries) under ``path``, stopping once ``max_entries`` entries were seen."""
    total = entries = 0
    stack = [path]
    while stack and entries <= max_entries:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    entries += 1
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue
    return total, entries


def _supervise(
    pid: int, out_r: int, res_r: int, cfg: SandboxConfig, t0: float, scratch: str = ""
) -> dict[str, Any]:
    """Read the render's output and result until it exits or the wall timeout; kill its group after.

    Reads go into preallocated buffers that are zeroed once the reply is built; the result frame is
    checked by its lengths only (this process never parses what the render wrote). A host scratch dir
    (no mount namespace, hence no size-limited tmpfs) is measured every 0.2 s: over ``max_file_mb + 8``
    MiB or 4096 entries, the render is killed (``output_limit``).
    """
    scratch_cap = (cfg.max_file_mb + 8) * 1024 * 1024
    next_du = 0.0
    limit = cfg.max_result_bytes + frames.MAX_HEADER + frames.HEAD.size
    out, res, sink = bytearray(cfg.max_output_bytes), bytearray(limit + 1), bytearray(65536)
    n_out = n_res = out_total = 0
    deadline = t0 + cfg.timeout_s
    status: dict[str, Any] = {}
    open_fds = [out_r, res_r]
    while open_fds:
        left = deadline - time.monotonic()
        if left <= 0:
            status = {"reason": "timeout", "detail": f"wall-clock limit {cfg.timeout_s:g}s reached"}
            break
        ready, _, _ = select.select(open_fds, [], [], min(left, 0.2))
        for fd in ready:
            if fd == out_r:
                room = len(out) - n_out
                k = os.readv(fd, [memoryview(out)[n_out:] if room else memoryview(sink)])
                n_out += k if room else 0
                out_total += k
            else:
                k = os.readv(fd, [memoryview(res)[n_res:]])
                n_res += k
            if k == 0:
                open_fds.remove(fd)
        if n_res > limit:
            status = {"reason": "output_limit", "detail": f"result over {cfg.max_result_bytes} bytes"}
            break
        if scratch and time.monotonic() >= next_du:
            used, entries = _disk_usage(scratch)
            if used > scratch_cap or entries > 4096:
                status = {
                    "reason": "output_limit",
                    "detail": f"scratch dir over {scratch_cap >> 20} MiB or 4096 files",
                }
                break
            next_du = time.monotonic() + 0.2
        if frames.frame_complete(memoryview(res)[:n_res], cfg.max_result_bytes):
            break  # a complete result: nothing more is needed from the process
    _kill_group(pid)
    code = _reap(pid)
    if not status and not frames.frame_complete(memoryview(res)[:n_res], cfg.max_result_bytes):
        status = _exit_status(code)
    status.update(wall_s=time.monotonic() - t0, output_bytes=out_total)
    payload = bytearray(frames.HEAD.size + n_out + n_res)
    payload[: frames.HEAD.size] = frames.HEAD.pack(n_out, n_res)
    payload[frames.HEAD.size : frames.HEAD.size + n_out] = memoryview(out)[:n_out]
    payload[frames.HEAD.size + n_out :] = memoryview(res)[:n_res]
    for buf in (out, res, sink):
        buf[:] = bytes(len(buf))
    return {"status": status, "payload": payload}


def _kill_group(pid: int) -> None:
    for fn in (os.killpg, os.kill):
        try:
            fn(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pid: int) -> int:
    try:
        _, code = os.waitpid(pid, 0)
    except ChildProcessError:
        code = 0
    while True:  # orphans re-parented to this worker (a child subreaper)
        try:
            other, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if other == 0:
            break
    return code


def _exit_status(code: int) -> dict[str, Any]:
    if os.WIFSIGNALED(code):
        sig = os.WTERMSIG(code)
    elif os.WEXITSTATUS(code) >= 128:  # the namespace's middle process relays 128 + signal
        sig = os.WEXITSTATUS(code) - 128
    else:
        return {"reason": "crash", "detail": f"exited with status {os.WEXITSTATUS(code)} without a result"}
    name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
    if sig in (signal.SIGXCPU, signal.SIGKILL):
        return {"reason": "timeout", "detail": f"killed by {name} (CPU-time limit)"}
    return {"reason": "crash", "detail": f"killed by {name}"}


class Zygote:
    """Worker state: settings, the isolation plan that passed the warm-up, host paths it prepared."""

    def __init__(self, cfg: SandboxConfig, slot: int):
        self.cfg = cfg
        self.slot = slot
        self.base = tempfile.mkdtemp(prefix=f"mmrft-sandbox-{slot}-")
        os.chmod(self.base, 0o711)
        self.plan = isolation.Plan(uid=cfg.uid_base + slot, gid=cfg.uid_base + slot)
        self.notes: list[str] = []

    def run(self, code: bytearray) -> dict[str, Any]:
        out_r, out_w = os.pipe()
        res_r, res_w = os.pipe()
        scratch = ""
        if not self.plan.namespaces:
            scratch = tempfile.mkdtemp(prefix="job-", dir=self.base)
            if self.plan.drop_user:
                os.chown(scratch, self.plan.uid, self.plan.gid)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # render process: never returns
            os.close(out_r)
            os.close(res_r)
            isolation.render_process(code, self.cfg, self.plan, out_w, res_w, self.base, scratch)
        code[:] = bytes(len(code))  # the worker keeps no copy of the job's code
        os.close(out_w)
        os.close(res_w)
        try:
            return _supervise(pid, out_r, res_r, self.cfg, t0, scratch)
        finally:
            os.close(out_r)
            os.close(res_r)
            if scratch:
                _rmtree(scratch)

    def probe(self) -> None:
        """Find the strongest plan whose warm-up render succeeds; record what was given up and why.

        A render process that cannot apply a layer reports ``{"reason": "sandbox", "layer": ...}``; that
        layer is dropped and the warm-up tried again, so the plan is what this machine really allows.
        """
        cfg = self.cfg
        self.plan = isolation.initial_plan(self.plan.uid, self.plan.gid, cfg)
        self.notes += self.plan.notes
        wanted_uid = self.plan.drop_user
        for _ in range(8):
            reply = self.run(bytearray(_WARMUP.encode()))
            header = _child_header(reply["payload"], cfg.max_result_bytes)
            if header is not None and header.get("ok"):
                break
            layer = (header or {}).get("layer")
            detail = (
                (header or {}).get("detail")
                or _output_tail(reply["payload"])
                or reply["status"].get("detail")
            )
            if layer not in isolation.LAYERS or not getattr(self.plan, layer):
                raise RuntimeError(f"warm-up render failed: {detail}")
            self.notes.append(f"{layer} unavailable: {detail}")
            self.plan = self.plan.without(layer)
        else:
            raise RuntimeError("warm-up render failed on every isolation plan")
        if wanted_uid and not self.plan.drop_user:
            self.notes.append("dedicated uid unavailable without namespaces: the Python install is not "
                              "readable by other users (renders keep the uid, without capabilities)")  # fmt: skip
        if cfg.isolation == "strict" and not (self.plan.namespaces and self.plan.seccomp):
            raise RuntimeError("isolation 'strict' needs namespaces and seccomp: " + "; ".join(self.notes))


def _output_tail(payload: bytes) -> str:
    olen, _ = frames.HEAD.unpack(payload[: frames.HEAD.size])
    out = payload[frames.HEAD.size : frames.HEAD.size + olen].decode("utf-8", "replace").strip()
    return out.splitlines()[-1][:300] if out else ""


def _child_header(payload: bytes, max_result: int) -> dict[str, Any] | None:
    olen, rlen = frames.HEAD.unpack(payload[: frames.HEAD.size])
    parsed = frames.split_frame(payload[frames.HEAD.size + olen :], max_result)
    return None if parsed is None else parsed[0]


def _rmtree(path: str) -> None:
    """Remove a scratch dir; symlinks the render left are removed, never followed."""
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    """Entry point: ``python -c '...main()' CONFIG_JSON SLOT``; frames on stdin/stdout."""
    cfg = SandboxConfig.from_json(json.loads(sys.argv[1]))
    slot = int(sys.argv[2])
    os.environ["MPLBACKEND"] = "Agg"
    import importlib

    for name in _PRELOAD:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    import matplotlib

    matplotlib.use("Agg", force=True)
    isolation.set_subreaper()
    zyg = Zygote(cfg, slot)
    try:
        zyg.probe()
    except (RuntimeError, OSError) as e:
        frames.write_frame(1, {"op": "error", "detail": str(e)[:500]})
        return
    frames.write_frame(
        1, {"op": "ready", "layers": zyg.plan.layers(), "notes": zyg.notes, "pid": os.getpid()}
    )
    try:
        while True:
            try:
                header, code = frames.read_frame(0, 1 << 24)
            except (frames.FrameError, OSError):
                return  # the pool went away
            if header.get("op") != "run":
                return
            reply = zyg.run(code)
            frames.write_frame(
                1, {"op": "result", "id": header.get("id"), **reply["status"]}, reply["payload"]
            )
    finally:
        _rmtree(zyg.base)
