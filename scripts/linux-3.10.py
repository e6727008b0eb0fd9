#!/usr/bin/env python3
"""Runs a command as if on Linux 3.10 (CentOS 7's kernel), as far as system calls go: every x86_64
system call added after 3.10 (number 314 and up: sched_setattr, renameat2, getrandom,
memfd_create, statx, rseq, clone3, io_uring_*, pidfd_*, close_range, epoll_pwait2, …) fails
with ENOSYS, as it would there. A seccomp filter does it; it is inherited by the command and
everything it starts. A program that needs one of those calls without a fallback fails under it.

    scripts/linux-3.10.py COMMAND [ARGS...]

It does not emulate new *flags* of old calls (those fail with EINVAL on 3.10, not ENOSYS).
x86_64 only (the filter lets other architectures' calls through untouched).
"""
import ctypes
import os
import platform
import struct
import sys

FIRST_AFTER_3_10 = 314  # sched_setattr, Linux 3.14; 313 (finit_module) came with 3.8
AUDIT_ARCH_X86_64 = 0xC000003E
ENOSYS = 38

BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
BPF_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
BPF_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
BPF_RET_K = 0x06  # BPF_RET | BPF_K
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) >= 2 else 2)
    if platform.machine() != "x86_64":
        sys.exit("linux-3.10.py: x86_64 only")
    # struct seccomp_data { int nr; __u32 arch; … }: nr at offset 0, arch at 4
    program = [
        (BPF_LD_W_ABS, 0, 0, 4),  # 0: A = arch
        (BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),  # 1: not x86_64 → 5 (allow)
        (BPF_LD_W_ABS, 0, 0, 0),  # 2: A = nr
        (BPF_JGE_K, 0, 1, FIRST_AFTER_3_10),  # 3: newer than 3.10 → 4, else 5
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | ENOSYS),  # 4
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),  # 5
    ]
    filters = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(filters, len(filters))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.addressof(buf))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        sys.exit(f"linux-3.10.py: PR_SET_NO_NEW_PRIVS: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        sys.exit(f"linux-3.10.py: PR_SET_SECCOMP: {os.strerror(ctypes.get_errno())}")
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
