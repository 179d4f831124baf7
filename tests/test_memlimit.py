"""The cgroup memory limit and the ``--max-bytes`` default derived from it, read from fake
cgroup trees (the seam: the root and ``/proc/self/cgroup`` paths)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftcache.process.config import resolve_options
from raftcache.process.memlimit import (
    DEFAULT_SHARE,
    MemoryLimit,
    cgroup_memory_limit,
    default_max_bytes,
)
from raftcache.process.serve import CGROUP_ROOT_TEST_SEAM, with_memory_default

GIB = 1 << 30
MIB = 1 << 20
V1_UNLIMITED = "9223372036854771712"


def tree(root: Path, files: dict[str, str], self_cgroup: str) -> Path:
    """Write ``files`` under ``root`` and a ``/proc/self/cgroup`` stand-in; return the latter."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    proc = root.parent / "self-cgroup"
    proc.write_text(self_cgroup)
    return proc


def test_cgroup_v2_memory_max_in_a_container(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tree(root, {"memory.max": str(GIB)}, "0::/\n")
    assert cgroup_memory_limit(root, proc) == MemoryLimit(GIB, root / "memory.max")


def test_cgroup_v2_max_means_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tree(root, {"memory.max": "max"}, "0::/\n")
    assert cgroup_memory_limit(root, proc) is None


def test_cgroup_v2_the_tightest_of_the_process_group_and_its_ancestors(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    files = {
        "memory.max": "max",
        "kubepods/memory.max": str(4 * GIB),
        "kubepods/pod1/memory.max": str(GIB),
        "kubepods/pod1/ctr/memory.max": "max",
        "other/memory.max": str(MIB),  # not an ancestor: ignored
    }
    proc = tree(root, files, "0::/kubepods/pod1/ctr\n")
    limit = cgroup_memory_limit(root, proc)
    assert limit == MemoryLimit(GIB, root / "kubepods/pod1/memory.max")


def test_cgroup_v1_memory_limit_in_bytes(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    files = {
        "memory/memory.limit_in_bytes": V1_UNLIMITED,
        "memory/docker/abc/memory.limit_in_bytes": str(512 * MIB),
    }
    proc = tree(root, files, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    limit = cgroup_memory_limit(root, proc)
    assert limit == MemoryLimit(512 * MIB, root / "memory/docker/abc/memory.limit_in_bytes")


def test_cgroup_v1_unlimited_and_no_cgroup_at_all_mean_no_limit(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    proc = tree(root, {"memory/memory.limit_in_bytes": V1_UNLIMITED}, "4:memory:/\n")
    assert cgroup_memory_limit(root, proc) is None
    assert cgroup_memory_limit(tmp_path / "absent", tmp_path / "absent-proc") is None


@pytest.mark.parametrize("text", ["", "garbage", "-1", "0", "12.5"])
def test_a_malformed_limit_counts_as_none(tmp_path: Path, text: str) -> None:
    root = tmp_path / "cg"
    proc = tree(root, {"memory.max": text}, "0::/\n")
    assert cgroup_memory_limit(root, proc) is None


def test_the_default_is_a_quarter_of_the_limit_in_whole_mib() -> None:
    assert DEFAULT_SHARE == 0.25
    assert default_max_bytes(GIB) == 256 * MIB
    assert default_max_bytes(GIB + 3 * MIB + 17) == 256 * MIB  # rounded down to a MiB
    assert default_max_bytes(MIB) == MIB  # never below 1 MiB


def test_serve_options_take_the_default_only_when_max_bytes_is_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "cg"
    tree(root, {"memory.max": str(2 * GIB)}, "0::/\n")
    monkeypatch.setenv(CGROUP_ROOT_TEST_SEAM, str(root))
    base = {"id": "n1", "peers": "n1=http://127.0.0.1:8001", "listen": "127.0.0.1:8001"}
    base["data_dir"] = str(tmp_path / "n1")
    unset = resolve_options(base, {})
    with caplog.at_level("INFO", logger="raftcache.server"):
        derived = with_memory_default(unset)
    assert derived.max_bytes == 512 * MIB
    assert derived.sources["max_bytes"] == "cgroup"
    assert "max-bytes defaulted to 536870912 (512 MiB)" in caplog.text
    given = resolve_options({**base, "max_bytes": "1000"}, {})
    assert with_memory_default(given) is given
    monkeypatch.setenv(CGROUP_ROOT_TEST_SEAM, str(tmp_path / "no-cgroup-here"))
    assert with_memory_default(unset) is unset  # no limit: unchanged
