"""`panther completion bash|zsh|fish`: a completion script generated from the parser itself,
so it never lags behind the commands (shtab walks the same argparse tree `panther` parses with).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import shtab

from pantheros import ui
from pantheros.errors import ExitCode


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    generated: str = shtab.complete(parser, shell=shell)
    return generated


@dataclass(frozen=True)
class Completion:
    shell: str


def cmd_completion(parser: argparse.ArgumentParser, opts: Completion) -> int:
    """parser: the whole command line's, given by the dispatcher."""
    ui.result(script(parser, opts.shell).rstrip("\n"))
    return ExitCode.OK
