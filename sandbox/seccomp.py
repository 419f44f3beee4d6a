"""The ``strict`` seccomp profile: an allowlist of system calls, built from our own data (pure, no I/O).

Docker's default profile already blocks most of the kernel's attack surface, but it lets a server run
a binary straight from memory (``memfd_create`` + ``execve`` of ``/proc/self/fd/N`` beats the
``noexec`` /tmp) and it allows ``ptrace`` and ``io_uring``. ``strict`` (the default for container
servers) keeps what MCP servers written in Python, Node, Go, Rust or Java need (threads, epoll, files,
sockets, signals, timers, subprocesses) and refuses everything else with ``EPERM``.
``seccomp: docker-default`` in a server's config passes nothing, so Docker applies its own default
profile instead; the gateway never passes ``unconfined``.

Notable denials, and what each one stops:

=====================================================  ==================================================
denied system call                                     what it stops
=====================================================  ==================================================
``memfd_create``, ``memfd_secret``                     running a downloaded binary from memory (the
                                                       noexec /tmp is the only writable place), hiding
                                                       memory from the host
``execveat``                                           executing an anonymous file descriptor
``ptrace``, ``process_vm_readv``,                      reading or changing another process's memory
``process_vm_writev``, ``process_madvise``,            (credentials of a sibling process, injecting code),
``pidfd_getfd``, ``kcmp``, ``get_robust_list``         stealing its descriptors, probing its layout
``userfaultfd``                                        stalling the kernel at a chosen instant, the
                                                       classic primitive of kernel race exploits
``keyctl``, ``add_key``, ``request_key``               the kernel keyring: not namespaced, a long CVE
                                                       history
``bpf``, ``perf_event_open``                           loading kernel programs, reading kernel and
                                                       hardware counters (side channels)
``io_uring_setup``, ``io_uring_enter``,                a second syscall interface that seccomp cannot
``io_uring_register`` (``ENOSYS``)                     see into, and many kernel bugs; libuv, tokio
                                                       and glibc fall back to plain syscalls
``unshare``, ``setns``; ``clone`` with ``CLONE_NEW*``  new namespaces (user namespaces turn every
flags; ``clone3`` (``ENOSYS``, so glibc falls back     capability back on inside them: the way into
to ``clone``, whose flags a filter can read)           most container-escape bugs)
``mount``, ``umount``, ``umount2``, ``pivot_root``,    changing the filesystem view
``chroot``, ``move_mount``, ``open_tree``,
``open_tree_attr``, ``mount_setattr``, ``fsopen``,
``fsconfig``, ``fsmount``, ``fspick``,
``listmount``, ``statmount``
``open_by_handle_at``, ``name_to_handle_at``           opening host files by inode handle ("shocker")
``personality`` other than ``PER_LINUX``,              turning off address-space randomization
``PER_LINUX32`` and the query ``0xffffffff``           (``ADDR_NO_RANDOMIZE``), ``READ_IMPLIES_EXEC``
``socket`` of families other than ``AF_UNIX``,         rarely used protocol families (packet, vsock,
``AF_INET``, ``AF_INET6``, ``AF_NETLINK``;             ``AF_ALG``, RDS, TIPC, CAN, XDP, ...), where
``socketcall`` (32-bit, its arguments are in memory)   kernel exploits keep being found
``kexec_load``, ``kexec_file_load``, ``reboot``        replacing or stopping the host kernel
``init_module``, ``finit_module``,                     loading kernel code
``delete_module``, ``create_module``,
``query_module``, ``get_kernel_syms``
``swapon``, ``swapoff``, ``acct``, ``quotactl``,       host-wide administration
``quotactl_fd``, ``nfsservctl``, ``lookup_dcookie``,
``sethostname``, ``setdomainname``, ``vhangup``,
``_sysctl``, ``sysfs``, ``ustat``, ``uselib``
``settimeofday``, ``stime``, ``clock_settime``,        changing the host's clock (the clock is not
``clock_settime64``, ``adjtimex``,                     namespaced)
``clock_adjtime``, ``clock_adjtime64``
``syslog``                                             reading the kernel log (addresses, other
                                                       containers' messages)
``iopl``, ``ioperm``, ``modify_ldt``,                  raw I/O ports and x86 segment tricks
``vm86``, ``vm86old``
``fanotify_init``, ``fanotify_mark``                   watching the whole filesystem, blocking others'
                                                       file access
``mbind``, ``migrate_pages``, ``move_pages``,          moving memory between NUMA nodes (and other
``set_mempolicy``, ``set_mempolicy_home_node``         processes' pages)
``vmsplice``                                           a historic page-cache corruption primitive
``process_mrelease``                                   acting on another process's memory
=====================================================  ==================================================

Anything else not listed in :data:`ALLOWED` is refused too (``EPERM``); the kernel's newest system
calls (unknown to the engine's libseccomp) answer ``ENOSYS``, so programs take their fallbacks.
Allowed and still worth knowing: ``ioctl`` (no TTY is attached), ``prctl``, ``seccomp`` and
``landlock_*`` (a server may restrict itself further), SysV IPC (namespaced), ``splice`` and ``tee``
(Go's network copies use them). Not stopped by any profile: a program that maps its own code
with ``mmap``/``mprotect`` (every JIT does that, so Node and Java need it); the read-only root
filesystem, dropped capabilities and ``no-new-privileges`` limit what such code can reach.

The profile is Docker's seccomp JSON: ``defaultAction`` ``SCMP_ACT_ERRNO`` (``EPERM``), an
``archMap`` for x86_64 (with 32-bit x86) and aarch64 (with 32-bit arm), and ``syscalls`` rules. Names
a given architecture or engine does not know are skipped by the engine's runtime. It is passed
inline: ``security_opt=["seccomp=<json>"]``.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any, Final

EPERM: Final = 1
ENOSYS: Final = 38

#: Every namespace flag ``clone`` accepts (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID,
#: NEWNET). CLONE_NEWTIME (0x80) is left out: in clone's flags that bit is part of the exit signal,
#: and the kernel accepts it from clone3 and unshare only, both of which are denied.
CLONE_NAMESPACE_FLAGS: Final = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 \
    | 0x40000000

#: personality() values a program may set (or ask for): PER_LINUX, PER_LINUX32, the query.
PERSONALITIES: Final = (0x0, 0x8, 0xFFFFFFFF)

#: socket() families: local sockets, IPv4, IPv6 and netlink (getifaddrs, Node's os.networkInterfaces).
SOCKET_FAMILIES: Final = {"AF_UNIX": 1, "AF_INET": 2, "AF_INET6": 10, "AF_NETLINK": 16}

ARCH_MAP: Final = (
    {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
)

#: Allowed with any arguments, by purpose. Names cover x86_64, aarch64 and their 32-bit variants
#: (``*32``, ``*64``, ``*_time64`` are the 32-bit ABIs' names).
ALLOWED: Final[dict[str, tuple[str, ...]]] = {
    "processes and threads": (
        "arch_prctl", "capget", "capset", "execve", "exit", "exit_group", "fork", "vfork",
        "wait4", "waitid", "waitpid", "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid",
        "setpgid", "setsid", "prctl", "set_tid_address", "set_robust_list", "set_thread_area",
        "get_thread_area", "set_tls", "cacheflush", "rseq", "restart_syscall", "pidfd_open",
        "pidfd_send_signal", "kill", "tkill", "tgkill", "seccomp", "landlock_create_ruleset",
        "landlock_add_rule", "landlock_restrict_self", "membarrier", "umask", "uname", "sysinfo",
        "getcpu", "getrandom",
    ),
    # Without capabilities these can only drop or keep ids, never gain them.
    "user and group ids": (
        "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
        "getuid32", "geteuid32", "getgid32", "getegid32", "getresuid32", "getresgid32", "getgroups32",
        "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
        "setfsgid", "setuid32", "setgid32", "setreuid32", "setregid32", "setresuid32", "setresgid32",
        "setgroups32", "setfsuid32", "setfsgid32",
    ),
    "scheduling and limits": (
        "futex", "futex_time64", "futex_waitv", "futex_wake", "futex_wait", "futex_requeue",
        "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getparam", "sched_setparam",
        "sched_getscheduler", "sched_setscheduler", "sched_get_priority_max", "sched_get_priority_min",
        "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_getattr", "sched_setattr",
        "getpriority", "setpriority", "nice", "ioprio_get", "ioprio_set", "getrlimit", "setrlimit",
        "ugetrlimit", "prlimit64", "getrusage", "times",
    ),
    "signals": (
        "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend",
        "rt_sigtimedwait", "rt_sigtimedwait_time64", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
        "sigaltstack", "signalfd", "signalfd4", "sigaction", "sigprocmask", "sigreturn", "sigpending",
        "sigsuspend", "signal", "pause", "alarm",
    ),
    "clocks and timers": (
        "clock_gettime", "clock_gettime64", "clock_getres", "clock_getres_time64", "clock_nanosleep",
        "clock_nanosleep_time64", "nanosleep", "gettimeofday", "time", "getitimer", "setitimer",
        "timer_create", "timer_settime", "timer_settime64", "timer_gettime", "timer_gettime64",
        "timer_getoverrun", "timer_delete", "timerfd_create", "timerfd_settime", "timerfd_settime64",
        "timerfd_gettime", "timerfd_gettime64",
    ),
    "memory": (
        "brk", "mmap", "mmap2", "munmap", "mremap", "mprotect", "pkey_mprotect", "pkey_alloc",
        "pkey_free", "madvise", "mlock", "mlock2", "munlock", "mlockall", "munlockall", "msync",
        "mincore", "get_mempolicy", "mseal", "map_shadow_stack",
    ),
    "files and descriptors": (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev", "preadv2",
        "pwritev2", "open", "openat", "openat2", "creat", "close", "close_range", "lseek", "_llseek",
        "dup", "dup2", "dup3", "pipe", "pipe2", "fcntl", "fcntl64", "flock", "ioctl",
        "stat", "fstat", "lstat", "newfstatat", "stat64", "fstat64", "lstat64", "fstatat64", "statx",
        "statfs", "fstatfs", "statfs64", "fstatfs64", "access", "faccessat", "faccessat2", "readlink",
        "readlinkat", "getdents", "getdents64", "getcwd", "chdir", "fchdir", "mkdir", "mkdirat",
        "rmdir", "unlink", "unlinkat", "rename", "renameat", "renameat2", "link", "linkat", "symlink",
        "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
        "fchownat", "chown32", "fchown32", "lchown32", "truncate", "ftruncate", "truncate64",
        "ftruncate64", "fallocate", "fadvise64", "fadvise64_64", "arm_fadvise64_64", "readahead",
        "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "sync_file_range2",
        "arm_sync_file_range", "utime", "utimes", "utimensat", "utimensat_time64", "futimesat",
        "mknod", "mknodat", "sendfile", "sendfile64", "copy_file_range", "splice", "tee",
        "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr", "setxattr",
        "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "getxattrat",
        "setxattrat", "listxattrat", "removexattrat", "inotify_init", "inotify_init1",
        "inotify_add_watch", "inotify_rm_watch", "cachestat",
    ),
    "waiting for events": (
        "poll", "ppoll", "ppoll_time64", "select", "_newselect", "pselect6", "pselect6_time64",
        "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "eventfd", "eventfd2",
    ),
    # socket() itself is allowed per family, below.
    "sockets": (
        "socketpair", "bind", "listen", "accept", "accept4", "connect", "getsockname", "getpeername",
        "sendto", "recvfrom", "send", "recv", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg",
        "recvmmsg_time64", "shutdown", "setsockopt", "getsockopt",
    ),
    # SysV IPC is per IPC namespace (each container has its own); POSIX queues likewise.
    "inter-process communication": (
        "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semtimedop_time64",
        "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "ipc", "mq_open", "mq_unlink", "mq_timedsend",
        "mq_timedsend_time64", "mq_timedreceive", "mq_timedreceive_time64", "mq_notify", "mq_getsetattr",
    ),
    "asynchronous I/O (libaio)": (
        "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        "io_pgetevents_time64",
    ),
}

#: Refused with ENOSYS rather than EPERM: "this kernel does not have it", which makes libraries take
#: their fallback paths quietly (glibc's clone3 -> clone, libuv's io_uring -> thread pool).
ENOSYS_CALLS: Final = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")

#: The denials the module docstring explains (with a reason each). Everything not allowed is denied;
#: this list exists so tests can check that none of these ever slips into an allow rule.
DENIED: Final[dict[str, str]] = {
    **dict.fromkeys(("memfd_create", "memfd_secret"), "running a binary from memory"),
    "execveat": "executing an anonymous file descriptor",
    **dict.fromkeys(
        ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
         "get_robust_list", "process_mrelease"),
        "reaching into another process"),
    "userfaultfd": "kernel race exploits",
    **dict.fromkeys(("keyctl", "add_key", "request_key"), "the kernel keyring"),
    **dict.fromkeys(("bpf", "perf_event_open"), "kernel programs and counters"),
    **dict.fromkeys(("unshare", "setns"), "new namespaces"),
    **dict.fromkeys(
        ("mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "open_tree_attr",
         "mount_setattr", "fsopen", "fsconfig", "fsmount", "fspick", "listmount", "statmount"),
        "changing the filesystem view"),
    **dict.fromkeys(("open_by_handle_at", "name_to_handle_at"), "opening host files by handle"),
    "socketcall": "socket families cannot be checked through it",
    **dict.fromkeys(("kexec_load", "kexec_file_load", "reboot"), "replacing or stopping the kernel"),
    **dict.fromkeys(
        ("init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms"),
        "kernel modules"),
    **dict.fromkeys(
        ("swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "nfsservctl", "lookup_dcookie", "sethostname",
         "setdomainname", "vhangup", "_sysctl", "sysfs", "ustat", "uselib"),
        "host administration"),
    **dict.fromkeys(
        ("settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex", "clock_adjtime",
         "clock_adjtime64"),
        "changing the host's clock"),
    "syslog": "reading the kernel log",
    **dict.fromkeys(("iopl", "ioperm", "modify_ldt", "vm86", "vm86old"), "I/O ports, x86 segments"),
    **dict.fromkeys(("fanotify_init", "fanotify_mark"), "whole-filesystem watches"),
    **dict.fromkeys(("mbind", "migrate_pages", "move_pages", "set_mempolicy", "set_mempolicy_home_node"),
                    "NUMA page moves"),
    "vmsplice": "page-cache corruption primitive",
}


def _rule(names: list[str] | tuple[str, ...], action: str = "SCMP_ACT_ALLOW", **extra: Any) -> dict[str, Any]:
    return {"names": sorted(names), "action": action, **extra}


def _arg(index: int, value: int, op: str = "SCMP_CMP_EQ", value_two: int = 0) -> dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


def strict_profile() -> dict[str, Any]:
    """The strict profile as a Docker seccomp document (a fresh one on every call)."""
    rules = [_rule(names) for names in ALLOWED.values()]
    # clone for threads and fork, never with a namespace flag: (flags & NS_FLAGS) == 0. The flags are
    # argument 0 on every architecture in ARCH_MAP (s390 would be argument 1).
    rules.append(_rule(["clone"], args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)]))
    # One rule per accepted value: rules on the same call are alternatives, conditions in one rule all
    # have to hold.
    rules += [_rule(["personality"], args=[_arg(0, value)]) for value in PERSONALITIES]
    rules += [_rule(["socket"], args=[_arg(0, family)]) for family in SOCKET_FAMILIES.values()]
    rules.append(_rule(ENOSYS_CALLS, "SCMP_ACT_ERRNO", errnoRet=ENOSYS))
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "archMap": [dict(a) for a in ARCH_MAP],
        "syscalls": rules,
    }


@cache
def strict_profile_json() -> str:
    """The strict profile as compact JSON, the way ``security_opt`` ``seccomp=<json>`` wants it."""
    return json.dumps(strict_profile(), separators=(",", ":"), sort_keys=True)


def allowed_names() -> frozenset[str]:
    """Every system call some rule of the strict profile allows (with or without conditions)."""
    return frozenset(
        name for rule in strict_profile()["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for name in rule["names"]
    )


def security_opt(mode: str) -> list[str]:
    """The seccomp part of a container's ``security_opt`` for a server's ``seccomp`` setting.

    ``strict``: our profile, inline. ``docker-default``: nothing, so the engine applies its default.
    """
    if mode == "strict":
        return [f"seccomp={strict_profile_json()}"]
    if mode == "docker-default":
        return []
    raise ValueError(f"seccomp: expected 'strict' or 'docker-default', got {mode!r}")
