"""PUBLISH in the state machine (command version 6): a message is handed to the listeners in log
order and stored nowhere; a cluster below format 6 refuses it alike everywhere; a node capped
below 6 fails stop rather than skip it; bad fields are refused before anything is proposed."""

from __future__ import annotations

import pytest

from raftcache.cache.commands import decode, encode_format, encode_publish, encode_set
from raftcache.cache.commands_pubsub import MAX_CHANNEL_BYTES, PUBSUB_VERSION, PublishCommand
from raftcache.cache.errors import InvalidCommandError
from raftcache.cache.formats import UnsupportedCommandVersionError
from raftcache.cache.machine import CacheStateMachine
from raftcache.cache.results import CommandError, ErrorCode
from tests.cache.helpers import Log


def _log() -> Log:
    log = Log()
    assert log.apply(encode_format(PUBSUB_VERSION, now=0.0)) is not None
    return log


def test_a_publish_reaches_every_listener_in_log_order_and_changes_nothing() -> None:
    log = _log()
    log.apply(encode_set("k", b"v", now=1.0))
    heard: list[tuple[int, bytes, bytes]] = []
    also: list[bytes] = []
    log.machine.on_publish(lambda i, c, m: heard.append((i, c, m)))
    remove = log.machine.on_publish(lambda i, c, m: also.append(m))
    digest, stats = log.machine.digest, log.machine.stats()
    assert log.apply(encode_publish(b"news", b"one", now=2.0)) == log.index
    first = log.index
    remove()
    assert log.apply(encode_publish(b"\xffbinary", b"", now=3.0)) == log.index
    assert heard == [(first, b"news", b"one"), (log.index, b"\xffbinary", b"")]
    assert also == [b"one"]  # removed before the second
    assert (log.machine.digest, log.machine.stats()) == (digest, stats)
    snapshot = CacheStateMachine()
    snapshot.restore(log.machine.snapshot())
    assert snapshot.get("k", 4.0) is not None


def test_a_listener_that_raises_does_not_change_the_outcome() -> None:
    log = _log()

    def broken(index: int, channel: bytes, message: bytes) -> None:
        raise RuntimeError("a bug in a listener")

    log.machine.on_publish(broken)
    assert log.apply(encode_publish(b"c", b"m", now=1.0)) == log.index


def test_before_format_6_a_publish_is_refused_and_a_capped_node_stops() -> None:
    log = Log()
    result = log.apply(encode_publish(b"c", b"m", now=1.0))
    assert isinstance(result, CommandError)
    assert result.code is ErrorCode.COMMAND_VERSION_NOT_ENABLED
    capped = Log(CacheStateMachine(max_command_version=3))
    with pytest.raises(UnsupportedCommandVersionError, match="upgrade this node"):
        capped.apply(encode_publish(b"c", b"m", now=1.0))


def test_the_wire_form_round_trips_and_bad_fields_are_refused() -> None:
    assert decode(encode_publish(b"ch", b"msg", now=5.0)) == PublishCommand(5.0, b"ch", b"msg")
    with pytest.raises(InvalidCommandError, match="channel"):
        encode_publish(b"x" * (MAX_CHANNEL_BYTES + 1), b"m", now=1.0)
    with pytest.raises(InvalidCommandError, match="message"):
        PublishCommand(1.0, b"c", "text")  # type: ignore[arg-type]
