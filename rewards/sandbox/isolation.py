"""Which isolation layers to apply, and applying them in a freshly forked render process.

A :class:`Plan` lists the layers. :func:`initial_plan` asks for everything the settings and platform
allow; the worker then runs a warm-up render through the plan and drops any layer the kernel refuses (see
``Zygote.probe``), so the plan in use is what this machine really enforces. :func:`render_process` is
the body of the forked process: it applies the plan, then hands over to :mod:`rewards.sandbox.runner`.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import signal
import stat
import sys
from dataclasses import dataclass, field

from rewards.sandbox import frames, linux, runner, seccomp
from rewards.sandbox.config import SandboxConfig

LAYERS = ("namespaces", "landlock", "seccomp", "drop_user")
_SYSTEM_RO = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")


@dataclass(frozen=True)
class Plan:
    """Layers a render gets. ``userns``: namespaces through a user namespace (not root).
    ``drop_user``: switch to ``uid``/``gid``; ``drop_caps``: stay the same uid without capabilities."""

    uid: int
    gid: int
    namespaces: bool = False
    userns: bool = False
    landlock: bool = False
    seccomp: bool = False
    drop_user: bool = False
    drop_caps: bool = False
    ro_paths: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=(), compare=False)

    def without(self, layer: str) -> Plan:
        plan = dataclasses.replace(self, **{layer: False})
        if layer == "namespaces":
            plan = dataclasses.replace(plan, userns=False)
        if plan.drop_user and not plan.namespaces and not _readable_by_others(plan.ro_paths):
            plan = dataclasses.replace(plan, drop_user=False)
        if os.geteuid() == 0 and not plan.drop_user:
            plan = dataclasses.replace(plan, drop_caps=True)
        return plan

    def layers(self) -> list[str]:
        """Names of the layers applied on top of the floor (process, rlimits, env, scratch, timeout)."""
        out = []
        if self.namespaces:
            out.append(
                "namespaces(user,net,mount,pid,ipc,uts)"
                if self.userns
                else "namespaces(net,mount,pid,ipc,uts)"
            )
        if self.drop_user:
            out.append(f"uid {self.uid}")
        if self.drop_caps:
            out.append("no capabilities")
        if self.landlock:
            out.append(f"landlock(abi {linux.landlock_abi()})")
        if self.seccomp:
            out.append("seccomp")
        return out


def _read_only_paths(cfg: SandboxConfig) -> tuple[str, ...]:
    """Host paths a render may read: the system libraries, the Python install and matplotlib's data."""
    import matplotlib

    cands = list(_SYSTEM_RO) + [sys.prefix, sys.base_prefix, sys.exec_prefix, matplotlib.get_data_path()]
    cands += [p for p in sys.path if p and ("site-packages" in p or "dist-packages" in p)]
    cands += list(cfg.extra_ro_paths)
    out: list[str] = []
    for p in sorted({os.path.abspath(c) for c in cands} | {os.path.realpath(c) for c in cands}, key=len):
        if os.path.lexists(p) and not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return tuple(out)


def _readable_by_others(paths: tuple[str, ...]) -> bool:
    """Whether an unprivileged uid can reach every path (o+x on each ancestor, o+r on the path)."""
    for p in paths:
        if p in _SYSTEM_RO or not os.path.exists(p):
            continue
        parts = os.path.realpath(p).split("/")
        for i in range(2, len(parts) + 1):
            mode = os.stat("/".join(parts[:i]) or "/").st_mode
            if not mode & stat.S_IXOTH or (i == len(parts) and not mode & stat.S_IROTH):
                return False
    return True


def _id_mapped(ident: int, map_file: str) -> bool:
    """Whether ``ident`` exists in this user namespace (rootless containers map only a few ids)."""
    try:
        with open(map_file) as f:
            for line in f:
                inside, _, count = (int(x) for x in line.split())
                if inside <= ident < inside + count:
                    return True
    except (OSError, ValueError):
        return platform.system() != "Linux"
    return False


def initial_plan(uid: int, gid: int, cfg: SandboxConfig) -> Plan:
    """Everything the settings ask for and the platform could offer; the warm-up decides the rest."""
    linux_ok = platform.system() == "Linux"
    full = cfg.isolation != "minimal"
    root = os.geteuid() == 0
    ro = _read_only_paths(cfg)
    notes = [] if full else ["isolation 'minimal': namespaces, Landlock and seccomp are not used"]
    ns = full and cfg.namespaces and linux_ok
    ll = full and cfg.landlock and linux.landlock_abi() > 0
    sc = full and cfg.seccomp and seccomp.available()
    if full and linux_ok and not sc and cfg.seccomp:
        notes.append(f"seccomp unavailable: no syscall table for {platform.machine()}")
    mapped = _id_mapped(uid, "/proc/self/uid_map") and _id_mapped(gid, "/proc/self/gid_map")
    drop_user = cfg.drop_user and root and mapped and (ns or _readable_by_others(ro))
    if cfg.drop_user and root and not mapped:
        notes.append(f"dedicated uid unavailable: uid {uid} is not mapped in this user namespace")
    elif cfg.drop_user and root and not drop_user:
        notes.append("dedicated uid unavailable: the Python install is not readable by other users")
    plan = Plan(uid, gid, namespaces=ns, userns=ns and not root, landlock=ll, seccomp=sc,
                drop_user=drop_user, drop_caps=root and not drop_user, ro_paths=ro, notes=tuple(notes))  # fmt: skip
    return plan


def set_subreaper() -> None:
    """Make the calling worker the reaper of its renders' orphans (Linux only, best effort)."""
    if platform.system() == "Linux":
        try:
            linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        except OSError:
            pass


def _keep_fd(fd: int) -> bool:
    """Read-only regular files (matplotlib's open font files) survive; pipes, sockets, writers do not."""
    try:
        st = os.fstat(fd)
        import fcntl

        return stat.S_ISREG(st.st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
    except OSError:
        return False


def _setup_fds(out_w: int, res_w: int) -> int:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(out_w, 2)
    res = os.dup(res_w)
    try:
        fds = [int(f) for f in os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")]
    except OSError:
        fds = list(range(3, 256))
    for fd in fds:
        if fd > 2 and fd != res and not _keep_fd(fd):
            try:
                os.close(fd)
            except OSError:
                pass
    return res


def _die_with_parent(parent: int | None) -> None:
    """SIGKILL this process when its parent dies (Linux); exit now if ``parent`` is already gone."""
    if platform.system() != "Linux":
        return
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(72)


def _fail(res_fd: int, layer: str, err: BaseException) -> None:
    frames.write_frame(res_fd, {"ok": False, "reason": "sandbox", "layer": layer, "detail": str(err)[:300]})
    os._exit(71)


def _limits(cfg: SandboxConfig, plan: Plan) -> None:
    mib = 1024 * 1024
    limits = [
        (resource.RLIMIT_CPU, (cfg.cpu_s, cfg.cpu_s + 1)),
        (resource.RLIMIT_AS, (cfg.memory_mb * mib,) * 2),
        (resource.RLIMIT_NOFILE, (cfg.max_open_files,) * 2),
        (resource.RLIMIT_FSIZE, (cfg.max_file_mb * mib,) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ]
    if plan.drop_user or not plan.namespaces:  # per-uid count: meaningful for the dedicated uid
        limits.append((resource.RLIMIT_NPROC, (cfg.max_procs,) * 2))
    for res, value in limits:
        resource.setrlimit(res, value)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes fail with EFBIG instead of killing


def render_process(
    code: bytearray, cfg: SandboxConfig, plan: Plan, out_w: int, res_w: int, base: str, scratch: str
) -> None:
    """Body of the forked render process: apply ``plan``, run ``code``, write the result; never returns."""
    res_fd = 2
    try:
        _die_with_parent(os.getppid())  # the worker dying takes its renders with it
        os.setsid()
        res_fd = _setup_fds(out_w, res_w)
        outer_uid, outer_gid = os.geteuid(), os.getegid()
        if plan.namespaces:
            try:
                linux.unshare(linux.NS_FLAGS | (linux.CLONE_NEWUSER if plan.userns else 0))
                if plan.userns:
                    linux.write_id_maps(0, outer_uid, 0, outer_gid)
            except OSError as e:
                _fail(res_fd, "namespaces", e)
            child = os.fork()
            if child:  # the middle process: relay the namespace init's fate, hold nothing else
                os.close(res_fd)
                _, st = os.waitpid(child, 0)
                os._exit(os.WEXITSTATUS(st) if os.WIFEXITED(st) else 128 + os.WTERMSIG(st))
            try:
                _die_with_parent(None)
                linux.sethostname("sandbox")
                owner = (plan.uid, plan.gid) if plan.drop_user else (0, 0)
                mountpoint = os.path.join(base, "root")
                os.makedirs(mountpoint, exist_ok=True)
                linux.enter_minimal_root(mountpoint, list(plan.ro_paths), cfg.max_file_mb + 8, *owner)
            except OSError as e:
                _fail(res_fd, "namespaces", e)
        else:
            os.chdir(scratch)
        try:
            _limits(cfg, plan)
        except (OSError, ValueError) as e:
            _fail(res_fd, "rlimits", e)
        try:
            if plan.drop_user:
                os.setgroups([])
                os.setresgid(plan.gid, plan.gid, plan.gid)
                os.setresuid(plan.uid, plan.uid, plan.uid)
            elif plan.drop_caps or plan.userns:
                linux.drop_capabilities()
            _die_with_parent(None)  # a credential change clears the parent-death signal: set it again
        except OSError as e:
            _fail(res_fd, "drop_user", e)
        cwd = os.getcwd()
        os.environ.clear()
        os.environ.update(
            {"MPLBACKEND": "Agg", "HOME": cwd, "TMPDIR": cwd, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
        )
        if plan.landlock:
            try:
                ro = ["/"] if plan.namespaces else list(plan.ro_paths)
                linux.landlock_restrict(ro, [cwd, "/dev/null"] + (["/tmp"] if plan.namespaces else []))
            except OSError as e:
                _fail(res_fd, "landlock", e)
        if plan.seccomp:
            try:
                seccomp.install(os.getpid())
            except OSError as e:
                _fail(res_fd, "seccomp", e)
        runner.execute(code, cfg, res_fd, plan.layers())
    except BaseException as e:  # noqa: BLE001 - nothing may escape a forked child
        try:
            os.write(2, f"sandbox setup failed: {type(e).__name__}: {e}\n".encode()[:500])
        finally:
            os._exit(70)
    os._exit(0)
