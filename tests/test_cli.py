"""The command line helps: usage on a bare command, one error prefix, `did you mean`, NO_COLOR."""

from __future__ import annotations

import argparse
import inspect
import io
import subprocess
import sys

import pytest

from helpers import panther
from pantheros import cli, ui


def test_bare_panther_shows_usage_and_one_error_line() -> None:
    proc = panther()
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: panther")
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert errors == [
        "panther: error: the following arguments are required: COMMAND (see `panther --help`)"
    ]


def test_a_bare_group_names_itself_once() -> None:
    proc = panther("roots")
    assert proc.returncode == 2
    assert "usage: panther roots" in proc.stderr
    assert proc.stderr.count("panther: error:") == 1
    assert "panther: error: roots: the following arguments are required: ACTION" in proc.stderr
    assert "panther: error: panther" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "suggestion"),
    [
        (["rolback"], "did you mean 'rollback'?"),
        (["roots", "lst"], "did you mean 'list'?"),
        (["rollback", "--dry-rn"], "did you mean '--dry-run'?"),
        (["spec", "list", "--jsn"], "did you mean '--json'?"),
    ],
)
def test_typos_get_a_suggestion(argv: list[str], suggestion: str) -> None:
    proc = panther(*argv)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("panther: error: ")
    assert lines[0].endswith(suggestion)


def test_no_suggestion_when_nothing_is_close() -> None:
    proc = panther("zzzzzz")
    assert "did you mean" not in proc.stderr


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("value", "colored"), [(None, True), ("", True), ("1", False)])
def test_no_color_follows_the_convention(
    monkeypatch: pytest.MonkeyPatch, value: str | None, colored: bool
) -> None:
    """no-color.org: only a NO_COLOR set to a non-empty value turns colour off."""
    if value is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", value)
    assert ui.use_color(Terminal()) is colored
    assert ui.use_color(io.StringIO()) is False


def _leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    leaves: list[argparse.ArgumentParser] = []
    stack = [parser]
    while stack:
        current = stack.pop()
        groups = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups:
            leaves.append(current)
        for group in groups:
            stack.extend(group.choices.values())
    return leaves


def test_every_command_has_a_handler_that_resolves() -> None:
    leaves = _leaf_parsers(cli.build_parser())
    assert len(leaves) >= 29
    for leaf in leaves:
        factory = leaf.get_default("handler")
        assert callable(factory), leaf.prog
        handler = factory()
        assert inspect.isfunction(handler), leaf.prog
        assert handler.__module__.startswith("pantheros."), leaf.prog
        assert list(inspect.signature(handler).parameters) == ["args"], leaf.prog


def test_building_the_parser_runs_no_command_module() -> None:
    # In a fresh interpreter: the command line's start-up must not pay for every command.
    code = (
        "import sys\nfrom pantheros import cli\ncli.build_parser()\n"
        "heavy = ['pantheros.spec.parse', 'pantheros.audit.checks', 'pantheros.state.diff',"
        " 'pantheros.storage.layout', 'shtab']\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
