"""`panther completion bash|zsh|fish`: a completion script generated from the parser itself,
so it never lags behind the commands (shtab walks the same argparse tree `panther` parses with).
"""

from __future__ import annotations

import argparse

import shtab

from pantheros import ui
from pantheros.errors import ExitCode


def script(shell: str) -> str:
    from pantheros.cli import build_parser

    generated: str = shtab.complete(build_parser(), shell=shell)
    return generated


def cmd_completion(args: argparse.Namespace) -> int:
    ui.result(script(args.shell).rstrip("\n"))
    return ExitCode.OK
