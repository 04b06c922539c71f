"""`panther completion`: scripts generated from the whole parser, accepted by each shell."""

from __future__ import annotations

import argparse
import shutil
import subprocess

import pytest

from pantheros.cli import build_parser
from tests.helpers import one_line_error, panther

SHELL_CHECK = {
    "bash": ["bash", "-n"],
    "zsh": ["zsh", "-n"],
    "fish": ["fish", "--no-execute"],
}


def command_names(parser: argparse.ArgumentParser) -> set[str]:
    """Every subcommand name at every depth of the parser."""
    names: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                names.add(name)
                names |= command_names(sub)
    return names


@pytest.mark.parametrize("shell", sorted(SHELL_CHECK))
@pytest.mark.scenario("spec-management: Completion scripts parse in their shells")
def test_script_names_every_command_and_parses_in_its_shell(shell: str, tmp_path: object) -> None:
    proc = panther("completion", shell)
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    missing = sorted(n for n in command_names(build_parser()) if n not in script)
    assert not missing, f"{shell} script lacks {missing}"
    argv = SHELL_CHECK[shell]
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed here, so its parser cannot check the script")
    checked = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("panther sp", {"spec"}),
        ("panther spec tr", {"trace"}),
        ("panther spec trace --r", {"--run"}),
        ("panther completion f", {"fish"}),
        ("panther roots g", {"gc"}),
    ],
)
def test_bash_completes_commands_and_options(words: str, expected: set[str]) -> None:
    script = panther("completion", "bash").stdout
    driver = (
        f"{script}\n"
        f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); "
        f'COMP_LINE="{words}"; COMP_POINT=${{#COMP_LINE}}\n'
        '_shtab_panther panther "${COMP_WORDS[-1]}" "${COMP_WORDS[-2]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    proc = subprocess.run(["bash", "-c", driver], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    offered = {w.strip() for w in proc.stdout.split()}
    assert expected <= offered, offered


def test_unknown_shell_is_one_line() -> None:
    proc = panther("completion", "tcsh")
    assert proc.returncode == 2
    one_line_error(proc)
