"""The live dashboard served by every node at ``/``: nodes, roles, terms, leader, indexes, lag,
throughput (reads and writes), latency, quorum margin, errors, memory, evictions, version and
uptime, refreshed every second.

Rule: no build step and nothing fetched at run time — the page, its script and its stylesheet are
package data (``static/``), vanilla JS with inline SVG sparklines. The browser talks only to the
node that served the page; that node polls its peers (``poll``) and reduces their answers to
figures (``view``). Mount it with ``add_dashboard_routes(app, peer_urls=...)``.
"""

from __future__ import annotations

from raftcache.dashboard.routes import add_dashboard_routes

__all__ = ["add_dashboard_routes"]
