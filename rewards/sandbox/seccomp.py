"""A seccomp-BPF syscall filter built in pure Python and installed with ``prctl`` through ctypes.

The filter is a deny list on top of the other layers: every syscall is allowed except those a chart
render never needs and an escape would (network sockets, exec, new processes, ptrace, mounts, new
namespaces, kernel modules, keyrings, BPF, io_uring, privilege and ownership/mode changes, signals,
limits, priorities and CPU affinity of other processes).
Denied calls fail with EPERM (``PermissionError`` in Python) instead of killing the process, so the code
sees an ordinary error. A foreign ABI (i386 or x32 on x86_64) kills the process. Only x86_64 and aarch64
are known; elsewhere :func:`available` is False and the other layers stand alone.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# BPF opcodes (linux/filter.h) and seccomp return values (linux/seccomp.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
RET_ALLOW = 0x7FFF0000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
_PR_SET_NO_NEW_PRIVS = 38
_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_CLONE_THREAD = 0x00010000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # offsets in struct seccomp_data (args are little-endian u64)

# Denied outright, by name; numbers per architecture below.
DENIED = (
    "socket", "socketpair", "bind", "listen", "accept", "accept4", "connect",
    "execve", "execveat", "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "pidfd_send_signal",
    "rt_sigqueueinfo", "rt_tgsigqueueinfo",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "name_to_handle_at", "open_by_handle_at",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "mknod", "mknodat", "personality",
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "fanotify_init",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid",
    "setgroups", "setsid", "setpgid", "sethostname", "setdomainname", "settimeofday", "clock_settime",
    "adjtimex", "vhangup", "iopl", "ioperm",
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "setpriority", "sched_setparam", "sched_setscheduler", "sched_setattr", "ioprio_set",
    "migrate_pages", "move_pages", "kcmp",
)  # fmt: skip

_X86_64 = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53, "clone": 56,
    "fork": 57, "vfork": 58, "execve": 59, "kill": 62, "ptrace": 101, "syslog": 103, "setuid": 105,
    "setgid": 106, "setpgid": 109, "setsid": 112, "setreuid": 113, "setregid": 114, "setgroups": 116,
    "setresuid": 117, "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "rt_sigqueueinfo": 129,
    "mknod": 133, "personality": 135, "vhangup": 153, "pivot_root": 155, "adjtimex": 159, "chroot": 161,
    "acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168,
    "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "tkill": 200, "clock_settime": 227,
    "tgkill": 234, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "mknodat": 259,
    "unshare": 272, "accept4": 288, "rt_tgsigqueueinfo": 297, "perf_event_open": 298,
    "fanotify_init": 300, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308,
    "process_vm_readv": 310, "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320,
    "bpf": 321, "execveat": 322, "userfaultfd": 323, "pidfd_send_signal": 424, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "clone3": 435, "pidfd_getfd": 438,
    "mount_setattr": 442, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93, "lchown": 94,
    "fchownat": 260, "fchmodat": 268, "fchmodat2": 452, "setpriority": 141, "sched_setparam": 142,
    "sched_setscheduler": 144, "sched_setaffinity": 203, "ioprio_set": 251, "migrate_pages": 256,
    "move_pages": 279, "prlimit64": 302, "kcmp": 312, "sched_setattr": 314,
}  # fmt: skip
_AARCH64 = {
    "mknodat": 33, "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "vhangup": 58,
    "quotactl": 60, "acct": 89, "personality": 92, "unshare": 97, "kexec_load": 104, "init_module": 105,
    "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117, "kill": 129, "tkill": 130,
    "tgkill": 131, "rt_sigqueueinfo": 138, "reboot": 142, "setregid": 143, "setgid": 144,
    "setreuid": 145, "setuid": 146, "setresuid": 147, "setresgid": 149, "setfsuid": 151,
    "setfsgid": 152, "setpgid": 154, "setsid": 157, "setgroups": 159, "sethostname": 161,
    "setdomainname": 162, "settimeofday": 170, "adjtimex": 171, "socket": 198, "socketpair": 199,
    "bind": 200, "listen": 201, "accept": 202, "connect": 203, "add_key": 217, "request_key": 218,
    "keyctl": 219, "clone": 220, "execve": 221, "swapon": 224, "swapoff": 225, "rt_tgsigqueueinfo": 240,
    "perf_event_open": 241, "accept4": 242, "fanotify_init": 262, "name_to_handle_at": 264,
    "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271,
    "finit_module": 273, "bpf": 280, "execveat": 281, "userfaultfd": 282, "kexec_file_load": 294,
    "pidfd_send_signal": 424, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
    "clone3": 435, "pidfd_getfd": 438, "mount_setattr": 442, "fchmod": 52, "fchmodat": 53,
    "fchownat": 54, "fchown": 55, "fchmodat2": 452, "ioprio_set": 30, "sched_setparam": 118,
    "sched_setscheduler": 119, "sched_setaffinity": 122, "setpriority": 140, "migrate_pages": 238,
    "move_pages": 239, "prlimit64": 261, "kcmp": 272, "sched_setattr": 274,
}  # fmt: skip
# (AUDIT_ARCH value, syscall table, first number of a foreign ABI sharing the arch value or None)
_ARCHES = {"x86_64": (0xC000003E, _X86_64, 0x40000000), "aarch64": (0xC00000B7, _AARCH64, None)}


def available() -> bool:
    """True on Linux x86_64 / aarch64 (the architectures whose syscall numbers are known here)."""
    return platform.system() == "Linux" and platform.machine() in _ARCHES


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_filter(own_pid: int, machine: str | None = None) -> bytes:
    """The BPF program (packed ``struct sock_filter`` array) for ``machine`` (default: this one).

    Process creation is allowed only as a thread (``clone`` with CLONE_THREAD); ``kill``/``tgkill``/
    ``tkill``, ``prlimit64`` and ``sched_setaffinity`` only towards ``own_pid`` (or pid 0).
    """
    audit_arch, table, foreign = _ARCHES[machine or platform.machine()]
    deny = RET_ERRNO | errno.EPERM
    prog = [_ins(_LD_W_ABS, _OFF_ARCH), _ins(_JEQ_K, audit_arch, 1, 0), _ins(_RET_K, RET_KILL_PROCESS)]
    prog.append(_ins(_LD_W_ABS, _OFF_NR))
    if foreign is not None:  # x32 syscalls carry bit 30 and share AUDIT_ARCH_X86_64
        prog += [_ins(_JGE_K, foreign, 0, 1), _ins(_RET_K, RET_KILL_PROCESS)]
    for name in DENIED:
        if name in table:
            prog += [_ins(_JEQ_K, table[name], 0, 1), _ins(_RET_K, deny)]
    # clone3 passes its flags in memory BPF cannot read: ENOSYS makes glibc fall back to clone.
    prog += [_ins(_JEQ_K, table["clone3"], 0, 1), _ins(_RET_K, RET_ERRNO | errno.ENOSYS)]
    # clone: threads only (no new processes, hence no new namespaces either).
    prog += [
        _ins(_JEQ_K, table["clone"], 0, 4),
        _ins(_LD_W_ABS, _OFF_ARG0),
        _ins(_JSET_K, _CLONE_THREAD, 0, 1),
        _ins(_RET_K, RET_ALLOW),
        _ins(_RET_K, deny),
    ]
    # kill(pid, sig), prlimit64(pid, ...), sched_setaffinity(pid, ...): only ourselves (or pid 0: for kill
    # our own process group, for the others the caller) - never the trainer's limits, CPUs or processes.
    for name in ("kill", "prlimit64", "sched_setaffinity"):
        prog += [
            _ins(_JEQ_K, table[name], 0, 5),
            _ins(_LD_W_ABS, _OFF_ARG0),
            _ins(_JEQ_K, own_pid, 2, 0),
            _ins(_JEQ_K, 0, 1, 0),
            _ins(_RET_K, deny),
            _ins(_RET_K, RET_ALLOW),
        ]
    # tgkill(tgid, tid, sig) and tkill(tid, sig): only our own thread group.
    for name in ("tgkill", "tkill"):
        prog += [
            _ins(_JEQ_K, table[name], 0, 4),
            _ins(_LD_W_ABS, _OFF_ARG0),
            _ins(_JEQ_K, own_pid, 1, 0),
            _ins(_RET_K, deny),
            _ins(_RET_K, RET_ALLOW),
        ]
    prog.append(_ins(_RET_K, RET_ALLOW))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(own_pid: int) -> None:
    """Set no_new_privs and install the filter on the calling thread (irreversible). Raises OSError."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS) failed: {errno.errorcode.get(err, err)}")
    code = build_filter(own_pid)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = _SockFprog(len(code) // 8, ctypes.cast(buf, ctypes.c_void_p))
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP) failed: {errno.errorcode.get(err, err)}")
