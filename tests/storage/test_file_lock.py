"""The data-directory lock: one FileStorage per directory, in this process or any other."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from raftcache.storage import FileStorage, StorageLockedError

TRY_OPEN = textwrap.dedent(
    """
    import sys
    from raftcache.storage import FileStorage, StorageLockedError
    try:
        s = FileStorage(sys.argv[1], fsync=False)
    except StorageLockedError as exc:
        print("LOCKED", exc)
        sys.exit(3)
    print("OPENED", flush=True)
    if len(sys.argv) > 2:  # hold the lock until stdin closes
        sys.stdin.read()
    s.close()
    """
)


def run_child(d: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TRY_OPEN, str(d)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_second_instance_in_this_process_is_refused(tmp_path: Path) -> None:
    first = FileStorage(tmp_path, fsync=False)
    with pytest.raises(StorageLockedError, match=f"{tmp_path} is in use by another FileStorage"):
        FileStorage(tmp_path, fsync=False)
    first.close()
    second = FileStorage(tmp_path, fsync=False)  # close() released it
    second.close()


def test_second_process_is_refused_while_held(tmp_path: Path) -> None:
    with FileStorage(tmp_path, fsync=False):
        child = run_child(tmp_path)
        assert child.returncode == 3, child.stderr
        assert child.stdout.startswith("LOCKED")
        assert "in use by another FileStorage" in child.stdout
    child = run_child(tmp_path)
    assert child.returncode == 0, child.stderr
    assert "OPENED" in child.stdout


def test_lock_held_by_another_process_and_released_when_it_dies(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", TRY_OPEN, str(tmp_path), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "OPENED"
        with pytest.raises(StorageLockedError, match=rf"\(pid {holder.pid}\)"):
            FileStorage(tmp_path, fsync=False)
    finally:
        holder.kill()  # no clean close: the kernel drops the flock with the process
        holder.wait(timeout=60)
        if holder.stdin:
            holder.stdin.close()
        if holder.stdout:
            holder.stdout.close()
    with FileStorage(tmp_path, fsync=False) as s:
        assert s.load().entries == []
