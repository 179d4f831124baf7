"""``raftcache.sysmem``: freed heap memory goes back to the OS on glibc, nothing elsewhere."""

from __future__ import annotations

import platform

import pytest

from raftcache.sysmem import release_free_memory

GLIBC = platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's; other libcs have no equivalent")
def test_freed_heap_blocks_are_returned_on_glibc() -> None:
    # 64 KiB blocks stay below glibc's mmap threshold: they live in the heap, where freeing
    # them leaves RSS as it was until malloc_trim hands the pages back (and says so).
    blocks = [bytes(bytearray(64 * 1024)) for _ in range(800)]
    keep = [object() for _ in range(100)]  # small live objects among them, as in a real heap
    del blocks
    assert release_free_memory() is True
    assert keep
