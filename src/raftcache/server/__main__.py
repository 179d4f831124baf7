"""``python -m raftcache.server serve ...``: the node server without the full CLI."""

from __future__ import annotations

import sys

from raftcache.server.cli import main

sys.exit(main())
