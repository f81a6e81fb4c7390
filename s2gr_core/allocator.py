"""glibc's malloc told to keep freed memory for reuse (set when ``s2gr_core`` is imported).

PyTorch's CPU allocator caches nothing: every tensor is a fresh ``malloc``. glibc maps a block
above its mmap threshold (dynamic, 32 MiB at most) afresh and returns it to the kernel on free,
and trims freed memory off the top of its heap, so the next tensor of that size is page-faulted
4 KiB at a time as it is written. At the paper size (Beauty, fp32, 2 threads, nothing else
running) S2GR training spent 10-17 s of every 30 s of CPU in the kernel on 200-320 k faults per 6
batches, and beam search 2 s of 17 s. Thresholds of 1 GiB keep blocks in the heap and freed
memory in the process: faults fall to about 0 and S2GR trains at 66-112 instead of 46-63
samples per CPU-second. The cost: the process keeps what it freed (up to 1 GiB above what it
uses), so its resident memory stays near its peak until it exits.

The user's choice wins: nothing is changed when ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_`` or ``GLIBC_TUNABLES`` is set, or ``S2GR_MALLOC=default``. Other C
libraries (musl, macOS) are left as they are.
"""

from __future__ import annotations

import ctypes
import os
import platform

THRESHOLD = 1 << 30  # bytes, for both thresholds
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
USER_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_policy = "system default (not applied yet)"


def keep_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds to 1 GiB unless the user chose; return what holds."""
    global _policy
    chosen = [f"{k}={os.environ[k]}" for k in USER_KEYS if k in os.environ]
    if chosen:
        _policy = ", ".join(chosen)
    elif os.environ.get("S2GR_MALLOC") == "default":
        _policy = "glibc default (S2GR_MALLOC=default)"
    elif platform.libc_ver()[0] != "glibc":
        _policy = "system default (not glibc)"
    else:
        libc = ctypes.CDLL(None)  # the process's own symbols: glibc is loaded (find_library would run ldconfig)
        size = ctypes.c_int(THRESHOLD)
        if libc.mallopt(M_MMAP_THRESHOLD, size) and libc.mallopt(M_TRIM_THRESHOLD, size):
            _policy = "mmap and trim thresholds 1 GiB"
        else:
            _policy = "glibc default (mallopt refused 1 GiB thresholds)"
    return _policy


def malloc_policy() -> str:
    """How freed memory is kept, for the runtime line and run tags."""
    return _policy
