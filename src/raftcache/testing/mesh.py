"""A mesh of fault proxies: one per ordered pair of nodes, with partition helpers.

Rule: node A reaches node B only through the proxy for the ordered pair (A, B), which carries
the connections A opens to B — A's requests and B's replies on them. B's own requests to A go
through (B, A), so cutting one direction only makes an asymmetric partition. A node reaches
itself directly. Every helper below sets the state of the *whole* mesh, like a Jepsen grudge:
links it does not cut are healed.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable, Mapping

from raftcache.testing.fault_proxy import FaultProxy, ProxyMode

__all__ = ["ProxyMesh"]


class ProxyMesh:
    """One ``FaultProxy`` per ordered pair of nodes, with partition helpers.

    Every helper sets the state of the *whole* mesh (like a Jepsen grudge): links it does not cut
    are healed. A node's own address is never proxied.

    Args:
        node_ports: Each node id and the real port its server listens on.
        host: Where nodes and proxies listen.
        base_port: 0 lets the OS pick every proxy port; otherwise proxies take consecutive ports
            from it, pairs in sorted order.
        rng: Seeds each proxy's jitter (one seed per pair, drawn in sorted order).
    """

    def __init__(
        self,
        node_ports: Mapping[str, int],
        *,
        host: str = "127.0.0.1",
        base_port: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.host = host
        self.nodes = sorted(node_ports)
        self._node_ports = dict(node_ports)
        rng = rng if rng is not None else random.Random(0)
        pairs = [(a, b) for a in self.nodes for b in self.nodes if a != b]
        self._proxies = {
            (a, b): FaultProxy(
                base_port + k if base_port else 0,
                host,
                self._node_ports[b],
                listen_host=host,
                rng=random.Random(rng.getrandbits(64)),
            )
            for k, (a, b) in enumerate(pairs)
        }

    async def start(self) -> None:
        """Start every proxy (stopping those already started if one fails)."""
        try:
            for proxy in self._proxies.values():
                await proxy.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop every proxy."""
        await asyncio.gather(*(p.stop() for p in self._proxies.values()))

    async def __aenter__(self) -> ProxyMesh:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def proxy(self, src: str, dst: str) -> FaultProxy:
        """The proxy carrying connections from ``src`` to ``dst``."""
        return self._proxies[(src, dst)]

    def url(self, src: str, dst: str, scheme: str = "http") -> str:
        """The URL ``src`` must use to reach ``dst`` (``dst``'s real one when ``src == dst``)."""
        port = self._node_ports[dst] if src == dst else self.proxy(src, dst).port
        return f"{scheme}://{self.host}:{port}"

    def addresses(self, src: str, scheme: str = "http") -> dict[str, str]:
        """The ``node_addresses`` map to configure node ``src`` with."""
        return {dst: self.url(src, dst, scheme) for dst in self.nodes}

    def links(self) -> dict[tuple[str, str], ProxyMode]:
        """The current mode of every directed link."""
        return {pair: proxy.mode for pair, proxy in self._proxies.items()}

    def set_link(
        self, src: str, dst: str, mode: ProxyMode, *, delay_s: float = 0.0, jitter_s: float = 0.0
    ) -> None:
        """Set one directed link (the building block for asymmetric faults)."""
        self.proxy(src, dst).set_mode(mode, delay_s=delay_s, jitter_s=jitter_s)

    def heal(self) -> None:
        """Every link passes."""
        self._apply(lambda a, b: True, ProxyMode.PASS)

    def partition(
        self, groups: Iterable[Iterable[str]], *, mode: ProxyMode = ProxyMode.DROP
    ) -> None:
        """Only nodes in the same group talk; a node in no group is alone."""
        group_of: dict[str, int] = {}
        for g, members in enumerate(groups):
            for node in members:
                self._known(node)
                if node in group_of:
                    raise ValueError(f"node {node} is in two groups")
                group_of[node] = g
        # An unlisted node's side is its own name, which equals no group number.
        side: dict[str, int | str] = {n: group_of.get(n, n) for n in self.nodes}
        self._apply(lambda a, b: side[a] == side[b], mode)

    def isolate(self, node: str, *, mode: ProxyMode = ProxyMode.DROP) -> None:
        """Cut ``node`` off from every other node, both directions."""
        self._known(node)
        self.partition([[node], [n for n in self.nodes if n != node]], mode=mode)

    def bridge(
        self,
        left: Iterable[str],
        middle: str,
        right: Iterable[str],
        *,
        mode: ProxyMode = ProxyMode.DROP,
    ) -> None:
        """``left`` and ``right`` cannot talk to each other; ``middle`` talks to everyone."""
        lefts, rights = list(left), list(right)
        everyone = [*lefts, middle, *rights]
        if sorted(everyone) != self.nodes:
            raise ValueError("bridge needs every node exactly once in left, middle or right")
        self._apply(
            lambda a, b: middle in (a, b) or ((a in lefts) == (b in lefts)),
            mode,
        )

    def _known(self, node: str) -> None:
        if node not in self._node_ports:
            raise ValueError(f"unknown node {node}")

    def _apply(self, allowed: Callable[[str, str], bool], cut_mode: ProxyMode) -> None:
        for (a, b), proxy in self._proxies.items():
            proxy.set_mode(ProxyMode.PASS if allowed(a, b) else cut_mode)
