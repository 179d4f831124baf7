"""Moved to ``raftcache.process``; kept for compatibility.

``python -m raftcache.server serve ...`` runs what ``python -m raftcache.process serve ...`` runs.
"""

from __future__ import annotations

import sys

from raftcache.process.cli import main

sys.exit(main())
