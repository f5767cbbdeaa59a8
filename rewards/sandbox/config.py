"""Sandbox settings and results: what a render may use, and what came back.

Every limit is a field with a one-line doc; the defaults suit chart code (a matplotlib figure renders in
well under a second and a few hundred MB). ``SandboxConfig`` is frozen and hashable so that one warm
pool serves every reward call with the same settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Why a run produced no usable render; the reward counts these as ``fail/<reason>``.
FAIL_REASONS = (
    "no_code",  # the completion has no code to run
    "syntax",  # the code does not compile
    "error",  # the code raised an exception
    "memory",  # MemoryError, or killed for exceeding the address-space limit
    "timeout",  # wall-clock or CPU-time limit reached; the process group was killed
    "no_figure",  # the code ran but left no matplotlib figure
    "output_limit",  # the render or element export exceeded the result size cap
    "crash",  # the process died by a signal or exited without a result
    "sandbox",  # the sandbox itself failed (worker died, protocol error); not the code's fault
    "deadline",  # the caller's batch deadline passed before this render finished (queued or running)
)

ISOLATION_MODES = ("auto", "strict", "minimal")


@dataclass(frozen=True)
class SandboxConfig:
    """Limits and isolation for running untrusted plotting code."""

    timeout_s: float = 10.0
    """Wall-clock seconds one render may take; then its whole process group is killed."""
    cpu_s: int = 10
    """CPU seconds (RLIMIT_CPU); the hard limit is one second more, then the kernel kills."""
    memory_mb: int = 1024
    """Address-space limit (RLIMIT_AS) of the render process, in MiB."""
    max_open_files: int = 64
    """Open file descriptors (RLIMIT_NOFILE)."""
    max_file_mb: int = 16
    """Largest file the code may write (RLIMIT_FSIZE), and the size of the scratch tmpfs, in MiB."""
    max_procs: int = 8
    """Processes (RLIMIT_NPROC) for the dedicated sandbox uid; seccomp already denies fork."""
    max_output_bytes: int = 64 * 1024
    """Captured stdout+stderr kept per render; the rest is read and discarded."""
    max_result_bytes: int = 8 * 1024 * 1024
    """Largest PNG + element export a render may return."""
    width_px: int = 320
    """Rendered figure width in pixels (figure size is forced before saving)."""
    height_px: int = 240
    """Rendered figure height in pixels."""
    dpi: int = 50
    """Dots per inch of the saved PNG (figure inches = pixels / dpi)."""
    workers: int = 2
    """Warm worker processes in the pool (renders run in parallel, one per worker)."""
    isolation: str = "auto"
    """auto: strongest available; strict: refuse to start without namespaces and seccomp;
    minimal: only the floor (process, rlimits, scrubbed env, scratch dir, timeout)."""
    namespaces: bool = True
    """Use Linux namespaces (no network, private mount view, own pid/ipc/uts) where available."""
    seccomp: bool = True
    """Install the seccomp syscall filter (no sockets, exec, fork, ptrace, mount, ...) where available."""
    landlock: bool = True
    """Restrict the filesystem with Landlock (write only the scratch dir) where the kernel has it."""
    drop_user: bool = True
    """When running as root, switch the render to a dedicated unprivileged uid."""
    uid_base: int = 61000
    """First dedicated uid/gid; worker ``i`` renders as ``uid_base + i``."""
    extra_ro_paths: tuple[str, ...] = field(default_factory=tuple)
    """More host paths the render may read (fonts, data); the Python install is always readable."""

    def __post_init__(self) -> None:
        if self.isolation not in ISOLATION_MODES:
            raise ValueError(f"sandbox.isolation must be one of {ISOLATION_MODES}, got {self.isolation!r}")
        for name in (
            "timeout_s",
            "cpu_s",
            "memory_mb",
            "max_open_files",
            "max_file_mb",
            "max_procs",
            "max_output_bytes",
            "max_result_bytes",
            "width_px",
            "height_px",
            "dpi",
            "workers",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"sandbox.{name} must be > 0, got {getattr(self, name)!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["extra_ro_paths"] = list(self.extra_ro_paths)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SandboxConfig:
        d = dict(d)
        d["extra_ro_paths"] = tuple(d.get("extra_ro_paths", ()))
        return cls(**d)


@dataclass
class RenderResult:
    """What one sandboxed run returned.

    ok: a figure was rendered and exported. reason: "" when ok, else one of FAIL_REASONS.
    png: the rendered PNG bytes (b"" on failure). elements: the exported figure elements (texts, types,
    colours, layout), see ``rewards.sandbox.export``. output: captured stdout+stderr (capped).
    output_bytes: how many bytes the code wrote in total. detail: one line on the failure.
    wall_s: seconds from fork to result, measured by the worker. total_s: seconds the caller waited from
    taking a worker to holding the result. isolation: the layers that were applied.
    """

    ok: bool
    reason: str = ""
    png: bytes = b""
    elements: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    output_bytes: int = 0
    detail: str = ""
    wall_s: float = 0.0
    total_s: float = 0.0
    isolation: list[str] = field(default_factory=list)
