"""The command line helps: usage on a bare command, one error prefix, `did you mean`, NO_COLOR."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pantheros import cli, ui
from pantheros import manifest as manifests
from pantheros.errors import UsageError
from tests.helpers import REPO, one_line_error, panther


def test_bare_panther_is_one_line_naming_the_commands() -> None:
    proc = panther()
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        "panther: error: choose a command: disk, host, install, lab, rollback, roots, restore, "
        "status, blank, diff, persist, audit, fleet, spec, completion (see `panther --help`)"
    )


@pytest.mark.parametrize(
    ("group", "actions"),
    [
        ("roots", "list, pin, unpin, gc, mount"),
        ("persist", "add, remove, list, stray"),
        ("spec", "list, show, validate, archive, new, diff, trace, status, view"),
    ],
)
def test_a_bare_group_is_one_line_naming_its_actions(group: str, actions: str) -> None:
    proc = panther(group)
    assert proc.returncode == 2
    assert one_line_error(proc) == (
        f"panther: error: {group}: choose an action: {actions} (see `panther {group} --help`)"
    )


def test_verbose_is_taken_after_the_command_too(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "no-lab")
    for argv in (["-v", "lab", "status", nowhere], ["lab", "status", nowhere, "-v"]):
        proc = panther(*argv)
        assert proc.returncode == 0, proc.stderr
        assert "lab at" in proc.stdout
    quiet = panther("lab", "status", nowhere)
    assert quiet.returncode == 0
    assert cli.build_parser().parse_args(["lab", "status", "-v"]).verbose is True
    assert cli.build_parser().parse_args(["-v", "lab", "status"]).verbose is True
    assert cli.build_parser().parse_args(["lab", "status"]).verbose is False


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


def test_an_option_of_another_command_is_not_suggested() -> None:
    """`lab reboot` has no --purge: it was offered itself ("--purge; did you mean '--purge'?"),
    from the options of every command."""
    nowhere = "/nonexistent/lab"  # were the line parsed, no lab would be touched
    line = one_line_error(panther("lab", "reboot", nowhere, "--purge"))
    assert line == "panther: error: lab reboot: unrecognized arguments: --purge"
    line = one_line_error(panther("lab", "reboot", nowhere, "--no-wiat"))
    assert line.endswith("did you mean '--no-wait'?")


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


TARGETS = {"Machine", "Machine | None", "Lab", "argparse.ArgumentParser"}


def _leaf_handlers(
    parser: argparse.ArgumentParser, inherited: Any = None
) -> list[tuple[argparse.ArgumentParser, Any]]:
    """Each leaf parser with its handler factory, its own or that of the group above it."""
    factory = parser.get_default("handler") or inherited
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [(parser, factory)]
    return [
        found
        for group in groups
        for child in group.choices.values()
        for found in _leaf_handlers(child, factory)
    ]


def test_every_command_has_a_handler_that_resolves() -> None:
    """Each handler is in the commands layer and takes typed options whose every field is one
    of its command's arguments, and first, if anything, what the dispatcher builds for it."""
    leaves = _leaf_handlers(cli.build_parser())
    assert len(leaves) >= 29
    typed = 0
    for leaf, factory in leaves:
        assert callable(factory), leaf.prog
        handler = factory()
        assert inspect.isfunction(handler), leaf.prog
        assert handler.__module__.startswith("pantheros.commands."), leaf.prog
        params = list(inspect.signature(handler).parameters.values())
        assert 1 <= len(params) <= 2, leaf.prog
        dests = {a.dest for a in leaf._actions}
        if params[-1].annotation == "argparse.Namespace":
            # The spec tool's own parser: its actions name their handlers themselves.
            spec_handler = leaf.get_default("spec_handler")()
            assert spec_handler.__module__.startswith("panther_spec."), leaf.prog
            continue
        options = getattr(sys.modules[handler.__module__], params[-1].annotation)
        assert dataclasses.is_dataclass(options), leaf.prog
        assert getattr(options, "__dataclass_params__").frozen, leaf.prog  # noqa: B009
        missing = {f.name for f in dataclasses.fields(options)} - dests
        assert missing == set(), leaf.prog
        typed += 1
        if len(params) == 2:
            assert params[0].annotation in TARGETS, leaf.prog
            if params[0].annotation.startswith("Machine"):
                assert "lab" in dests, leaf.prog
            if params[0].annotation == "Lab":
                assert "dir" in dests, leaf.prog
    assert typed >= 20


def test_the_dispatcher_builds_the_machine_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rollback --lab DIR` selected the lab twice (its manifest read twice); the dispatcher
    selects it once, after the options are checked, and hands it to the handler."""
    from pantheros.commands import impermanence
    from pantheros.machine import Machine

    calls: list[tuple[str | None, str | None, str]] = []

    def select(lab: str | None, manifest: str | None = None, *, instead: str = "") -> str:
        calls.append((lab, manifest, instead))
        return "the machine"

    monkeypatch.setattr(Machine, "select", select)
    seen: list[tuple[object, object]] = []

    def handler(machine: object, opts: object) -> int:
        seen.append((machine, opts))
        return 0

    handler.__annotations__ = {"machine": "Machine", "opts": "Rollback", "return": "int"}
    handler.__module__ = impermanence.__name__
    parser = cli.build_parser()
    args = parser.parse_args(["rollback", "--lab", "/x", "--dry-run"])
    assert cli.dispatch(handler, args, parser) == 0
    assert calls == [("/x", None, "--manifest M or --lab DIR")]
    [(machine, opts)] = seen
    assert machine == "the machine"
    assert isinstance(opts, impermanence.Rollback)
    assert opts.dry_run is True
    # Options that contradict each other are refused before any machine is looked at.
    calls.clear()
    args = parser.parse_args(["rollback", "--finish", "--lab", "/x"])
    with pytest.raises(UsageError, match="--finish"):
        cli.dispatch(handler, args, parser)
    assert calls == []


def test_building_the_parser_runs_no_command_module() -> None:
    # In a fresh interpreter: the command line's start-up must not pay for every command.
    code = (
        "import sys\nfrom pantheros import cli\ncli.build_parser()\n"
        "heavy = ['panther_spec.parse', 'panther_spec.commands', 'panther_spec.trace',"
        " 'pantheros.audit.checks',"
        " 'pantheros.state.diff', 'pantheros.storage.layout', 'pantheros.machine', 'shtab']\n"
        "ran = [m for m, v in sys.modules.items() if type(v).__name__ != '_LazyModule']\n"
        "print(sorted(m for m in ran if m in heavy or m.startswith('pantheros.commands.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_every_option_and_positional_has_help() -> None:
    missing = []
    checked = 0
    for leaf in _leaf_parsers(cli.build_parser()):
        for action in leaf._actions:
            checked += 1
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{leaf.prog} {'/'.join(action.option_strings) or action.dest}")
    assert checked > 150
    assert missing == []


# Each command offers only the options it takes to name another machine.
NOT_PANTHEROS = [
    (["diff"], "(use --lab DIR)"),
    (["status"], "(use --lab DIR)"),
    (["roots", "list"], "(use --lab DIR)"),
    (["restore", "/etc/hosts", "--from", "latest"], "(use --lab DIR)"),
    (["persist", "list"], "(use --lab DIR)"),
    (["rollback", "--dry-run"], "(use --manifest M or --lab DIR)"),
    (["rollback", "--finish"], "(use --manifest M)"),
]


@pytest.mark.skipif(
    manifests.HOST_MANIFEST.exists(), reason="this is a PantherOS machine: it has a manifest"
)
@pytest.mark.parametrize(("argv", "hint"), NOT_PANTHEROS)
def test_not_a_pantheros_machine_names_the_commands_own_options(argv: list[str], hint: str) -> None:
    proc = panther(*argv)
    line = one_line_error(proc)
    assert proc.returncode == 2
    assert line.endswith(f"not a PantherOS machine {hint}")
    options = {o for a in _parser_of(argv)._actions for o in a.option_strings}
    for offered in ("--lab", "--manifest"):
        assert (offered in line) <= (offered in options), (argv, offered)


def _parser_of(argv: list[str]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = cli.build_parser()
    for word in argv:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups or word not in groups[0].choices:
            break
        parser = groups[0].choices[word]
    return parser


def test_audit_to_a_file_it_cannot_write(tmp_path: Path) -> None:
    proc = panther("audit", "--root", str(tmp_path), "-o", str(tmp_path / "no" / "x.json"))
    assert "cannot write the report to" in one_line_error(proc)
    assert proc.returncode == 2
    assert not (tmp_path / "no").exists()


@pytest.mark.root
def test_spec_new_in_a_read_only_tree(tmp_path: Path) -> None:
    (tmp_path / "openspec" / "changes").mkdir(parents=True)
    (tmp_path / "openspec" / "specs").mkdir()
    # A read-only bind mount: root ignores mode bits, not a read-only mount.
    subprocess.run(["mount", "--bind", str(tmp_path), str(tmp_path)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(tmp_path)], check=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pantheros", "spec", "new", "add-thing"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO / "src")},
            check=False,
        )
    finally:
        subprocess.run(["umount", str(tmp_path)], check=True)
    assert "Read-only file system" in one_line_error(proc)
    assert proc.returncode == 2
    assert list((tmp_path / "openspec" / "changes").iterdir()) == []


def _documented(command: str) -> str:
    """The bullet of docs/cli.md's JSON section that describes `command`."""
    section = (REPO / "docs" / "cli.md").read_text().split("## JSON results", 1)[1]
    bullets = section.split("\n- ")
    [bullet] = [b for b in bullets if b.startswith(f"`{command}`")]
    return bullet


def _keys(report: type) -> set[str]:
    """Every key as_json writes for a report dataclass, nested reports included."""
    import dataclasses
    import typing

    keys: set[str] = set()
    hints = typing.get_type_hints(report)
    for field in dataclasses.fields(report):
        keys.add(field.name)
        inner = typing.get_args(hints[field.name]) or (hints[field.name],)
        for kind in inner:
            if isinstance(kind, type) and dataclasses.is_dataclass(kind):
                keys |= _keys(kind)
    return keys


@pytest.mark.parametrize(
    ("command", "report"),
    [("status", "status.StatusReport"), ("roots list", "listing.RootsTable")],
)
def test_json_keys_are_documented(command: str, report: str) -> None:
    from pantheros.impermanence import listing, status

    module, name = report.split(".")
    keys = _keys(getattr({"status": status, "listing": listing}[module], name))
    assert len(keys) > 10
    bullet = _documented(command)
    assert {k for k in keys if f"`{k}`" not in bullet} == set()


def test_a_path_the_system_refuses_is_one_error_line(tmp_path: Path) -> None:
    """An OSError on a path the user gave (here: a name longer than NAME_MAX) is one line, with
    the exit code of bad input; -v adds where it was raised."""
    too_long = str(tmp_path / ("a" * 300))
    proc = panther("lab", "status", too_long)
    line = one_line_error(proc)
    assert line.endswith(": File name too long")
    assert proc.returncode == 2
    verbose = panther("-v", "lab", "status", too_long)
    assert "Traceback" in verbose.stderr
    assert verbose.stderr.rstrip().endswith("File name too long")


def _shape(parser: argparse.ArgumentParser) -> list[object]:
    """Every action of parser and below it: its options or destination, its help, its choices."""
    shape: list[object] = []
    for action in parser._actions:
        shape.append((action.option_strings, action.dest, action.help, action.default))
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                shape.append((name, _shape(child)))
    return shape


def test_the_parser_built_for_a_command_declares_that_command_as_the_whole_one_does() -> None:
    """Given the words to parse, only their command is declared whole (D158): that command's
    tree equals the whole parser's, and every other command is still a choice."""
    whole = cli.build_parser()
    commands = next(a for a in whole._actions if isinstance(a, argparse._SubParsersAction))
    for name, full in commands.choices.items():
        built = cli.build_parser(["-v", name, "--anything"])
        ours = next(a for a in built._actions if isinstance(a, argparse._SubParsersAction))
        assert list(ours.choices) == list(commands.choices)
        assert _shape(ours.choices[name]) == _shape(full), name
        others = [ours.choices[other] for other in ours.choices if other != name]
        if name != "completion":  # it describes every command: all are built
            assert all(len(other._actions) <= 2 for other in others)  # -h and -v alone
    for words in (["audit", "--json", "--level", "strict"], ["-v", "roots", "gc", "--dry-run"]):
        parsed = [vars(p.parse_args(words)) for p in (whole, cli.build_parser(words))]
        for found in parsed:
            del found["handler"], found["command_parser"]  # made anew by each parser
        assert parsed[0] == parsed[1], words
