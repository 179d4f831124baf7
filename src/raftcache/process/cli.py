"""The ``serve`` subcommand: argument parsing and the exit code.

Rule: this module only turns argv and the environment into ``ServeOptions`` (``config``) and
hands them to the composition root (``serve.run_serve``). Configuration errors are reported on
stderr as one line and exit with status 2, like argparse's own usage errors; a clean shutdown
exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from raftcache.process.config import (
    OPTIONS,
    ConfigError,
    ServeOptions,
    add_serve_arguments,
    resolve_options,
)

DESCRIPTION = (
    "Run one raftcache node: the Raft endpoints and the client API on one port. Options also "
    "come from RAFTCACHE_<OPTION> environment variables and a TOML --config file "
    "(precedence: flags > environment > file > defaults)."
)


def build_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to an argparse ``subparsers`` object.

    The parser's defaults carry ``func=main_serve``, so a CLI can dispatch with
    ``args.func(args)``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run one cluster node", description=DESCRIPTION
    )
    add_serve_arguments(parser)
    parser.set_defaults(func=main_serve)
    return parser


def options_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServeOptions:
    """Resolve ``ServeOptions`` from parsed flags and the environment (raises ``ConfigError``)."""
    flags = {opt.name: getattr(args, opt.name, None) for opt in OPTIONS}
    return resolve_options(flags, env, config_path=getattr(args, "config", None))


def main_serve(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> int:
    """Run ``raftcache serve`` with parsed ``args``; returns the process exit code."""
    try:
        options = options_from_args(args, os.environ if env is None else env)
    except ConfigError as exc:
        print(f"raftcache serve: error: {exc}", file=sys.stderr)
        return 2
    from raftcache.process.serve import run_serve

    return run_serve(options)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (``python -m raftcache.process serve ...``)."""
    parser = argparse.ArgumentParser(prog="raftcache")
    subparsers = parser.add_subparsers(dest="command", required=True)
    build_serve_parser(subparsers)
    args = parser.parse_args(argv)
    return main_serve(args)
