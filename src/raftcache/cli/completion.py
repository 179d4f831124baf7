"""``raftcache completion bash|zsh|fish``: shell completion, answered by the CLI's own parser.

Rule: completion is argcomplete's. The script printed here only calls ``raftcache`` back with
argcomplete's environment (``_ARGCOMPLETE``, ``COMP_LINE``, ``COMP_POINT``); ``main`` then hands
the one argparse tree to ``argcomplete.autocomplete`` before parsing, so every subcommand,
option and choice completes as the parser defines it, and nothing is listed twice. argcomplete
is imported only when a shell asks for completions or a script is printed: an ordinary command
pays nothing for it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from raftcache.cli.common import EXIT_OK

SHELLS = ("bash", "zsh", "fish")
PROG = "raftcache"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script of SHELL. Install it with, for bash: "
        "`raftcache completion bash > ~/.local/share/bash-completion/completions/raftcache`; "
        'zsh: `raftcache completion zsh > "${fpath[1]}/_raftcache"`; fish: '
        "`raftcache completion fish > ~/.config/fish/completions/raftcache.fish` "
        '(or `eval "$(raftcache completion bash)"` in the shell\'s startup file).',
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=cmd_completion)


def cmd_completion(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode([PROG], shell=args.shell), end="")
    return EXIT_OK


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """When a completion script called us (``_ARGCOMPLETE`` set): write the completions of
    the command line in progress and exit, as argcomplete does. Otherwise return at once."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)
