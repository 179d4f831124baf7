"""Modules that moved stay importable at their old paths, as thin re-exports of the new ones.

Rule: a module that moves leaves behind a module whose docstring says "Moved to ``X``; kept for
compatibility." and which re-exports X's public names, so that code written against the old
layout keeps working; the project itself imports only the new paths.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

MOVED = {
    "raftcache.gcpolicy": "raftcache.process.gcpolicy",
    "raftcache.server.cli": "raftcache.process.cli",
    "raftcache.server.config": "raftcache.process.config",
    "raftcache.server.exposure": "raftcache.process.exposure",
    "raftcache.server.logs": "raftcache.process.logs",
    "raftcache.server.serve": "raftcache.process.serve",
    "raftcache.server.lean_front": "raftcache.server.lean.front",
    "raftcache.server.lean_protocol": "raftcache.server.lean.protocol",
    "raftcache.server.lean_request": "raftcache.server.lean.request",
    "raftcache.server.lean_routes": "raftcache.server.lean.routes",
    "raftcache.server.lean_wire": "raftcache.server.lean.wire",
    "raftcache.server.openapi_ops": "raftcache.server.openapi.ops",
    "raftcache.server.openapi_schema": "raftcache.server.openapi.schema",
}


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_re_exports_the_new_module(old: str, new: str) -> None:
    shim, target = importlib.import_module(old), importlib.import_module(new)
    assert shim.__doc__ is not None
    assert shim.__doc__.startswith(f"Moved to ``{new}``; kept for compatibility.")
    public = getattr(target, "__all__", [n for n in vars(target) if not n.startswith("_")])
    assert public
    for name in public:
        assert getattr(shim, name) is getattr(target, name), name


def test_the_openapi_document_keeps_its_path() -> None:
    from raftcache.server.openapi import openapi_document
    from raftcache.server.openapi.document import openapi_document as moved

    assert openapi_document is moved


@pytest.mark.parametrize(
    "name", ["ServeOptions", "NodeServer", "build_node_server", "run_serve", "serve_node"]
)
def test_the_server_package_still_offers_the_process_names(name: str) -> None:
    import raftcache.process
    import raftcache.server

    assert getattr(raftcache.server, name) is getattr(raftcache.process, name)


def test_python_m_raftcache_server_still_runs_serve() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "raftcache.server", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--peers" in done.stdout
