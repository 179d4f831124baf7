"""The examples of docs/network.md run as written (its summary in docs/raft.md must stay true).

Blocks fenced as ``python`` are complete scripts and run here; fragments that need outside
resources (certificate files) are fenced as ``py`` and only shown.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "network.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_doc_has_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_example_runs(index: int) -> None:
    # Each example is a script: the async ones call asyncio.run() themselves.
    exec(compile(BLOCKS[index], f"{DOC.name}[{index}]", "exec"), {"__name__": "__doc_example__"})
