"""The dashboard in a real browser: headless Chromium against a real 3-node cluster on loopback.

It checks what a person would look at: three nodes, exactly one leader (the cluster's), figures
that move after writes, a dead node shown as unreachable — and that the page talks to the node
that served it and to nobody else, with no console error (a CSP violation would be one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from raftcache import __version__
from tests.server.cluster import Cluster

from .browser import CHROMIUM, CHROMIUM_ARGS, artifact_paths, require_browser
from .cluster import start_dashboard_cluster

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = pytest.mark.timeout(120)

WAIT_MS = 15_000


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    require_browser()
    started = await start_dashboard_cluster(tmp_path)
    try:
        await started.leader()
        yield started
    finally:
        await started.stop()


@pytest.fixture
async def browser_page() -> AsyncIterator[tuple[Page, list[str], list[str]]]:
    """A fresh page; also the URLs it requested and its console errors, as they happen."""
    require_browser()
    from playwright.async_api import async_playwright

    requests: list[str] = []
    errors: list[str] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 760})
            page.set_default_timeout(WAIT_MS)
            page.on("request", lambda request: requests.append(request.url))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            yield page, requests, errors
        finally:
            await browser.close()


async def _write(cluster: Cluster, count: int) -> None:
    leader = await cluster.leader()
    for i in range(count):
        async with cluster.session.put(f"{leader.url}/v1/keys/k{i}", data=b"v" * 10) as response:
            assert response.status == 200, await response.text()
        await asyncio.sleep(0.02)  # spread over more than one poll, so a rate is measured


async def _rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#nodes tbody tr",
        """rows => rows.map(r => ({
            id: r.dataset.nodeId, role: r.dataset.role, reachable: r.dataset.reachable,
            commit: r.querySelector('.col-commit').textContent,
            keys: r.querySelector('.col-keys').textContent,
        }))""",
    )
    return rows


async def _page_agrees_on_one_leader(page: Page, cluster: Cluster) -> None:
    """Exactly one row is the leader, the summary names it, and it is the cluster's leader.

    Retried for a while: on a loaded machine a (fast-timed) election may happen between the
    page's poll and ours; a page that never agrees fails with what it showed.
    """
    rows: list[dict[str, Any]] = []
    for _ in range(50):
        rows = await _rows(page)
        leaders = [r["id"] for r in rows if r["role"] == "leader"]
        expected = (await cluster.leader()).node.node_id
        if leaders == [expected] and await page.text_content("#leader") == expected:
            assert sorted(r["id"] for r in rows) == ["n1", "n2", "n3"]
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"page never showed exactly one leader: {rows}")


async def test_dashboard_shows_the_live_cluster(
    cluster: Cluster, browser_page: tuple[Page, list[str], list[str]], tmp_path: Path
) -> None:
    page, requests, errors = browser_page
    leader = await cluster.leader()
    served_by = next(s for s in cluster.servers if s is not leader)  # a follower serves it
    await page.goto(served_by.url + "/")

    await page.wait_for_function("() => document.querySelectorAll('#nodes tbody tr').length === 3")
    await page.wait_for_function(
        "() => document.getElementById('connection').dataset.state === 'live'"
    )
    await _page_agrees_on_one_leader(page, cluster)
    assert await page.text_content("#up") == "3 / 3"
    await page.wait_for_function("() => document.getElementById('quorum').textContent === '1'")
    assert await page.text_content("#version") == __version__
    assert await page.text_content("#self") == served_by.node.node_id
    commit_before = int((await page.text_content("#commit")) or "0")

    await _write(cluster, 40)
    # The summary's commit index and the leader row's key count follow the writes...
    await page.wait_for_function(
        f"() => Number(document.getElementById('commit').textContent) >= {commit_before + 40}"
    )
    await page.wait_for_function(
        """() => [...document.querySelectorAll('#nodes tbody tr')]
             .every(r => r.querySelector('.col-keys').textContent === '40')"""
    )
    # ...and the throughput measured from successive commit indexes saw them (> 0 ops/s).
    throughput = await page.evaluate("window.raftcacheDashboard.state.throughput")
    assert any(v is not None and v > 0 for v in throughput), throughput
    # The sparklines draw from successive refreshes: wait for a second one (not a race).
    for spark in ("#throughput-spark", "#latency-spark"):
        await page.wait_for_function(
            f"() => Number(document.querySelector('{spark}').dataset.points || '0') >= 2"
        )
    for path in artifact_paths(tmp_path, "dashboard.png"):
        await page.screenshot(path=str(path), full_page=True)

    # A stopped node turns into an unreachable row, and the page keeps refreshing.
    stopped = next(s for s in cluster.servers if s is not leader and s is not served_by)
    await stopped.stop()
    await page.wait_for_function(
        f"""() => document.querySelector('#nodes tr[data-node-id="{stopped.node.node_id}"]')
              ?.dataset.reachable === 'false'"""
    )
    await page.wait_for_function("() => document.getElementById('up').textContent === '2 / 3'")
    # One more failure would lose the quorum: the card says so, in the warning colour.
    await page.wait_for_function(
        """() => { const q = document.getElementById('quorum');
                   return q.textContent === '0' && q.classList.contains('bad'); }"""
    )
    for path in artifact_paths(tmp_path, "dashboard-node-down.png"):
        await page.screenshot(path=str(path), full_page=True)

    # The browser only ever talked to the node that served the page.
    assert requests
    assert all(url.startswith(served_by.url + "/") for url in requests), requests
    assert errors == []


async def test_dashboard_helpers_in_the_browser(
    cluster: Cluster, browser_page: tuple[Page, list[str], list[str]]
) -> None:
    """The page's pure helpers (rates, sparkline geometry) on inputs with known answers."""
    page, _, errors = browser_page
    await page.goto(cluster.servers[0].url + "/")
    await page.wait_for_function("() => window.raftcacheDashboard !== undefined")
    rate = "window.raftcacheDashboard.rate"
    assert await page.evaluate(f"{rate}({{t: 0, commit: 10}}, {{t: 500, commit: 60}})") == 100
    assert await page.evaluate(f"{rate}({{t: 0, commit: 60}}, {{t: 1000, commit: 10}})") == 0
    assert await page.evaluate(f"{rate}({{t: 0, commit: null}}, {{t: 1000, commit: 5}})") is None
    assert await page.evaluate(f"{rate}({{t: 10, commit: 1}}, {{t: 10, commit: 5}})") is None
    # Throughput counts reads (every node's hits and misses) as well as commits.
    ops = "window.raftcacheDashboard.opsRate"
    both = "{t: 0, commit: 10, reads: 100}, {t: 1000, commit: 20, reads: 130}"
    assert await page.evaluate(f"{ops}({both})") == 40
    assert await page.evaluate(f"{ops}({{t: 0, commit: 1}}, {{t: 1000, commit: 3}})") == 2
    counter = "window.raftcacheDashboard.counterRate"
    restarted = "{t: 0, errors: 5}, {t: 1000, errors: 2}, 'errors'"
    assert await page.evaluate(f"{counter}({restarted})") == 0
    # Newest at the right edge; a null breaks the line; the top value touches the top (y=1).
    segments = await page.evaluate(
        "window.raftcacheDashboard.sparklineSegments([0, 10, null, 5], 30, 12, 4)"
    )
    assert segments == [[[0, 11], [10, 1]], [[30, 6]]]
    assert await page.evaluate("window.raftcacheDashboard.sparklineSegments([], 30, 12)") == []
    assert errors == []
