"""The shared medium of in-memory networks: who is registered, who is failed, who is cut off.

Rule: an ``InMemoryHub`` holds only topology and fault state; it moves no messages and owns no
randomness (each ``InMemoryNetwork`` owns its ``random.Random``), so it is cheap to reset
between tests and its behaviour is a pure function of the calls made on it.

Fault model (docs/network.md#inmemorynetwork-and-inmemoryhub):
- *registration*: a network registers its ``node_id`` when created and again on ``start()``; the
  latest registration of an id wins. ``reset()`` forgets every registration; a target id that no
  network has registered is permanently "not available".
- *failure* (``fail_node``): a failed node neither sends nor receives — permanent errors — until
  ``recover_node``. Failures are kept per id, so they survive re-registration.
- *partition* (``partition(a, b)``): symmetric and transient; ``isolate(node)`` cuts ``node``
  off from every other node, including nodes registered later.

The process-wide default hub is ``InMemoryHub.default()``; ``InMemoryHub()`` makes a private one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Protocol


class HubMember(Protocol):
    """What the hub, and the chaos schedule through it, use of a registered network.

    ``InMemoryNetwork`` is one; the hub names this instead, so that it depends on nothing of the
    networks it connects (the networks import the hub).
    """

    node_id: str
    drop_rate: float

    def set_drop_rate(self, drop_rate: float) -> None: ...


class InMemoryHub:
    """Registry and fault state shared by the ``InMemoryNetwork``s that talk to each other.

    Example:
        >>> hub = InMemoryHub()
        >>> hub.partition("n1", "n2")
        >>> hub.is_partitioned("n2", "n1")
        True
    """

    _default: ClassVar[InMemoryHub | None] = None

    def __init__(self) -> None:
        self._networks: dict[str, HubMember] = {}
        self._failed: set[str] = set()
        self._partitions: set[frozenset[str]] = set()
        self._isolated: set[str] = set()

    @classmethod
    def default(cls) -> InMemoryHub:
        """The process-wide hub that networks created without ``hub=`` share."""
        if cls._default is None:
            cls._default = InMemoryHub()
        return cls._default

    # -- registration ---------------------------------------------------------------------------

    def register(self, network: HubMember) -> None:
        """Make ``network`` the receiver for its ``node_id`` (replacing any earlier one)."""
        self._networks[network.node_id] = network

    def unregister(self, network: HubMember) -> None:
        """Forget ``network``, unless another network has registered its id since."""
        if self._networks.get(network.node_id) is network:
            del self._networks[network.node_id]

    def network(self, node_id: str) -> HubMember | None:
        """The network registered for ``node_id``, if any."""
        return self._networks.get(node_id)

    def node_ids(self) -> list[str]:
        """Registered ids, sorted (a deterministic order for chaos schedules)."""
        return sorted(self._networks)

    def __iter__(self) -> Iterator[HubMember]:
        return iter([self._networks[n] for n in self.node_ids()])

    # -- failures -------------------------------------------------------------------------------

    def fail_node(self, node_id: str) -> None:
        """Crash ``node_id``: it neither sends nor receives until ``recover_node``."""
        self._failed.add(node_id)

    def recover_node(self, node_id: str) -> None:
        """Undo ``fail_node``. Recovering a node that is not failed does nothing."""
        self._failed.discard(node_id)

    def is_failed(self, node_id: str) -> bool:
        return node_id in self._failed

    def failed_nodes(self) -> list[str]:
        """Failed ids, sorted."""
        return sorted(self._failed)

    # -- partitions -----------------------------------------------------------------------------

    def partition(self, a: str, b: str) -> None:
        """Cut the link between ``a`` and ``b`` in both directions. ``a == b`` is ignored."""
        if a != b:
            self._partitions.add(frozenset((a, b)))

    def heal_partition(self, a: str, b: str) -> None:
        """Restore the link between ``a`` and ``b`` (an isolated node stays isolated)."""
        self._partitions.discard(frozenset((a, b)))

    def isolate(self, node_id: str) -> None:
        """Partition ``node_id`` from every other node, present and future."""
        self._isolated.add(node_id)

    def rejoin(self, node_id: str) -> None:
        """Undo ``isolate`` (pairwise partitions of ``node_id`` stay)."""
        self._isolated.discard(node_id)

    def heal_all(self) -> None:
        """Remove every partition and isolation. Failures are not touched."""
        self._partitions.clear()
        self._isolated.clear()

    def is_partitioned(self, a: str, b: str) -> bool:
        """Whether a message between ``a`` and ``b`` (either way) is cut off."""
        if a == b:
            return False
        if a in self._isolated or b in self._isolated:
            return True
        return frozenset((a, b)) in self._partitions

    def partitions(self) -> list[tuple[str, str]]:
        """Pairwise partitions as sorted pairs, sorted."""
        pairs = []
        for pair in self._partitions:
            a, b = sorted(pair)
            pairs.append((a, b))
        return sorted(pairs)

    def isolated_nodes(self) -> list[str]:
        return sorted(self._isolated)

    # -- everything -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Clear failures, partitions, isolations and registrations."""
        self._networks.clear()
        self._failed.clear()
        self.heal_all()
