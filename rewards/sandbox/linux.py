"""Linux isolation primitives through ctypes: namespaces, a minimal read-only root, privileges, Landlock.

Everything here runs in the forked render process before the untrusted code, and raises ``OSError``
with a one-line message when the kernel refuses. Python 3.11 has no ``os.unshare``, so the calls go to
libc (or to ``syscall(2)`` for those glibc does not wrap).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NS_FLAGS = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_SYS = {"x86_64": {"pivot_root": 155}, "aarch64": {"pivot_root": 41}}
_LANDLOCK_CREATE, _LANDLOCK_ADD_RULE, _LANDLOCK_RESTRICT = 444, 445, 446  # same on every arch

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what} failed: {errno.errorcode.get(err, err)}")
    return ret


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)),
        f"mount {source} on {target}",
    )


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS[platform.machine()]["pivot_root"]
    _check(_libc.syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)), "pivot_root")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), f"prctl({option})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


def drop_capabilities() -> None:
    """Clear the effective, permitted and inheritable capability sets of this process (capset v3)."""
    header = struct.pack("=Ii", 0x20080522, 0)
    data = bytes(24)  # two __user_cap_data_struct of three zero u32
    _check(_libc.capset(ctypes.c_char_p(header), ctypes.c_char_p(data)), "capset")


def write_id_maps(uid_inside: int, uid_outside: int, gid_inside: int, gid_outside: int) -> None:
    """Map one uid/gid into a fresh user namespace (the caller just unshared CLONE_NEWUSER)."""
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{uid_inside} {uid_outside} 1\n")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{gid_inside} {gid_outside} 1\n")


def _bind_ro(src: str, dst: str) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            open(dst, "wb").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def enter_minimal_root(mountpoint: str, ro_paths: list[str], tmpfs_mb: int, uid: int, gid: int) -> None:
    """Make a private mount view whose root is a fresh tmpfs holding only ``ro_paths`` (read-only bind
    mounts at their own paths), ``/dev/{null,zero,urandom}``, a new ``/proc`` and ``/scratch`` (owned
    by ``uid``, the only writable place), then ``pivot_root`` into it and ``chdir("/scratch")``.

    The caller must already be in new mount and pid namespaces. Symlinked top-level paths (``/lib`` on
    merged-usr systems) are recreated as symlinks.
    """
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", mountpoint, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=0755")
    for path in ro_paths:
        dst = mountpoint + path
        if os.path.islink(path) and os.path.dirname(path) == "/":
            if not os.path.lexists(dst):
                os.symlink(os.readlink(path), dst)
            continue
        if os.path.exists(path):
            _bind_ro(path, dst)
    for dev in ("null", "zero", "urandom", "random"):
        _bind_dev(f"/dev/{dev}", f"{mountpoint}/dev/{dev}")
    os.makedirs(mountpoint + "/proc", exist_ok=True)
    mount("proc", mountpoint + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    for name, mode in (("scratch", 0o700), ("tmp", 0o700)):
        os.makedirs(f"{mountpoint}/{name}", mode=mode, exist_ok=True)
        os.chown(f"{mountpoint}/{name}", uid, gid)
    os.chdir(mountpoint)
    pivot_root(".", ".")
    umount2(".", MNT_DETACH)
    os.chdir("/scratch")


def _bind_dev(src: str, dst: str) -> None:
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if not os.path.exists(dst):
        open(dst, "wb").close()
    mount(src, dst, None, MS_BIND)
    mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NOEXEC)


# ------------------------------------------------------------------------------------------ Landlock

_FS_BITS = {1: 13, 2: 14, 3: 15, 4: 15}  # fs access rights per ABI version (16 from ABI 5 on)
_FILE_ONLY = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # rights that apply to a file
_READ = (1 << 0) | (1 << 2) | (1 << 3)  # EXECUTE, READ_FILE, READ_DIR


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where unavailable."""
    if platform.system() != "Linux":
        return 0
    ret = _libc.syscall(ctypes.c_long(_LANDLOCK_CREATE), None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(ret), 0)


def landlock_restrict(ro_paths: list[str], rw_paths: list[str]) -> int:
    """Allow reading only beneath ``ro_paths``, everything beneath ``rw_paths``, no TCP bind/connect and
    (ABI >= 6) no signals or abstract unix sockets leaving this process's domain. Returns the ABI used.

    Requires no_new_privs (set by the seccomp step, or here if not yet set).
    """
    abi = landlock_abi()
    if abi < 1:
        raise OSError(errno.ENOSYS, "landlock unavailable")
    fs_all = (1 << _FS_BITS.get(abi, 16)) - 1
    net = 3 if abi >= 4 else 0  # BIND_TCP | CONNECT_TCP, no rule added: both denied
    scoped = 3 if abi >= 6 else 0  # ABSTRACT_UNIX_SOCKET | SIGNAL
    attr = struct.pack("=QQQ", fs_all, net, scoped)
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    fd = _check(_libc.syscall(ctypes.c_long(_LANDLOCK_CREATE), attr[:size], ctypes.c_size_t(size), 0),
                "landlock_create_ruleset")  # fmt: skip
    try:
        for paths, access in ((ro_paths, _READ), (rw_paths, fs_all)):
            for path in paths:
                if not os.path.exists(path):
                    continue
                pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                try:
                    allowed = access if os.path.isdir(path) else access & _FILE_ONLY & fs_all
                    rule = struct.pack("=Qi", allowed, pfd)
                    _check(_libc.syscall(ctypes.c_long(_LANDLOCK_ADD_RULE), ctypes.c_int(fd), 1, rule, 0),
                           f"landlock_add_rule {path}")  # fmt: skip
                finally:
                    os.close(pfd)
        _libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (idempotent)
        _check(
            _libc.syscall(ctypes.c_long(_LANDLOCK_RESTRICT), ctypes.c_int(fd), 0), "landlock_restrict_self"
        )
    finally:
        os.close(fd)
    return abi
