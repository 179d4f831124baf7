"""Many Raft groups over one transport: a view per group, one router per store.

Rule: a store opens one transport (one connection per peer store) and owns its lifecycle. Each
group's ``RaftNode`` gets a ``GroupNetwork`` view of it, which stamps the group's id and the
destination replica's id on every request it sends, sends it to the store holding that replica
(``store_of``: replica ids are store ids, or ``<store>.<n>`` for a later incarnation), and
registers the group's handlers with the store's ``GroupRouter``. The router
is the only handler the transport knows: it hands each inbound request to the handlers of
``req.group``. A request for a group this store does not host (not yet created, or already
removed) fails with ``GroupNotHostedError``; the sender's Raft retries at its next heartbeat as
after any failed RPC, and nothing reaches a replica that is not there. A view's ``start`` and
``stop`` only attach and detach its group: stopping one replica never closes the connections
every other group shares, and its ``set_peer_address`` does nothing: peer addresses belong to
the store. See docs/sharding.md.

The router answers one request itself: an AppendEntries to ``LIVENESS_GROUP``, a peer store's
ping (``raftcache.store.liveness``), with this process's random ``incarnation`` as its term,
so that the pinger sees a restart even when it was quicker than a ping, and the store's
``health`` epoch as its ``match_index`` (it changes when a replica here stalls).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Final

from raftcache.network.errors import NetworkError
from raftcache.network.interface import NetworkInterface, RpcHandlers
from raftcache.protocol.messages import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotRequest,
    InstallSnapshotResponse,
    RaftRequest,
    RequestVoteRequest,
    RequestVoteResponse,
)

__all__ = [
    "LIVENESS_GROUP",
    "GroupNetwork",
    "GroupNotHostedError",
    "GroupRouter",
    "replica_id",
    "store_of",
]


class GroupNotHostedError(NetworkError):
    """A request for a Raft group the receiving store holds no replica of."""

    def __init__(self, node_id: str, group: str) -> None:
        super().__init__(
            f"node {node_id} hosts no replica of group {group[:80]!r}", kind="group_not_hosted"
        )
        self.group = group


#: Separates a store id from a replica's incarnation number in a replica id.
INCARNATION_SEPARATOR: Final = "."
#: The group of the stores' liveness pings, answered by the router (never a Raft group's
#: id: those are ``g<n>`` and ``meta``).
LIVENESS_GROUP: Final = "_liveness"


def store_of(replica_id: str) -> str:
    """The store holding ``replica_id``: a replica id is its store's id (the replica a store
    was bootstrapped with) or ``<store id>.<n>`` (its n-th later incarnation); the ids of
    stores hosting many groups hold no ``.`` (``raftcache serve`` checks)."""
    return replica_id.partition(INCARNATION_SEPARATOR)[0]


def shared_urls(urls: Mapping[str, str] | None) -> Mapping[str, str]:
    """A store's address book as the parts that read it keep it: the very dict when given one
    (a store learns the addresses of stores that join later, and every reader must see them),
    else a copy of what was given."""
    if isinstance(urls, dict):
        return urls
    return dict(urls or {})


def replica_id(store_id: str, incarnation: int) -> str:
    """The id of ``store_id``'s replica of incarnation ``incarnation`` (0: the store's id)."""
    if INCARNATION_SEPARATOR in store_id:
        raise ValueError(f"a store id holds no {INCARNATION_SEPARATOR!r}: {store_id!r}")
    if incarnation < 0:
        raise ValueError(f"an incarnation is >= 0, not {incarnation}")
    return store_id if incarnation == 0 else f"{store_id}{INCARNATION_SEPARATOR}{incarnation}"


class GroupRouter(RpcHandlers):
    """The handlers a store registers on its transport: dispatch by ``req.group``."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._groups: dict[str, RpcHandlers] = {}
        #: This process's answer to liveness pings: another value after a restart.
        self.incarnation = random.randrange(1, 2**31)
        #: The store's health epoch, answered to pings (the store sets it: ``StoreLiveness``).
        self.health: Callable[[], int] = lambda: 0

    @property
    def groups(self) -> list[str]:
        """The groups with handlers attached, sorted."""
        return sorted(self._groups)

    def attach(self, group: str, handlers: RpcHandlers) -> None:
        """Route ``group``'s requests to ``handlers`` (replacing any earlier ones)."""
        self._groups[group] = handlers

    def detach(self, group: str, handlers: RpcHandlers | None = None) -> None:
        """Stop routing ``group`` (only if still attached to ``handlers``, when given)."""
        if handlers is None or self._groups.get(group) is handlers:
            self._groups.pop(group, None)

    def _target(self, req: RaftRequest) -> RpcHandlers:
        handlers = self._groups.get(req.group)
        if handlers is None:
            raise GroupNotHostedError(self.node_id, req.group)
        return handlers

    async def handle_request_vote(self, req: RequestVoteRequest) -> RequestVoteResponse:
        return await self._target(req).handle_request_vote(req)

    async def handle_append_entries(self, req: AppendEntriesRequest) -> AppendEntriesResponse:
        if req.group == LIVENESS_GROUP:
            return AppendEntriesResponse(self.incarnation, True, match_index=self.health())
        return await self._target(req).handle_append_entries(req)

    async def handle_install_snapshot(self, req: InstallSnapshotRequest) -> InstallSnapshotResponse:
        return await self._target(req).handle_install_snapshot(req)


class GroupNetwork(NetworkInterface):
    """One group's view of a store's shared transport (see the module docstring).

    Args:
        base: The store's transport; its handlers must be ``router``.
        router: The store's router.
        group: The id this view stamps on requests and attaches its handlers under.
    """

    def __init__(self, base: NetworkInterface, router: GroupRouter, group: str) -> None:
        self.base = base
        self.router = router
        self.group = group
        self.node_id = base.node_id
        self._handlers: RpcHandlers | None = None

    async def send_request_vote(self, target: str, req: RequestVoteRequest) -> RequestVoteResponse:
        # The core builds a fresh request per send: stamping it is safe.
        req.group, req.to = self.group, target
        return await self.base.send_request_vote(store_of(target), req)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        req.group, req.to = self.group, target
        return await self.base.send_append_entries(store_of(target), req)

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        req.group, req.to = self.group, target
        return await self.base.send_install_snapshot(store_of(target), req)

    def register_handlers(self, handlers: RpcHandlers) -> None:
        self._handlers = handlers
        self.router.attach(self.group, handlers)

    async def start(self) -> None:
        if self._handlers is not None:
            self.router.attach(self.group, self._handlers)

    async def stop(self) -> None:
        if self._handlers is not None:
            self.router.detach(self.group, self._handlers)

    def set_peer_address(self, node_id: str, address: str | None) -> None:
        """Ignored: a group cannot change where its store reaches a peer.

        Peers are stores, one address each, shared by every group they host; a store takes
        its peers' addresses from the cluster map (docs/sharding.md) and sets them on the
        shared transport itself. A group's Raft node pushes the addresses of its own
        configuration, which may be stale (not rewritten when a store moved): forwarding them
        would point every group's traffic to that store at the old address.
        """
