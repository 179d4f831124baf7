"""``python -m raftcache.process serve ...``: the node server without the full CLI."""

from __future__ import annotations

import sys

from raftcache.process.cli import main

sys.exit(main())
