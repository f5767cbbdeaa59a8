"""A pool of warm sandbox workers, used from the trainer's process.

Each worker is a separate Python process (``rewards.sandbox.worker``) started with a scrubbed environment
in its own session. A job goes to a free worker; the worker forks a fresh render process for it, so a
render never sees another's state. The pool waits at most ``timeout_s`` plus a small margin for any one
job: a worker that overruns, dies or breaks the protocol is killed (its whole process group) and replaced,
and the job is reported as failed, so the caller never blocks longer than the slowest allowed render.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from rewards.sandbox import frames
from rewards.sandbox.config import FAIL_REASONS, RenderResult, SandboxConfig

# Seconds a worker may take beyond the render timeout (fork, kill, reap, transfer) before it is replaced.
MARGIN_S = 3.0
# Seconds a fresh worker may take to import matplotlib and probe the isolation layers.
START_TIMEOUT_S = 120.0
_PKG_ROOT = str(Path(__file__).resolve().parents[2])


def _worker_env(home: str) -> dict[str, str]:
    """The whole environment a worker gets: nothing from the caller's (no tokens, no paths)."""
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.path.join(home, "mpl"),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "TMPDIR": home,  # the workers' own dirs live in the pool's, removed with it even after SIGKILL
    }
    return env


def _seed_font_cache(mpl_dir: str) -> None:
    """Copy matplotlib's font list into the workers' config dir so they do not rebuild it (seconds)."""
    os.makedirs(mpl_dir, exist_ok=True)
    try:
        import matplotlib

        src = matplotlib.get_cachedir()
        for name in os.listdir(src):
            if name.startswith("fontlist") and name.endswith(".json"):
                shutil.copy(os.path.join(src, name), mpl_dir)
    except (OSError, ImportError):
        pass


class _Worker:
    """One warm worker process and the pipes to it."""

    def __init__(self, cfg: SandboxConfig, slot: int, home: str):
        self.cfg = cfg
        self.slot = slot
        self.layers: list[str] = []
        self.notes: list[str] = []
        boot = (
            f"import sys; sys.path.insert(0, {_PKG_ROOT!r}); from rewards.sandbox.worker import main; main()"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", boot, json.dumps(cfg.to_json()), str(slot)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_worker_env(home),
            cwd=home,
            start_new_session=True,
            close_fds=True,
        )
        self.ready = False

    def wait_ready(self) -> None:
        header, _ = self._read(time.monotonic() + START_TIMEOUT_S, 0)
        if header.get("op") != "ready":
            raise frames.FrameError(f"sandbox worker failed to start: {header.get('detail', header)}")
        self.layers = list(header.get("layers", []))
        self.notes = list(header.get("notes", []))
        self.ready = True

    def _read(self, deadline: float, max_payload: int) -> tuple[dict, bytearray]:
        return frames.read_frame(self.proc.stdout.fileno(), max_payload, deadline)

    def run(self, code: str, job_id: int) -> RenderResult:
        if not self.ready:
            self.wait_ready()
        deadline = time.monotonic() + self.cfg.timeout_s + MARGIN_S
        payload = code.encode("utf-8", "replace")
        frames.write_frame(self.proc.stdin.fileno(), {"op": "run", "id": job_id}, payload, deadline)
        cap = self.cfg.max_output_bytes + self.cfg.max_result_bytes + frames.MAX_HEADER + 64
        header, payload = self._read(deadline, cap)  # one deadline for sending the job and the answer
        if header.get("op") != "result" or header.get("id") != job_id:
            raise frames.FrameError("sandbox worker answered out of turn")
        return _decode(header, payload, self.cfg)

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _decode(status: dict, payload: bytearray, cfg: SandboxConfig) -> RenderResult:
    """The worker's status plus the render's own frame (untrusted: validated field by field)."""
    olen, rlen = frames.HEAD.unpack(bytes(payload[: frames.HEAD.size]))
    output = bytes(payload[frames.HEAD.size : frames.HEAD.size + olen]).decode("utf-8", "replace")
    child = frames.split_frame(payload[frames.HEAD.size + olen :], cfg.max_result_bytes)
    common = dict(
        output=output, output_bytes=int(status.get("output_bytes", 0)), wall_s=float(status.get("wall_s", 0))
    )
    if status.get("reason"):
        return RenderResult(
            False, str(status["reason"]), detail=str(status.get("detail", ""))[:300], **common
        )
    if child is None:
        return RenderResult(False, "crash", detail="no valid result frame", **common)
    header, png = child
    layers = [str(x) for x in header.get("layers", [])] if isinstance(header.get("layers"), list) else []
    if header.get("ok") is True and png[:8] == b"\x89PNG\r\n\x1a\n":
        elements = header.get("elements") if isinstance(header.get("elements"), dict) else {}
        return RenderResult(True, "", png=png, elements=elements, isolation=layers, **common)
    reason = header.get("reason")
    reason = reason if reason in FAIL_REASONS and reason else "crash"
    return RenderResult(False, reason, detail=str(header.get("detail", ""))[:300], isolation=layers, **common)


class _Slot:
    """One of the pool's ``workers`` places: its worker, or None while a replacement has failed to start.

    Slots, not workers, circulate through the free queue, so a worker that dies and cannot be replaced
    never takes its place with it: the next job on the slot tries to start a worker again.
    """

    __slots__ = ("index", "worker")

    def __init__(self, index: int):
        self.index = index
        self.worker: _Worker | None = None


class SandboxPool:
    """``workers`` warm sandbox workers; :meth:`submit` / :meth:`map` render code in parallel.

    The pool never loses a slot: a job takes a slot from the free queue and always puts it back. A worker
    that fails is killed and replaced; when the replacement cannot even be started (no memory, no file
    descriptors), the job fails as ``sandbox`` and the next job on that slot tries again.
    """

    def __init__(self, cfg: SandboxConfig | None = None):
        self.cfg = cfg or SandboxConfig()
        self._home = tempfile.mkdtemp(prefix="mmrft-sandbox-pool-")
        os.chmod(self._home, 0o711)  # a render's uid may traverse to its scratch dir, not list the pool's
        _seed_font_cache(os.path.join(self._home, "mpl"))
        self._free: queue.Queue[_Slot] = queue.Queue()
        self._slots = [_Slot(i) for i in range(self.cfg.workers)]
        self._lock = threading.Lock()
        self._ids = 0
        self._closed = False
        self.replaced = 0  # workers killed and replaced after a failure
        self.start_failures = 0  # replacements that could not be started (their slot stayed empty)
        try:
            for slot in self._slots:
                self._start(slot)
        except Exception:
            self.close()
            raise
        for slot in self._slots:
            self._free.put(slot)
        self._executor = ThreadPoolExecutor(self.cfg.workers, thread_name_prefix="sandbox")

    def workers(self) -> list[_Worker]:
        """The live workers, by slot (an empty slot is left out)."""
        with self._lock:
            return [s.worker for s in self._slots if s.worker is not None]

    def _start(self, slot: _Slot) -> _Worker:
        """Start a worker in ``slot`` (raises what ``Popen`` raises; the slot then stays empty)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("sandbox pool is closed")
            slot.worker = None
            slot.worker = _Worker(self.cfg, slot.index, self._home)
            return slot.worker

    def _retire(self, slot: _Slot) -> None:
        """Kill the slot's worker (unknown state, never reused) and try to start its replacement."""
        if slot.worker is not None:
            slot.worker.kill()
            slot.worker = None
        with self._lock:
            self.replaced += 1
        try:
            self._start(slot)
        except Exception:  # noqa: BLE001 - the slot stays empty; the next job on it tries again
            with self._lock:
                self.start_failures += 1

    def _ready_worker(self, slot: _Slot) -> _Worker:
        """The slot's worker, started (if the slot is empty) and past its start-up handshake."""
        w = slot.worker if slot.worker is not None else self._start(slot)
        if not w.ready:
            w.wait_ready()
        return w

    def wait_ready(self) -> None:
        """Block until every worker has started (each takes about a second: import, warm-up, probe)."""
        taken = [self._free.get() for _ in range(self.cfg.workers)]
        try:
            for slot in taken:
                self._ready_worker(slot)
        finally:
            for slot in taken:
                self._free.put(slot)

    def isolation(self) -> tuple[list[str], list[str]]:
        """(layers, notes) of a ready worker: what renders get on this machine, and what was given up."""
        slot = self._free.get()
        try:
            w = self._ready_worker(slot)
            return list(w.layers), list(w.notes)
        finally:
            self._free.put(slot)

    def run(self, code: str) -> RenderResult:
        """Render ``code`` on the next free worker (blocking); never raises on anything the code does,
        nor when a worker cannot be started (the result is a ``sandbox`` failure)."""
        if self._closed:
            raise RuntimeError("sandbox pool is closed")
        slot = self._free.get()
        t0 = time.monotonic()
        try:
            result = self._run_on(slot, code)
        finally:
            self._free.put(slot)  # whatever happened, the slot goes back
        result.total_s = time.monotonic() - t0
        return result

    def _run_on(self, slot: _Slot, code: str) -> RenderResult:
        if slot.worker is None:
            try:
                self._start(slot)
            except Exception as e:  # noqa: BLE001 - out of memory, descriptors, processes: a failed job
                with self._lock:
                    self.start_failures += 1
                detail = f"worker {slot.index} could not be started: {type(e).__name__}: {e}"[:300]
                return RenderResult(False, "sandbox", detail=detail)
        w = slot.worker
        with self._lock:
            self._ids += 1
            job_id = self._ids
        try:
            return w.run(code, job_id)
        except Exception as e:  # noqa: BLE001 - a worker in an unknown state is replaced, never reused
            self._retire(slot)
            return RenderResult(False, "sandbox", detail=f"worker replaced: {type(e).__name__}: {e}"[:300])

    def submit(self, code: str) -> Future:
        """Queue ``code``; the future resolves to its :class:`RenderResult`."""
        return self._executor.submit(self.run, code)

    def map(self, codes: list[str]) -> list[RenderResult]:
        """Render every code in parallel over the workers, results in order."""
        return [f.result() for f in [self.submit(c) for c in codes]]

    def close(self) -> None:
        """Kill every worker and remove the pool's temporary files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = [s.worker for s in self._slots if s.worker is not None]
        if hasattr(self, "_executor"):
            self._executor.shutdown(wait=False, cancel_futures=True)
        for w in workers:
            w.kill()
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
