"""Client sessions for exactly-once writes: client ids and sequence numbers.

Rule: a write takes a *lane* — a (client id, sequence counter) pair — for its whole life, retries
included, and every retry of that write resends the SAME sequence number. A lane carries at most
one write at a time, so the server sees each client id's sequence numbers strictly in order, one
outstanding at a time (the discipline of the Raft thesis §6.3). That keeps the guarantee whatever
the server's session table remembers: even a table that keeps only the latest (seq, result) per
client answers a retry correctly and never mistakes a concurrent write for a retry.

Concurrent writes through one client therefore use several lanes: lane 0 is the client id itself,
lane k > 0 is ``"<client id>.<k>"``. Lanes are reused, lowest first, so a client that never issues
concurrent writes uses one server-side session.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftcache.vocabulary import CLIENT_LANE_SUFFIX_CHARS, MAX_CLIENT_ID_CHARS

CLIENT_ID_HEADER = "X-Raftcache-Client-Id"
SEQ_HEADER = "X-Raftcache-Seq"
#: The longest base id a client takes: the node's limit less room for the ``.<lane>`` suffix,
#: so no lane's id is ever one the server refuses.
MAX_BASE_CLIENT_ID_CHARS = MAX_CLIENT_ID_CHARS - CLIENT_LANE_SUFFIX_CHARS


@dataclass(slots=True)
class Lane:
    """One server-side session: an id and the last sequence number it used (0 = none yet)."""

    client_id: str
    last_seq: int = 0

    def next_seq(self) -> int:
        """Advance to the next sequence number: call once per *new* write, never per retry."""
        self.last_seq += 1
        return self.last_seq


@dataclass(frozen=True, slots=True)
class WriteTicket:
    """The identity of one write, fixed before its first attempt and reused by every retry."""

    client_id: str
    seq: int

    def headers(self) -> dict[str, str]:
        return {CLIENT_ID_HEADER: self.client_id, SEQ_HEADER: str(self.seq)}


class SessionPool:
    """Hands out lanes so that no two in-flight writes share one.

    Not thread-safe: it lives on the client's event loop, where acquire/release never interleave.
    """

    def __init__(self, client_id: str, *, first_seq: int = 1) -> None:
        """Create the pool.

        Args:
            client_id: The base client id (lane 0). Must be unique to this client's lifetime:
                reusing an id with a fresh counter would make new writes look like retries.
            first_seq: The first sequence number lane 0 uses (to resume a saved session).
        """
        if not client_id or not client_id.isascii() or not client_id.isprintable():
            raise ValueError(f"client id must be printable ASCII: {client_id!r}")
        if any(c.isspace() for c in client_id) or len(client_id) > MAX_BASE_CLIENT_ID_CHARS:
            raise ValueError(
                "client id must have no whitespace and at most "
                f"{MAX_BASE_CLIENT_ID_CHARS} characters"
            )
        if first_seq < 1:
            raise ValueError(f"first_seq must be >= 1, got {first_seq}")
        self.client_id = client_id
        self._lanes: list[Lane] = [Lane(client_id, first_seq - 1)]
        self._busy: set[int] = set()

    @property
    def lanes_created(self) -> int:
        return len(self._lanes)

    def acquire(self) -> tuple[int, WriteTicket]:
        """Take the lowest free lane and the next sequence number on it.

        Returns:
            The lane number (to pass to ``release``) and the write's ticket.
        """
        number = next((n for n in range(len(self._lanes)) if n not in self._busy), None)
        if number is None:
            number = len(self._lanes)
            self._lanes.append(Lane(f"{self.client_id}.{number}"))
        lane = self._lanes[number]
        self._busy.add(number)
        return number, WriteTicket(lane.client_id, lane.next_seq())

    def release(self, number: int) -> None:
        """Return a lane once its write has finished (successfully or not)."""
        self._busy.discard(number)
