"""The ``raftcache`` command line: one argparse tree, one subcommand per module.

Rule: this is the composition root of the CLI. It imports subcommand modules only as needed:
``serve`` pulls in the whole node (Raft, storage, server), so its parser is built from
``raftcache.process.cli`` only when the first argument is ``serve``; every other invocation sees
a placeholder entry for it in the help. Conversely ``raftcache serve`` builds only that
subcommand and imports none of the client-side ones (the client, rich, the benchmarks: a fifth
of a node's start-up CPU, paid by every node a cluster or a test starts). Exit codes are those
of ``cli.common``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from raftcache import __version__

DESCRIPTION = "raftcache: a distributed, strongly consistent cache replicated with Raft."
EPILOG = (
    "Exit codes: 0 ok, 1 key not found (get, del) or not a member (member remove), "
    "2 usage error or refused request "
    "(a missing or wrong token included), 3 cluster unavailable (unreachable, no leader). "
    "Client commands take --endpoints URL,... after the subcommand "
    "(or RAFTCACHE_ENDPOINTS); the default is the local cluster of `raftcache cluster`."
)


def build_parser(*, with_serve: bool = False, only_serve: bool = False) -> argparse.ArgumentParser:
    """The full parser; ``with_serve`` imports the node server to build ``serve`` for real;
    ``only_serve`` (with it) leaves every other subcommand out, and their imports with them."""
    parser = argparse.ArgumentParser(prog="raftcache", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"raftcache {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if not (with_serve and _add_real_serve(subparsers)):
        _add_placeholder_serve(subparsers)
    elif only_serve:
        return parser
    from raftcache.cli import (
        bench,
        cluster,
        commands,
        completion,
        membership,
        monitor,
        recover,
        shards,
        snapshot,
        stores,
        watch,
    )

    cluster.add_parser(subparsers)
    commands.add_parsers(subparsers)
    monitor.add_parser(subparsers)
    bench.add_parser(subparsers)
    recover.add_parser(subparsers)
    snapshot.add_parser(subparsers)
    watch.add_parser(subparsers)
    shards.add_parser(subparsers)
    stores.add_parser(subparsers)
    membership.add_parsers(subparsers)
    completion.add_parser(subparsers)
    return parser


def _add_real_serve(subparsers: Any) -> bool:
    try:
        from raftcache.process.cli import build_serve_parser
    except ImportError:
        return False
    build_serve_parser(subparsers)
    return True


def _serve_importable() -> bool:
    try:
        import raftcache.process.cli  # noqa: F401
    except ImportError:
        return False
    return True


def _add_placeholder_serve(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run one cluster node (see `raftcache serve --help`)",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_serve_unavailable)


def _serve_unavailable(args: argparse.Namespace) -> int:
    from raftcache.cli.common import EXIT_USAGE

    print(
        "raftcache serve: error: the node server is not available in this installation "
        "(raftcache.process.cli could not be imported)",
        file=sys.stderr,
    )
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    with_serve = args_list[:1] == ["serve"]
    if with_serve and not _serve_importable():
        # Before parsing: the placeholder cannot know the real options, so any would be "wrong".
        return _serve_unavailable(argparse.Namespace())
    # A completion script asks about the whole command line: it gets the whole parser.
    completing = "_ARGCOMPLETE" in os.environ
    parser = build_parser(with_serve=with_serve, only_serve=with_serve and not completing)
    if completing:
        from raftcache.cli import completion

        completion.autocomplete(parser)  # writes the completions and exits
    args = parser.parse_args(args_list)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `raftcache keys | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
