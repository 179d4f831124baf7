"""End to end: SIGTERM to the leader hands leadership over first (``server.handover``).

Three real ``raftcache serve`` processes take writes from two kinds of clients while the leader
gets SIGTERM:

- ``raftcache.AsyncClient`` writers (they honour ``Retry-After``: what an application sees);
- a raw writer that retries at once on any failure, through the two surviving nodes (what the
  cluster itself can do, without the client library's waits).

With the hand-over (the default) the old leader logs the transfer to a named follower, that
follower leads next, and the term grows by exactly one — the new leader won one election, the
one TimeoutNow started. Without it (``--no-transfer-on-shutdown``) no transfer is logged and the
others elect a leader after an election timeout. Either way the old leader exits 0, clients see
no error, and every acknowledged write is in the cluster.

The write-unavailability window each client kind saw — the longest time between two
acknowledged writes around the signal — is printed for both cases, never asserted (one run on
the 2-core development VM, shared with other test runs, is in docs/operations.md).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from raftcache import AsyncClient, RaftcacheError
from tests.e2e.nodes import ProcessCluster, key_url, mget, node_status, wait_for, wait_for_leader

pytestmark = pytest.mark.e2e

LIBRARY_WRITERS = 2
AFTER_EXIT_ACKS = 25


@dataclass
class Acks:
    """Acknowledged writes of one kind of client, with the time each was acknowledged."""

    values: dict[str, bytes] = field(default_factory=dict)
    times: list[float] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def ack(self, key: str, value: bytes) -> None:
        self.values[key] = value
        self.times.append(time.monotonic())

    def since(self, t: float) -> int:
        return sum(1 for x in self.times if x > t)

    def window_s(self, signalled: float) -> float:
        """The longest gap between acknowledgements, from the last one before the signal on."""
        times = sorted(self.times)
        before = [x for x in times if x <= signalled]
        start = before[-1] if before else signalled
        later = [start, *(x for x in times if x > start)]
        return max((b - a for a, b in itertools.pairwise(later)), default=0.0)


async def library_writer(client: AsyncClient, n: int, acks: Acks, stop: asyncio.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        key, value = f"lib/{n}/{i:05d}", f"{n}:{i}".encode()
        try:
            await client.set(key, value)
        except RaftcacheError as exc:
            acks.errors.append(exc)
        else:
            acks.ack(key, value)


async def prompt_writer(urls: list[str], acks: Acks, stop: asyncio.Event) -> None:
    """One write at a time, each retried at once (same session headers) until acknowledged."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        seq, attempt = 0, 0
        while not stop.is_set():
            seq += 1
            key, value = f"raw/{seq:05d}", str(seq).encode()
            headers = {"X-Raftcache-Client-Id": "prompt", "X-Raftcache-Seq": str(seq)}
            while True:
                attempt += 1
                url = urls[attempt % len(urls)]
                try:
                    async with http.put(key_url(url, key), data=value, headers=headers) as resp:
                        if resp.status == 200:
                            acks.ack(key, value)
                            break
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.005)


def transfer_line(log_text: str) -> re.Match[str] | None:
    return re.search(r"leadership transferred to=(\S+) term=(\d+) previous_term=(\d+)", log_text)


@pytest.mark.parametrize("transfer", [True, False], ids=["transfer", "no-transfer"])
async def test_sigterm_to_the_leader_with_and_without_handover(
    tmp_path: Path, transfer: bool
) -> None:
    extra = [] if transfer else ["--no-transfer-on-shutdown"]
    with ProcessCluster(tmp_path, extra_args=extra) as cluster:
        cluster.start_all()
        async with aiohttp.ClientSession() as http:
            leader = await wait_for_leader(cluster, http)
            status = await node_status(http, leader.url)
            assert status is not None
            old_term = status["term"]
            survivors = [n for n in cluster.nodes.values() if n is not leader]
            library, prompt = Acks(), Acks()
            stop = asyncio.Event()
            clients = [AsyncClient(cluster.endpoints, timeout=30) for _ in range(LIBRARY_WRITERS)]
            tasks = [
                asyncio.ensure_future(library_writer(c, i, library, stop))
                for i, c in enumerate(clients)
            ]
            tasks.append(
                asyncio.ensure_future(prompt_writer([n.url for n in survivors], prompt, stop))
            )
            try:

                async def warmed_up() -> bool | None:
                    return True if len(library.times) >= 20 and len(prompt.times) >= 20 else None

                await wait_for(warmed_up, "writes flowing", cluster=cluster)
                signalled = time.monotonic()
                cluster.send_signal(leader.node_id, signal.SIGTERM)
                code = await cluster.wait_exit(leader.node_id)
                exited = time.monotonic()

                async def writes_resumed() -> bool | None:
                    done = library.since(exited) >= AFTER_EXIT_ACKS
                    return True if done and prompt.since(exited) >= AFTER_EXIT_ACKS else None

                await wait_for(writes_resumed, "writes after the leader left", cluster=cluster)
            finally:
                stop.set()
                async with asyncio.timeout(60):
                    await asyncio.gather(*tasks)
                for c in clients:
                    await c.close()

            assert code == 0, cluster.logs()
            assert library.errors == [], f"clients saw errors: {library.errors}\n{cluster.logs()}"
            new_leader = await wait_for_leader(cluster, http)
            status = await node_status(http, new_leader.url)
            assert status is not None
            log_text = leader.log_path.read_text()
            line = transfer_line(log_text)
            if transfer:
                assert line is not None, log_text
                assert line.group(1) == new_leader.node_id, (line.group(0), new_leader.node_id)
                assert int(line.group(3)) == old_term
                assert int(line.group(2)) == old_term + 1
                assert status["term"] == old_term + 1, status
            else:
                assert line is None, log_text
                assert "handing leadership over" not in log_text
                assert status["term"] > old_term, status

            everything = {**library.values, **prompt.values}
            keys = sorted(everything)
            values = await mget(http, new_leader.url, keys)
            got = {
                k: None if v is None else base64.b64decode(v)
                for k, v in zip(keys, values, strict=True)
            }
            lost = sorted(k for k in keys if got[k] != everything[k])
            assert lost == [], f"{len(lost)} acknowledged writes lost: {lost[:10]}"

            mode = "with transfer" if transfer else "without transfer"
            print(
                f"\nleader SIGTERM {mode}: old term {old_term}, new term {status['term']}, "
                f"leader {leader.node_id} -> {new_leader.node_id}, exited after "
                f"{(exited - signalled) * 1000:.0f} ms; write unavailability: "
                f"AsyncClient {library.window_s(signalled) * 1000:.0f} ms, "
                f"prompt retries via followers {prompt.window_s(signalled) * 1000:.0f} ms "
                f"({len(keys)} acknowledged writes checked)"
            )
