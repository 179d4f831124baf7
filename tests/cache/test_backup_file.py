"""The backup file format: round trip, and every damaged or foreign file refused by name."""

from __future__ import annotations

import io

import pytest

from raftcache.cache.backup import (
    BackupFormatError,
    BackupInfo,
    encode_backup,
    verify_backup,
    verify_backup_stream,
)
from raftcache.cache.commands import encode_set
from raftcache.cache.snapshot import decode_snapshot
from tests.cache.helpers import Log


def snapshot() -> bytes:
    log = Log()
    for i in range(30):
        log.apply(encode_set(f"k{i}", b"v" * i, now=0.0))
    return log.machine.snapshot()


def backup(chunk_size: int = 100) -> tuple[BackupInfo, bytes, bytes]:
    snap = snapshot()
    info = BackupInfo(31, 2, "n1", 1234.5, len(snap))
    return info, snap, b"".join(encode_backup(info, snap, chunk_size))


def verify_both(data: bytes) -> BackupInfo:
    """Both verifiers must agree."""
    info, body = verify_backup(data)
    assert verify_backup_stream(io.BytesIO(data)) == info
    decode_snapshot(bytes(body))
    return info


def test_round_trip_in_memory_and_streamed() -> None:
    info, snap, data = backup()
    assert verify_both(data) == info
    assert bytes(verify_backup(data)[1]) == snap
    # Small reads on the stream side too.
    small = backup(chunk_size=7)[2]
    assert small == data


def refusal(data: bytes) -> str:
    with pytest.raises(BackupFormatError) as mem:
        verify_backup(data)
    with pytest.raises(BackupFormatError) as stream:
        verify_backup_stream(io.BytesIO(data))
    # Both name a problem; the stream verifier may notice a truncation by another name.
    assert str(stream.value)
    return str(mem.value)


@pytest.mark.parametrize("cut", [1, 10, 50, 200, 300])
def test_truncated_files_are_refused(cut: int) -> None:
    data = backup()[2]
    assert "truncated" in refusal(data[:-cut])


def test_an_empty_file_is_not_a_backup() -> None:
    assert "not a raftcache backup" in refusal(b"")


@pytest.mark.parametrize("position", [0.3, 0.6, 0.95])
def test_a_flipped_bit_is_a_checksum_mismatch(position: float) -> None:
    data = bytearray(backup()[2])
    at = int(len(data) * position)
    data[at] ^= 0x10
    message = refusal(bytes(data))
    assert "checksum" in message or "header" in message


def test_a_foreign_file_is_refused() -> None:
    assert "not a raftcache backup" in refusal(b"PK\x03\x04 a zip file, say" * 100)
    assert "not a raftcache backup" in refusal(snapshot())  # a bare snapshot is no backup


def test_a_newer_format_is_refused_by_name() -> None:
    data = backup()[2].replace(b"RAFTCACHE-BACKUP/1", b"RAFTCACHE-BACKUP/2", 1)
    assert "format '2' is not supported" in refusal(data)


def test_trailing_bytes_are_refused() -> None:
    data = backup()[2]
    assert "after the backup" in refusal(data + b"x")


def test_a_header_naming_another_snapshot_format_is_refused() -> None:
    data = backup()[2].replace(b'"snapshot_format":1', b'"snapshot_format":7', 1)
    assert "snapshot format 7" in refusal(data)
