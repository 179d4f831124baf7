"""Many Raft groups over one transport: a view per group, one router per store.

Rule: a store opens one transport (one connection per peer store) and owns its lifecycle. Each
group's ``RaftNode`` gets a ``GroupNetwork`` view of it, which stamps the group's id on every
request it sends and registers the group's handlers with the store's ``GroupRouter``. The router
is the only handler the transport knows: it hands each inbound request to the handlers of
``req.group``. A request for a group this store does not host (not yet created, or already
removed) fails with ``GroupNotHostedError``; the sender's Raft retries at its next heartbeat as
after any failed RPC, and nothing reaches a replica that is not there. A view's ``start`` and
``stop`` only attach and detach its group: stopping one replica never closes the connections
every other group shares, and its ``set_peer_address`` does nothing: peer addresses belong to
the store. See docs/sharding.md.
"""

from __future__ import annotations

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

__all__ = ["GroupNetwork", "GroupNotHostedError", "GroupRouter"]


class GroupNotHostedError(NetworkError):
    """A request for a Raft group the receiving store holds no replica of."""

    def __init__(self, node_id: str, group: str) -> None:
        super().__init__(
            f"node {node_id} hosts no replica of group {group[:80]!r}", kind="group_not_hosted"
        )
        self.group = group


class GroupRouter(RpcHandlers):
    """The handlers a store registers on its transport: dispatch by ``req.group``."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._groups: dict[str, RpcHandlers] = {}

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
        req.group = self.group  # the core builds a fresh request per send: stamping is safe
        return await self.base.send_request_vote(target, req)

    async def send_append_entries(
        self, target: str, req: AppendEntriesRequest
    ) -> AppendEntriesResponse:
        req.group = self.group
        return await self.base.send_append_entries(target, req)

    async def send_install_snapshot(
        self, target: str, req: InstallSnapshotRequest
    ) -> InstallSnapshotResponse:
        req.group = self.group
        return await self.base.send_install_snapshot(target, req)

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
