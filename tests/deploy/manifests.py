"""Reading the deployment files for static checks (no Docker engine or Kubernetes runs here).

Rule: every command line found in them is resolved the way ``raftcache serve`` resolves its own
— the real argument parser, the real environment handling (``RAFTCACHE_<OPTION>``) — so "the
files start a valid node" is checked by the code that will read them, not by a copy of it.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from raftcache.process.cli import build_serve_parser, options_from_args
from raftcache.process.config import ServeOptions

# PyYAML is a test dependency (the dev extra); typed as Any since it ships no stubs.
yaml: Any = pytest.importorskip("yaml", reason="PyYAML is missing: install the dev extra")

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def serve_options(argv: Sequence[str], env: Mapping[str, str]) -> ServeOptions:
    """``raftcache <argv>`` as the CLI would resolve it (raises on any invalid option)."""
    parser = argparse.ArgumentParser(prog="raftcache", exit_on_error=False)
    subparsers = parser.add_subparsers(dest="command", required=True)
    build_serve_parser(subparsers)
    args = parser.parse_args(list(argv))
    assert args.command == "serve", argv
    return options_from_args(args, env)


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    """Every non-empty YAML document of ``path`` (safe loader: plain data only)."""
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    """Every object of every manifest in ``deploy/k8s`` except the kustomization."""
    objects: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objects.extend(load_yaml_documents(path))
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``)."""
    found = [
        o
        for o in objects
        if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def parse_env_file(path: Path) -> dict[str, str]:
    """A docker ``env_file``: ``KEY=VALUE`` lines, ``#`` comments and blank lines ignored."""
    env: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {line!r}"
        env[key.strip()] = value.strip()
    return env


def expand_k8s_vars(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in ``command``/``args`` (every VAR must be defined)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in env, f"$({name}) is not defined in the container's env"
        return env[name]

    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return instructions


def exec_form(arguments: str) -> list[str]:
    """The JSON exec form of CMD/ENTRYPOINT/HEALTHCHECK CMD (shell form is refused)."""
    decoded = yaml.safe_load(arguments)  # JSON is YAML
    assert isinstance(decoded, list), f"not the exec form: {arguments}"
    return [str(x) for x in decoded]
