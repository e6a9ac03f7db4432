"""Heap reuse (di3cl_hf.memory): process-wide glibc settings shared by nested and concurrent users."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading

import numpy as np
import pytest

from di3cl_hf import memory


def test_nested_and_concurrent_users_share_one_setting() -> None:
    seen = []

    def work() -> None:
        with memory.reuse_large_allocations(max_block_mib=64):
            seen.append(memory._malloc_users)
            np.ones(40 << 20, dtype=np.uint8).sum()  # a block above glibc's default mapping threshold

    with memory.reuse_large_allocations():
        threads = [threading.Thread(target=work) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        inner = memory._malloc_users
    assert memory._malloc_users == 0  # the last user put glibc's settings back
    if memory._libc() is not None:  # glibc: every user was counted while the outer one held the setting
        assert inner == 1 and len(seen) == 3 and all(2 <= users <= 4 for users in seen)


def test_disabled_is_a_no_op() -> None:
    with memory.reuse_large_allocations(enabled=False):
        assert memory._malloc_users == 0


# One training-like "step" in a fresh interpreter (an empty heap, nothing of pytest's on it): ``blocks`` blocks of
# ``block_mib`` MiB, each above glibc's 32 MiB mapping threshold, allocated and touched with libc itself, then all
# freed. Minor page faults are counted per step, inside ``reuse_large_allocations`` and then with glibc's own settings.
_STEPS_SCRIPT = """
import ctypes, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("memory", sys.argv[1])
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
blocks, size = 8, 40 << 20

def step():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    pointers = [libc.malloc(size) for _ in range(blocks)]
    for pointer in pointers:
        ctypes.memset(pointer, 1, size)
    for pointer in pointers:
        libc.free(pointer)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

with memory.reuse_large_allocations(max_block_mib=64):
    inside = [step() for _ in range(5)]
print(json.dumps({"inside": inside, "without": [step() for _ in range(2)]}))
"""


@pytest.mark.skipif(memory._libc() is None, reason="glibc only")
def test_steady_state_steps_do_not_page_fault() -> None:
    """The pattern of a training step: many large blocks live at once (together far above any trim threshold), then
    all are freed. Inside the block, the steps after the first reuse the heap: no page faults. With a trim threshold
    of 2 x the block size (this module's earlier setting) every step faulted all its pages again (81,888 of 81,920),
    as it does with glibc's own settings. Run in a fresh interpreter: in a long-lived process (pytest, after other
    tests) a small allocation left on top of the heap can pin it and hide trimming, which made this test depend on
    the tests that ran before it."""
    pages = 8 * (40 << 20) // resource.getpagesize()  # 81,920 pages of 4 KiB per step
    result = subprocess.run(
        [sys.executable, "-c", _STEPS_SCRIPT, memory.__file__], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    faults = json.loads(result.stdout)
    assert faults["inside"][0] > 0.5 * pages, faults  # the first step grows the heap: the count is real
    assert max(faults["inside"][1:]) < 0.02 * pages, (faults, pages)
    assert min(faults["without"]) > 0.5 * pages, (faults, pages)  # glibc's settings: mapped afresh every step


def test_thresholds_fit_mallopt_int() -> None:
    assert memory.mmap_threshold_bytes(64) == 64 << 20
    assert memory.mmap_threshold_bytes(1 << 16) == 2**31 - 1  # 64 GiB would wrap to 0 in a C int
    with pytest.raises(ValueError, match="max_block_mib"):
        memory.mmap_threshold_bytes(0)
