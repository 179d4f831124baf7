"""The HTTP floor: a bare aiohttp server answering a fixed 200 to any GET.

Rule: nothing but the HTTP stack raftcache itself uses (aiohttp on the default asyncio loop,
no access log), so its rate is the ceiling of any one-process aiohttp server on this machine.
Run: ``python -m benchmarks.peers.floor_server PORT``.
"""

from __future__ import annotations

import sys

from aiohttp import web


async def ok(request: web.Request) -> web.Response:
    """The fixed answer."""
    return web.Response(body=b"ok")


def main() -> None:
    """Serve on 127.0.0.1:PORT until SIGTERM/SIGINT."""
    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
