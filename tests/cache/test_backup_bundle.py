"""The backup bundle format: round trip, and every damaged, foreign, too new or incomplete
bundle refused by name (random truncations and bit flips with Hypothesis)."""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftcache.cache.backup import BackupInfo, encode_backup, verify_backup
from raftcache.cache.bundle import (
    BUNDLE_MAGIC,
    BundleFormatError,
    BundleInfo,
    BundlePart,
    encode_bundle,
    is_bundle,
    verify_bundle,
    write_bundle,
)
from raftcache.cache.commands import encode_set
from raftcache.cache.snapshot import decode_snapshot
from tests.cache.helpers import Log

GROUPS = 3


def group_backup(group: int, keys: int) -> bytes:
    log = Log()
    for i in range(keys):
        log.apply(encode_set(f"g{group}:k{i}", b"v" * i, now=0.0))
    snap = log.machine.snapshot()
    info = BackupInfo(10 + group, 2 + group, f"s{group + 1}", 1234.5, len(snap))
    return b"".join(encode_backup(info, snap))


BACKUPS = [group_backup(g, 5 + 3 * g) for g in range(GROUPS)]
BUNDLE = encode_bundle(2000.25, BACKUPS)


def test_round_trip_keeps_every_part_whole() -> None:
    assert is_bundle(BUNDLE)
    info, parts = verify_bundle(BUNDLE)
    assert info.groups == GROUPS
    assert info.created_at == 2000.25
    assert [p.part.group for p in parts] == ["g0", "g1", "g2"]
    for number, part in enumerate(parts):
        assert part.data == BACKUPS[number]  # a part is the group's backup file, unchanged
        assert (part.backup.index, part.backup.term) == (10 + number, 2 + number)
        assert part.part.sha256 == hashlib.sha256(BACKUPS[number]).hexdigest()
        keys = decode_snapshot(bytes(verify_backup(part.data)[1])).records
        assert len(keys) == 5 + 3 * number


def test_the_streamed_writer_writes_the_same_file() -> None:
    info, _ = verify_bundle(BUNDLE)
    out = io.BytesIO()
    digest = write_bundle(out, info, [io.BytesIO(b) for b in BACKUPS])
    assert out.getvalue() == BUNDLE
    assert digest == hashlib.sha256(BUNDLE).hexdigest()


def test_a_plain_backup_is_no_bundle() -> None:
    assert not is_bundle(BACKUPS[0])
    with pytest.raises(BundleFormatError, match="not a raftcache bundle"):
        verify_bundle(BACKUPS[0])
    with pytest.raises(BundleFormatError, match="not a raftcache bundle"):
        verify_bundle(b"")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(BUNDLE) - 1))
def test_any_truncation_is_refused(length: int) -> None:
    with pytest.raises(BundleFormatError) as refused:
        verify_bundle(BUNDLE[:length])
    message = str(refused.value)
    assert any(w in message for w in ("truncated", "not a raftcache bundle", "manifest")), message


@settings(max_examples=120, deadline=None)
@given(st.integers(min_value=0, max_value=len(BUNDLE) * 8 - 1))
def test_any_flipped_bit_is_refused(bit: int) -> None:
    data = bytearray(BUNDLE)
    data[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BundleFormatError):
        verify_bundle(bytes(data))


def _manifest_end() -> int:
    return BUNDLE.index(b"\n", len(BUNDLE_MAGIC)) + 1


@pytest.mark.parametrize("group", range(GROUPS))
def test_a_corrupt_part_is_named(group: int) -> None:
    start = _manifest_end() + sum(len(b) for b in BACKUPS[:group])
    data = bytearray(BUNDLE)
    data[start + len(BACKUPS[group]) // 2] ^= 0x04
    with pytest.raises(BundleFormatError, match=f"group g{group}'s backup checksum mismatch"):
        verify_bundle(bytes(data))


def test_a_newer_format_is_refused_by_name() -> None:
    data = BUNDLE.replace(b"RAFTCACHE-BUNDLE/1", b"RAFTCACHE-BUNDLE/2", 1)
    with pytest.raises(BundleFormatError, match="bundle format '2' is not supported"):
        verify_bundle(data)


def _with_manifest(edit: dict[str, object]) -> bytes:
    """BUNDLE with its manifest changed (and its trailer recomputed: only the edit is wrong)."""
    info, _ = verify_bundle(BUNDLE)
    manifest = {**info.to_json(), **edit}
    head = BUNDLE_MAGIC + json.dumps(manifest).encode() + b"\n"
    body = head + b"".join(BACKUPS)
    return body + b"\nsha256:" + hashlib.sha256(body).hexdigest().encode() + b"\n"


def test_a_missing_group_is_refused_by_name() -> None:
    info, _ = verify_bundle(BUNDLE)
    parts = [p.to_json() for p in info.parts]
    data = _with_manifest({"parts": [parts[0], parts[2]]})
    with pytest.raises(BundleFormatError, match="bundle of 3 groups is missing group g1"):
        verify_bundle(data)
    shuffled = _with_manifest({"parts": [parts[1], parts[0], parts[2]]})
    with pytest.raises(BundleFormatError, match="groups g0 … g2 once each, in order"):
        verify_bundle(shuffled)


def test_a_manifest_disagreeing_with_a_part_is_refused() -> None:
    info, _ = verify_bundle(BUNDLE)
    parts = [p.to_json() for p in info.parts]
    parts[1] = {**parts[1], "index": 99}
    with pytest.raises(BundleFormatError, match="group g1's backup is of index 11"):
        verify_bundle(_with_manifest({"parts": parts}))
    with pytest.raises(BundleFormatError, match=r"'groups' must be in 1\.\.16384"):
        verify_bundle(_with_manifest({"groups": 0}))


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(BundleFormatError, match="after the bundle's end"):
        verify_bundle(BUNDLE + b"\n")


def test_parts_must_be_every_group_in_order() -> None:
    part = BundlePart("g1", 1, 1, 10, "0" * 64)
    with pytest.raises(ValueError, match="part 0 is 'g1'"):
        write_bundle(io.BytesIO(), BundleInfo(0.0, (part,)), [io.BytesIO(b"")])
