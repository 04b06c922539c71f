"""The README's "Install on a real machine": every panther command in it is one the command line
takes as typed, and the nixos-anywhere flags it names are those panther passes."""

from __future__ import annotations

import re
import shlex

from pantheros import cli
from tests.helpers import REPO


def _section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## Install on a real machine", 1)[1].split("\n## ", 1)[0]


def _commands() -> list[list[str]]:
    blocks = re.findall(r"```sh\n(.*?)```", _section(), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    # As the shell reads them: a comment starts at a word that starts with #.
    return [shlex.split(re.sub(r"(^|\s)#.*$", "", line)) for line in lines if line.strip()]


def test_every_panther_command_is_one_the_parser_takes() -> None:
    found = [
        argv[argv.index("--") + 1 :]
        for argv in _commands()
        if argv[:3] == ["nix", "run", ".#panther"]
    ]
    assert [a[:2] for a in found] == [
        ["host", "new"],
        ["install", "demo"],
        ["install", "demo"],
    ]
    parser = cli.build_parser()
    for args in found:
        parsed = parser.parse_args(args)
        assert parsed.handler is not None


def test_the_nixos_anywhere_flags_it_names_are_panthers() -> None:
    text = " ".join(_section().split())
    shown = re.search(r"runs `(nixos-anywhere [^`]*)`", text)
    assert shown
    flags = [w for w in shown.group(1).split() if w.startswith("-")]
    assert flags == [
        "--flake",
        "--target-host",
        "--extra-files",
        "--disk-encryption-keys",
        "--generate-hardware-config",
    ]
    source = (REPO / "src/pantheros/install/anywhere.py").read_text()
    for flag in [*flags, "--chown"]:
        assert f'"{flag}"' in source
