"""Heap reuse for large CPU tensors (glibc): fewer page faults in training and scene inference.

Example:
    >>> from di3cl_hf.memory import reuse_large_allocations
    >>> with reuse_large_allocations():  # doctest: +SKIP
    ...     train()
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import threading
from collections.abc import Iterator

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_INT_MAX = 2**31 - 1  # mallopt takes a C int: larger values would wrap (a 4 GiB threshold would become 0)
_NO_TRIM = -1  # M_TRIM_THRESHOLD -1: never give the heap's top back to the kernel
_DEFAULT_MMAP_THRESHOLD, _DEFAULT_TRIM_THRESHOLD = 32 << 20, 64 << 20  # glibc's usual (dynamic) values
_MALLOC_LOCK = threading.Lock()
_malloc_users = 0


def mmap_threshold_bytes(max_block_mib: int) -> int:
    """The ``M_MMAP_THRESHOLD`` value for ``max_block_mib``: in bytes, clamped to what ``mallopt``'s C int holds."""
    if max_block_mib < 1:
        raise ValueError(f"max_block_mib must be >= 1, got {max_block_mib}")
    return min(max_block_mib << 20, _INT_MAX)


def _libc() -> ctypes.CDLL | None:
    """The C library when it is glibc (the only one with these ``mallopt`` settings), else ``None``."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    with contextlib.suppress(OSError):
        return ctypes.CDLL("libc.so.6")
    return None


@contextlib.contextmanager
def reuse_large_allocations(enabled: bool = True, max_block_mib: int = 1024) -> Iterator[None]:
    """On glibc, keep freed memory on the heap while the block runs, for blocks of up to ``max_block_mib`` MiB.

    By default glibc maps every block above 32 MiB (a network's large activations and gradients)
    freshly from the kernel and unmaps it when freed, and gives the top of the heap back once more
    than 64 MiB of it is free, so every batch page-faults and zero-fills gigabytes again. Inside
    this block, allocations up to ``max_block_mib`` come from the heap and the heap is never
    trimmed: after the first step a training loop runs without page faults. Trimming is off, not
    merely raised: with a trim threshold of twice the block size (this function's earlier setting)
    a ResNet-50 448 px fp32 step still gave ~600 MB back after every backward pass and faulted
    ~300,000 pages (1.2 GB, 1.7-2.6 s of system time) per step on a 2-core AVX2 AMD EPYC; without
    trimming it faults ~0 pages after the first steps and runs at 0.99x the bare-network ceiling
    (``python benchmarks/pretrain_step.py`` prints both; see the README's benchmarks).
    The heap then stays at its largest extent until the block ends (a training loop reaches that
    peak every step anyway); leaving the block gives the free memory back (``malloc_trim``).

    The settings are process-wide: the first of concurrent users sets them, the last puts back
    a 32 MiB mapping and a 64 MiB trim threshold (glibc's dynamic maxima) and returns the retained
    memory. Elsewhere (macOS, musl, Windows) this does nothing.

    Args:
        enabled: ``False`` makes this a no-op (e.g. on a GPU, where the host allocates little).
        max_block_mib: Largest block taken from the heap (clamped to 2 GiB - 1 B, ``mallopt``'s
            limit); larger ones are still mapped and unmapped each time. The training loops use
            the default (1 GiB: ResNet-50 activations at 448 px, batch 8, are ~100 MB each), the
            scene loop 64 (a batch of 512 px tiles).
    """
    global _malloc_users
    libc = _libc() if enabled else None
    if libc is None:
        yield
        return
    threshold = mmap_threshold_bytes(max_block_mib)
    with _MALLOC_LOCK:
        _malloc_users += 1
        if _malloc_users == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, threshold)
            libc.mallopt(_M_TRIM_THRESHOLD, _NO_TRIM)
    try:
        yield
    finally:
        with _MALLOC_LOCK:
            _malloc_users -= 1
            if _malloc_users == 0:
                libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_MMAP_THRESHOLD)
                libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
                libc.malloc_trim(0)
