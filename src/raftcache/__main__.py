"""``python -m raftcache``: the same command line as the ``raftcache`` console script."""

from __future__ import annotations

import sys

from raftcache.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
