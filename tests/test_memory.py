"""Heap reuse (di3cl_hf.memory): process-wide glibc settings shared by nested and concurrent users."""

from __future__ import annotations

import threading

import numpy as np

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
