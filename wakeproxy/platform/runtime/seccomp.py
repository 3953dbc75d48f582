"""The seccomp profile of every sandbox: an allowlist, modelled on Docker's default.

Everything a program normally does is allowed; denied (EPERM) is what reaches the
kernel's or the host's shared state rather than the sandbox's own: modules, kexec,
reboot, swap, clocks, keyrings, BPF and perf, mounting and namespaces (`mount`, the new
mount API, `unshare`, `setns`, namespace flags of `clone`; `clone3` answers ENOSYS so
that libc falls back to `clone`, whose flags can be checked), file handles
(`open_by_handle_at` is how a container once read the host's files), userfaultfd,
io_uring (a large attack surface of its own), NUMA policy and the obsolete ones. A
syscall this list does not name, such as one of a later kernel, is denied.

The architecture-specific entries are x86_64's; runc skips names its libseccomp does not
know, so naming a syscall of a newer kernel is harmless.
"""

from __future__ import annotations

from typing import Any

EPERM = 1
ENOSYS = 38

CLONE_NAMESPACE_FLAGS = 0x7E020000
"""CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET."""

PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
"""PER_LINUX, PER_LINUX32, UNAME26 (and both), and the query (0xffffffff)."""

ALLOWED = """
    read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2 open openat
    openat2 creat close close_range lseek dup dup2 dup3 pipe pipe2 fcntl flock ioctl
    sendfile splice tee vmsplice copy_file_range fsync fdatasync syncfs sync
    sync_file_range truncate ftruncate fallocate fadvise64 readahead

    stat fstat lstat newfstatat statx statfs fstatfs access faccessat faccessat2
    getdents getdents64 getcwd chdir fchdir chroot rename renameat renameat2 mkdir mkdirat
    rmdir link linkat unlink unlinkat symlink symlinkat readlink readlinkat mknod mknodat
    chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat umask utime utimes
    utimensat futimesat setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr
    listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr setxattrat
    getxattrat listxattrat removexattrat inotify_init inotify_init1 inotify_add_watch
    inotify_rm_watch

    mmap mprotect munmap mremap msync mincore madvise brk mlock mlock2 munlock mlockall
    munlockall remap_file_pages get_mempolicy memfd_create membarrier pkey_mprotect
    pkey_alloc pkey_free map_shadow_stack mseal cachestat

    shmget shmat shmctl shmdt semget semop semtimedop semctl msgget msgsnd msgrcv msgctl
    mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr

    socket socketpair connect accept accept4 bind listen shutdown getsockname getpeername
    setsockopt getsockopt sendto recvfrom sendmsg recvmsg sendmmsg recvmmsg

    poll ppoll select pselect6 epoll_create epoll_create1 epoll_ctl epoll_wait
    epoll_pwait epoll_pwait2 eventfd eventfd2 signalfd signalfd4 timerfd_create
    timerfd_settime timerfd_gettime io_setup io_destroy io_getevents io_pgetevents
    io_submit io_cancel

    fork vfork execve execveat exit exit_group wait4 waitid kill tkill tgkill
    pidfd_open pidfd_send_signal pidfd_getfd ptrace process_vm_readv process_vm_writev
    seccomp prctl arch_prctl set_tid_address set_robust_list get_robust_list rseq
    set_thread_area get_thread_area modify_ldt futex futex_waitv futex_wake futex_wait
    futex_requeue restart_syscall

    rt_sigaction rt_sigprocmask rt_sigreturn rt_sigpending rt_sigtimedwait
    rt_sigqueueinfo rt_tgsigqueueinfo rt_sigsuspend sigaltstack pause nanosleep
    clock_nanosleep alarm getitimer setitimer timer_create timer_settime timer_gettime
    timer_getoverrun timer_delete clock_gettime clock_getres gettimeofday time times
    adjtimex

    getpid getppid gettid getuid geteuid getgid getegid getresuid getresgid getgroups
    setuid setgid setreuid setregid setresuid setresgid setfsuid setfsgid setgroups
    getpgid setpgid getpgrp getsid setsid capget capset getrlimit setrlimit prlimit64
    getrusage getpriority setpriority ioprio_get ioprio_set sched_yield sched_setparam
    sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max
    sched_get_priority_min sched_rr_get_interval sched_setaffinity sched_getaffinity
    sched_setattr sched_getattr getcpu getrandom uname sysinfo sethostname setdomainname
    landlock_create_ruleset landlock_add_rule landlock_restrict_self
""".split()  # noqa: SIM905 (grouped by kind, one block per group)


def profile() -> dict[str, Any]:
    """The `linux.seccomp` section of an OCI runtime config."""
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": sorted(ALLOWED), "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": CLONE_NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            },
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            *(
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
                }
                for value in PERSONALITIES
            ),
        ],
    }
