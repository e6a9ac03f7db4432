"""Heap reuse (di3cl_hf.memory): process-wide glibc settings shared by nested and concurrent users."""

from __future__ import annotations

import resource
import threading

import numpy as np
import pytest
import torch

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


def _faults_of_one_step(blocks: int, block_mib: int) -> int:
    """Minor page faults of one 'step': allocate and touch ``blocks`` tensors of ``block_mib`` MiB, then free all."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    tensors = [torch.ones(block_mib << 18) for _ in range(blocks)]  # float32: block_mib MiB each
    del tensors
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(memory._libc() is None, reason="glibc only")
def test_steady_state_steps_do_not_page_fault() -> None:
    """The pattern of a training step: many blocks above glibc's 32 MiB mapping threshold live at once (together
    far above any trim threshold), then all are freed. Inside the block the second and later steps reuse the heap:
    no page faults. (With a trim threshold of 2 x the block size, the earlier setting, every step faulted again.)"""
    blocks, block_mib = 8, 40  # 320 MiB per step: 81,920 pages of 4 KiB
    pages = blocks * (block_mib << 20) // resource.getpagesize()
    with memory.reuse_large_allocations(max_block_mib=64):
        for _ in range(2):  # the first steps grow the heap
            _faults_of_one_step(blocks, block_mib)
        steady = [_faults_of_one_step(blocks, block_mib) for _ in range(3)]
    assert max(steady) < 0.02 * pages, (steady, pages)
    without = _faults_of_one_step(blocks, block_mib)  # glibc's own settings: mapped afresh every time
    assert without > 0.5 * pages, (without, pages)


def test_thresholds_fit_mallopt_int() -> None:
    assert memory.mmap_threshold_bytes(64) == 64 << 20
    assert memory.mmap_threshold_bytes(1 << 16) == 2**31 - 1  # 64 GiB would wrap to 0 in a C int
    with pytest.raises(ValueError, match="max_block_mib"):
        memory.mmap_threshold_bytes(0)
