"""Time limits on the phases of a step, and every thread's stack when one hangs.

The trainer marks the phase it is in (``wd.phase("generation", "grpo step 3", 1800, "watchdog.generation_s")``);
code inside a phase may set a tighter limit on one call (``time_limit("reward 'iou'", 30, "rewards[0].timeout_s",
RewardTimeout)``, which is how a reward call is bounded). A monitor thread sleeps until the nearest
deadline. When one passes, it

1. writes the stack of every thread of this process to ``<stack_dir>/rank<R>.txt``,
2. interrupts the main thread with ``SIGUSR2``, whose handler raises the limit's error (``Stalled``, or
   ``RewardTimeout``) naming the phase, the config field that sets the limit and the stack file; the run
   unwinds from there and the CLI prints that one line;
3. if the run has not unwound within ``grace_s`` (the main thread is blocked in C code, e.g. a
   collective waiting for a rank that is stuck or gone), prints the same line and ends the process
   (exit code 1).

While a watchdog runs, SIGTERM (what torchrun sends the other ranks when one fails) and fatal signals
also write every thread's stack to the same file (``faulthandler``), so that a hang leaves every rank's
stack in the run directory. A limit of 0 is no limit. Only one watchdog is active per process; the
module-level ``time_limit`` applies to it, and does nothing when none runs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mmrft.errors import Stalled

SIGNAL = signal.SIGUSR2
_active: Watchdog | None = None


@dataclass
class _Limit:
    label: str  # "the generation phase", "reward 'iou'"
    seconds: float
    field: str  # the config field that sets it
    where: str  # "grpo step 3"
    error: type[Stalled]
    deadline: float


class Watchdog:
    """Watches the phases of a run on this process (rank ``rank``); a context manager."""

    def __init__(self, stack_dir: Path | None, rank: int = 0, grace_s: float = 10.0):
        self.stack_dir = Path(stack_dir) if stack_dir is not None else None
        self.rank = rank
        self.grace_s = grace_s
        self.fired: str | None = None  # the message, once a limit has passed
        self._phase: _Limit | None = None
        self._stack: list[_Limit] = []
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._pending: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._prev_handler = None
        self._handler_installed = False
        self._file = None
        self._file_size = 0
        self._enabled_faulthandler = False

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Watchdog:
        global _active
        if self._thread is not None:
            return self
        if threading.current_thread() is threading.main_thread():
            self._prev_handler = signal.signal(SIGNAL, self._on_signal)
            self._handler_installed = True
        if self.stack_dir is not None:
            self.stack_dir.mkdir(parents=True, exist_ok=True)
            path = self.stack_path()
            self._file = open(path, "a")  # noqa: SIM115 - held open for faulthandler; closed in close()
            self._file_size = path.stat().st_size
            faulthandler.register(signal.SIGTERM, file=self._file, all_threads=True, chain=True)
            if not faulthandler.is_enabled():
                faulthandler.enable(file=self._file, all_threads=True)
                self._enabled_faulthandler = True
        self._thread = threading.Thread(target=self._monitor, name="mmrft-watchdog", daemon=True)
        self._thread.start()
        _active = self
        return self

    def close(self) -> None:
        """Stop watching; restore the signal handlers; remove the stack file if nothing was written."""
        global _active
        if self._thread is None or self._closed.is_set():
            return
        with self._cond:
            self._closed.set()
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if _active is self:
            _active = None
        if self._handler_installed and threading.current_thread() is threading.main_thread():
            signal.signal(SIGNAL, self._prev_handler)
        if self._file is not None:
            faulthandler.unregister(signal.SIGTERM)
            if self._enabled_faulthandler:
                faulthandler.disable()
            self._file.close()
            path = self.stack_path()
            if path.is_file() and path.stat().st_size == self._file_size == 0:
                path.unlink()
                with contextlib.suppress(OSError):
                    self.stack_dir.rmdir()  # only when empty

    def __enter__(self) -> Watchdog:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stack_path(self) -> Path:
        if self.stack_dir is None:
            return Path(tempfile.gettempdir()) / f"mmrft-stacks-{os.getpid()}.txt"
        return self.stack_dir / f"rank{self.rank}.txt"

    # ---- what the run is doing ------------------------------------------------------------------
    def phase(self, name: str | None, where: str = "", seconds: float = 0.0, field: str = "") -> None:
        """Enter phase ``name`` (replacing the previous one) with a limit of ``seconds`` (0 = none);
        ``None`` leaves every phase (nothing is watched)."""
        with self._cond:
            self._phase = None
            if name is not None:
                self._phase = _Limit(
                    f"the {name} phase", seconds, field, where, Stalled, time.monotonic() + seconds
                )
            self._cond.notify_all()

    @contextlib.contextmanager
    def limit(
        self, label: str, seconds: float, field: str, error: type[Stalled] = Stalled, where: str = ""
    ) -> Iterator[None]:
        """Bound the enclosed block to ``seconds`` (0 = no limit) inside the current phase."""
        if not seconds or seconds <= 0:
            yield
            return
        entry = _Limit(label, seconds, field, where, error, time.monotonic() + seconds)
        with self._cond:
            self._stack.append(entry)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                if entry in self._stack:
                    self._stack.remove(entry)

    # ---- the monitor ------------------------------------------------------------------------------
    def _monitor(self) -> None:
        with self._cond:
            while not self._closed.is_set():
                watched = [e for e in [self._phase, *self._stack] if e is not None and e.seconds > 0]
                if not watched:
                    self._cond.wait()
                    continue
                due = min(watched, key=lambda e: e.deadline)
                wait = due.deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                message = self._fire(due)
                break
            else:
                return
        if self._closed.wait(self.grace_s):
            return
        # the main thread did not unwind (blocked in C code): end the process with the same line
        sys.stderr.write(f"{due.error.label}: {message} (the run did not stop within watchdog.grace_s)\n")
        sys.stderr.flush()
        os._exit(1)

    def _fire(self, due: _Limit) -> str:
        where = due.where or (self._phase.where if self._phase is not None else "")
        path = self.stack_path()
        message = (
            f"{due.label} ran past {due.field}={due.seconds:g} s" + (f" in {where}" if where else "") +
            f"; the stack of every thread of rank {self.rank} is in {path}"
        )  # fmt: skip
        self.dump_stacks(message, path)
        self.fired = message
        self._pending = due.error(message)
        if self._handler_installed:
            signal.pthread_kill(threading.main_thread().ident, SIGNAL)
        return message

    def dump_stacks(self, header: str, path: Path | None = None, error: BaseException | None = None) -> Path:
        """Append the stack of every thread of this process (and ``error``'s traceback, when given) to
        ``path`` (the rank's stack file)."""
        path = path or self.stack_path()
        names = {t.ident: t.name for t in threading.enumerate()}
        monitor = self._thread.ident if self._thread is not None else None
        lines = [f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} rank {self.rank} pid {os.getpid()}: {header}\n"]
        if error is not None:
            lines.append(f"\nThe error, most recent call last:\n{''.join(traceback.format_exception(error))}")
        for ident, frame in sys._current_frames().items():
            if ident == monitor:
                continue
            lines.append(f"\nThread {names.get(ident, '?')} ({ident}), most recent call last:\n")
            lines += traceback.format_stack(frame)
        text = "".join(lines) + "\n"
        if self._file is not None and path == self.stack_path():
            self._file.write(text)
            self._file.flush()
        else:
            with open(path, "a") as f:
                f.write(text)
        return path

    def _on_signal(self, signum, frame) -> None:
        error, self._pending = self._pending, None
        if error is not None:
            raise error
        if callable(self._prev_handler):
            self._prev_handler(signum, frame)


def active() -> Watchdog | None:
    """The watchdog running in this process, if any."""
    return _active


@contextlib.contextmanager
def time_limit(
    label: str, seconds: float, field: str, error: type[Stalled] = Stalled, where: str = ""
) -> Iterator[None]:
    """``Watchdog.limit`` on the active watchdog; without one, or with ``seconds`` 0, no limit."""
    wd = _active
    if wd is None or not seconds:
        yield
        return
    with wd.limit(label, seconds, field, error, where):
        yield


@contextlib.contextmanager
def collective_limit(
    what: str, seconds: float, backend_timeout_s: float, where: str, rank: int
) -> Iterator[None]:
    """``time_limit`` for an explicit collective (``watchdog.collective_s``). A backend timeout raised
    inside it (``distributed.timeout_s``: gloo's "Timed out waiting ...") becomes the same ``Stalled``,
    with the stacks (and the backend's traceback) written to the rank's stack file."""
    label = f"a collective ({what}; another rank is stuck or gone)"
    try:
        with time_limit(label, seconds, "watchdog.collective_s"):
            yield
    except RuntimeError as e:
        wd = _active
        if isinstance(e, Stalled) or "timed out" not in str(e).lower() or wd is None:
            raise
        first = str(e).strip().splitlines()[0]
        message = (
            f"{label} timed out after distributed.timeout_s={backend_timeout_s:g} s" + (f" in {where}" if where else "")
            + f" ({first}); the stack of every thread of rank {rank} is in {wd.stack_path()}"
        )  # fmt: skip
        wd.dump_stacks(message, error=e)
        raise Stalled(message) from None
