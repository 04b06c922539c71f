"""`panther spec status` and `panther spec view`: where each change stands.

status follows OpenSpec's built-in spec-driven schema: four artifacts, each done when its file
exists (skipped: specs of a skip_specs change), ready when everything it requires is done,
blocked otherwise. view is the dashboard of
all changes (draft: no tasks; active: tasks left; completed: all tasks done) and all specs.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panther_spec import parse, ui, validate
from panther_spec.commands import Tree, _tree, fail, no_root
from panther_spec.errors import ExitCode, UsageError


@dataclass(frozen=True)
class Artifact:
    id: str
    output: str  # a file name, or a glob under the change
    requires: tuple[str, ...]


SPEC_DRIVEN = (
    Artifact("proposal", "proposal.md", ()),
    Artifact("specs", "specs/**/*.md", ("proposal",)),
    Artifact("design", "design.md", ("proposal",)),
    Artifact("tasks", "tasks.md", ("specs", "design")),
)
APPLY_REQUIRES = ["tasks"]


def _written(change: Path, artifact: Artifact) -> list[Path]:
    if "*" not in artifact.output:
        path = change / artifact.output
        return [path] if path.is_file() else []
    return sorted(p for p in change.glob(artifact.output) if p.is_file())


def schema_of(change: Path, tree: Tree) -> str:
    """The change's schema: its own .openspec.yaml, else the project's config, else the default."""
    for source in (change / ".openspec.yaml", tree.openspec / "config.yaml"):
        if source.is_file():
            for line in parse.normalise(parse.read(source)).split("\n"):
                key, _, value = line.partition(":")
                if key.strip() == "schema" and not line.startswith((" ", "\t")):
                    return value.strip().strip("'\"")
    return "spec-driven"


class ChangeError(Exception):
    """This change's status cannot be told: its metadata is broken or names another schema."""


def change_status(tree: Tree, name: str) -> dict[str, Any]:
    change = tree.changes_dir / name
    nested = validate.nested_changes(tree.changes_dir, name)
    if nested:
        raise ChangeError(validate.nested_issue(nested, name).message)
    problem = validate.metadata_problem(change)
    if problem:
        raise ChangeError(f"change '{name}' has invalid metadata in .openspec.yaml: {problem}")
    schema = schema_of(change, tree)
    if schema != "spec-driven":
        raise ChangeError(
            f"change '{name}' uses the schema '{schema}'; panther spec status knows only "
            "the built-in spec-driven schema"
        )
    done = {a.id for a in SPEC_DRIVEN if _written(change, a)}
    skip_specs, _ = validate.marker(change, "skip_specs")
    # A change that declares skip_specs must not have spec files, so its specs artifact
    # counts as complete (tasks is not blocked on it) and shows as skipped.
    skipped = set()
    if skip_specs and "specs" not in done:
        skipped.add("specs")
        done.add("specs")
    artifacts = []
    for artifact in SPEC_DRIVEN:
        if artifact.id in skipped:
            state = "skipped"
        elif artifact.id in done:
            state = "done"
        elif all(r in done for r in artifact.requires):
            state = "ready"
        else:
            state = "blocked"
        entry: dict[str, Any] = {
            "id": artifact.id,
            "outputPath": artifact.output,
            "status": state,
            "requires": list(artifact.requires),
        }
        if state == "blocked":
            entry["missingDeps"] = [r for r in artifact.requires if r not in done]
        artifacts.append(entry)
    tasks = change / "tasks.md"
    completed, total = parse.task_counts(parse.read(tasks)) if tasks.is_file() else (0, 0)
    return {
        "changeName": name,
        "schemaName": schema,
        "changeRoot": str(change),
        "isComplete": len(done) == len(SPEC_DRIVEN),
        "applyRequires": APPLY_REQUIRES,
        "artifacts": artifacts,
        "tasks": {"completed": completed, "total": total},
    }


def _print_status(status: dict[str, Any]) -> None:
    done = sum(a["status"] == "done" for a in status["artifacts"])
    ui.result(f"Change: {status['changeName']}")
    ui.result(f"Schema: {status['schemaName']}")
    ui.result(f"Progress: {done}/{len(status['artifacts'])} artifacts complete")
    ui.result()
    for artifact in status["artifacts"]:
        mark = {"done": "[x]", "skipped": "[~]", "ready": "[ ]", "blocked": "[-]"}[
            artifact["status"]
        ]
        waits = (
            f" (blocked by: {', '.join(artifact['missingDeps'])})"
            if artifact["status"] == "blocked"
            else ""
        )
        ui.result(f"{mark} {artifact['id']}{waits}")
    tasks = status["tasks"]
    if tasks["total"]:
        ui.result(f"\nTasks: {tasks['completed']}/{tasks['total']}")


def cmd_status(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    changes = tree.changes()
    if args.all:
        names = changes
    elif args.change:
        if args.change not in changes:
            message = f"Change '{args.change}' not found. Available: {', '.join(changes) or 'none'}"
            return fail(args, "change_not_found", message)
        names = [args.change]
    elif len(changes) == 1:
        names = changes
    elif not changes:
        # Nothing to report is no error, as OpenSpec has it (and the same JSON).
        if args.json:
            ui.emit_json({"changes": [], "message": "No active changes.", "root": tree.root_json()})
        else:
            ui.result("No active changes. Create one with: panther spec new CHANGE")
        return ExitCode.OK
    else:
        raise UsageError(
            "name a change with --change ID, or give --all "
            f"({len(changes)} active changes: see panther spec list)"
        )
    statuses: list[dict[str, Any]] = []
    for name in names:
        try:
            statuses.append(change_status(tree, name))
        except ChangeError as exc:
            if not args.all:
                if not args.json:
                    raise UsageError(str(exc)) from None  # a change panther cannot read
                return fail(args, "change_error", str(exc))
            error = {"severity": "error", "code": "change_error", "message": str(exc)}
            statuses.append({"changeName": name, "status": [error]})
    if args.json:
        root = tree.root_json()
        ui.emit_json(
            {"changes": statuses, "root": root} if args.all else {**statuses[0], "root": root}
        )
        return ExitCode.OK
    for index, status in enumerate(statuses):
        if index:
            ui.result()
        if "status" in status:
            ui.result(f"Change: {status['changeName']}\n{status['status'][0]['message']}")
        else:
            _print_status(status)
    return ExitCode.OK


# view


def dashboard(tree: Tree) -> dict[str, Any]:
    draft: list[dict[str, Any]] = []
    active: list[dict[str, Any]] = []
    completed: list[dict[str, Any]] = []
    for name in tree.changes():
        tasks = tree.changes_dir / name / "tasks.md"
        done, total = parse.task_counts(parse.read(tasks)) if tasks.is_file() else (0, 0)
        entry = {"name": name, "completedTasks": done, "totalTasks": total}
        (draft if total == 0 else completed if done == total else active).append(entry)
    active.sort(key=lambda c: (c["completedTasks"] / c["totalTasks"], c["name"]))
    specs: list[dict[str, Any]] = [
        {"id": s, "requirementCount": tree.requirement_count(s)} for s in tree.specs()
    ]
    specs.sort(key=lambda s: -s["requirementCount"])
    return {
        "summary": {
            "specs": len(specs),
            "requirements": sum(s["requirementCount"] for s in specs),
            "draftChanges": len(draft),
            "activeChanges": len(active),
            "completedChanges": len(completed),
            "completedTasks": sum(c["completedTasks"] for c in active),
            "totalTasks": sum(c["totalTasks"] for c in active),
        },
        "draft": draft,
        "active": active,
        "completed": completed,
        "specs": specs,
    }


@dataclass(frozen=True)
class Glyphs:
    """Box drawing and bars for a terminal; plain ASCII for a pipe or a file."""

    rule: str
    thin: str
    full: str
    empty: str
    draft: str
    active: str
    done: str
    spec: str


TERMINAL = Glyphs("═", "─", "█", "░", "○", "◉", "✓", "▪")
PLAIN = Glyphs("=", "-", "#", ".", "o", "*", "+", "-")


def bar(done: int, total: int, glyphs: Glyphs, width: int = 20) -> str:
    filled = round(done / total * width) if total else 0
    return "[" + glyphs.full * filled + glyphs.empty * (width - filled) + "]"


def render(board: dict[str, Any], terminal: bool) -> list[str]:
    g = TERMINAL if terminal else PLAIN

    def paint(text: str, color: str) -> str:
        return ui.paint(text, color, sys.stdout) if terminal else text

    s = board["summary"]
    lines = ["PantherOS spec dashboard", g.rule * 60, "Summary:"]
    lines.append(f"  Specifications: {s['specs']} specs, {s['requirements']} requirements")
    if s["draftChanges"]:
        lines.append(f"  Draft changes: {s['draftChanges']}")
    lines.append(f"  Active changes: {s['activeChanges']} in progress")
    lines.append(f"  Completed changes: {s['completedChanges']}")
    if s["totalTasks"]:
        percent = round(s["completedTasks"] / s["totalTasks"] * 100)
        lines.append(
            f"  Task progress: {s['completedTasks']}/{s['totalTasks']} ({percent}% complete)"
        )
    sections = (
        ("Draft changes", board["draft"], g.draft, "dim"),
        ("Active changes", board["active"], g.active, "yellow"),
        ("Completed changes", board["completed"], g.done, "green"),
    )
    for title, entries, mark, color in sections:
        if not entries:
            continue
        lines += ["", paint(title, "bold"), g.thin * 60]
        for c in entries:
            row = f"  {paint(mark, color)} {c['name']}"
            if entries is board["active"]:
                percent = round(c["completedTasks"] / c["totalTasks"] * 100)
                row = (
                    f"  {paint(mark, color)} {c['name']:30} "
                    f"{bar(c['completedTasks'], c['totalTasks'], g)} {percent}%"
                )
            lines.append(row)
    if board["specs"]:
        lines += ["", paint("Specifications", "bold"), g.thin * 60]
        for spec in board["specs"]:
            count = spec["requirementCount"]
            label = "requirement" if count == 1 else "requirements"
            lines.append(f"  {g.spec} {spec['id']:30} {count} {label}")
    lines += [g.rule * 60]
    return lines


def cmd_view(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    board = dashboard(tree)
    if args.json:
        ui.emit_json({**board, "root": tree.root_json()})
        return ExitCode.OK
    for line in render(board, terminal=sys.stdout.isatty()):
        ui.result(line)
    return ExitCode.OK
