"""``raftcache completion``: the printed scripts are valid, and bash completes with them.

The bash script is checked by ``bash -n`` and then used as a shell uses it: sourced into a real
bash, its completion function is called with ``COMP_WORDS``/``COMP_CWORD``/``COMP_LINE`` set,
and it runs a real ``raftcache`` (this interpreter, through a wrapper on ``PATH``) that answers
from the CLI's own parser.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.conftest import cli

COMPLETE = """
source {script}
complete_line() {{
    COMP_LINE="$1"; COMP_POINT=${{#COMP_LINE}}
    read -r -a COMP_WORDS <<< "$COMP_LINE"
    [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
    COMPREPLY=()
    _python_argcomplete raftcache "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
    echo "$(printf '%s\\n' "${{COMPREPLY[@]}}" | sort | tr -s ' \\n' ' ')"
}}
complete_line "raftcache mem"
complete_line "raftcache member "
"""


@pytest.fixture
def bash_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert cli(["completion", "bash"]) == 0
    script = tmp_path / "raftcache.bash"
    script.write_text(capsys.readouterr().out)
    return script


def test_the_bash_script_is_valid_and_completes_subcommands(
    bash_script: Path, tmp_path: Path
) -> None:
    checked = subprocess.run(["bash", "-n", str(bash_script)], capture_output=True, timeout=30)
    assert (checked.returncode, checked.stderr) == (0, b"")

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "raftcache"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m raftcache "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-c", COMPLETE.format(script=shlex.quote(str(bash_script)))],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["member ", "--help -h add list remove "]


def test_zsh_and_fish_scripts_call_raftcache_back(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["completion", "zsh"]) == 0
    zsh = capsys.readouterr().out
    assert zsh.startswith("#compdef raftcache")
    assert cli(["completion", "fish"]) == 0
    fish = capsys.readouterr().out
    assert "complete --command raftcache" in fish
    with pytest.raises(SystemExit) as info:
        cli(["completion", "tcsh"])
    assert info.value.code == 2
    assert "invalid choice: 'tcsh'" in capsys.readouterr().err
