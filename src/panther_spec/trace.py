"""`panther spec trace`: from each scenario of the main specs to the tests that name it.

A test names a scenario with `@pytest.mark.scenario("<spec>: <scenario>")` (or the bare scenario
name). Without --run, trace reads the test files; with --run it runs exactly the traced tests
through pytest and reports, per requirement and per scenario, passed, failed or untested.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panther_spec import parse, ui
from panther_spec.commands import Tree, _tree, no_root
from panther_spec.errors import ExitCode, UsageError

MARKER = re.compile(r"""scenario\(\s*["']([^"']+)["']\s*\)""")
PLUGIN = "panther_spec.pytest_trace"
RESULT_ENV = "PANTHER_TRACE_OUT"  # where the plugin writes its results
ONLY_TRACED_ENV = "PANTHER_TRACE_ONLY"  # set: the plugin deselects every untraced test


@dataclass
class Scenario:
    spec: str
    requirement: str
    name: str
    files: list[str] = field(default_factory=list)
    tests: dict[str, str] = field(default_factory=dict)  # node id -> outcome (with --run)

    @property
    def keys(self) -> tuple[str, str]:
        return f"{self.spec}: {self.name}", self.name

    @property
    def status(self) -> str:
        """failed if any test failed; passed if one passed and none failed; else untested."""
        outcomes = set(self.tests.values())
        if "failed" in outcomes:
            return "failed"
        return "passed" if "passed" in outcomes else "untested"


def scenarios(tree: Tree) -> list[Scenario]:
    found = []
    for spec_id in tree.specs():
        text = parse.read(tree.spec_file(spec_id))
        try:
            parse.parse_spec(text)
        except parse.SpecError:
            continue
        for block in parse.requirements_section(text).blocks:
            for name in parse.scenario_names(block, counted_only=False):
                found.append(Scenario(spec_id, block.name, name))
    return found


def marked_files(tests_dir: Path, root: Path) -> dict[str, list[str]]:
    """Scenario key -> test files that name it, read without importing anything."""
    covered: dict[str, list[str]] = {}
    for test_file in sorted(tests_dir.rglob("test_*.py")):
        for match in MARKER.finditer(parse.read(test_file)):
            rel = os.path.relpath(test_file, root)
            covered.setdefault(match.group(1), []).append(rel)
    return covered


def run_traced(root: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """Run the scenario-marked tests of files with pytest; node id -> scenarios, outcome."""
    if importlib.util.find_spec("pytest") is None:
        raise UsageError(f"trace --run needs pytest in {sys.executable}'s environment")
    with tempfile.TemporaryDirectory(prefix="panther-trace-") as tmp:
        out = Path(tmp) / "trace.json"
        argv = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            PLUGIN,
            "-q",
            "--no-header",
            "-p",
            "no:cacheprovider",
            *files,
        ]
        ui.progress(f"pytest on {len(files)} traced test file(s)")
        env = {**os.environ, RESULT_ENV: str(out), ONLY_TRACED_ENV: "1"}
        # pytest's own report goes to stderr: stdout carries only trace's result.
        proc = subprocess.run(argv, cwd=root, env=env, stdout=sys.stderr, check=False)
        if not out.is_file():
            raise UsageError(f"pytest exited with status {proc.returncode} before running a test")
        results: dict[str, dict[str, Any]] = json.loads(out.read_text())
        return results


def _read_results(path: Path) -> dict[str, dict[str, Any]]:
    """Results the plugin recorded during an earlier test run."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read trace results {path}: {exc}") from None
    if not isinstance(results, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("scenarios"), list) and "outcome" in r
        for r in results.values()
    ):
        raise UsageError(f"{path} is not a results file of panther_spec.pytest_trace")
    return results


def _requirements(rows: list[Scenario]) -> list[dict[str, Any]]:
    grouped: dict[tuple[str, str], list[Scenario]] = {}
    for row in rows:
        grouped.setdefault((row.spec, row.requirement), []).append(row)
    out = []
    for (spec, requirement), members in grouped.items():
        states = {m.status for m in members}
        status = (
            "failed" if "failed" in states else "untested" if "untested" in states else "passed"
        )
        out.append(
            {
                "spec": spec,
                "requirement": requirement,
                "status": status,
                "scenarios": [
                    {"name": m.name, "status": m.status, "tests": m.tests} for m in members
                ],
            }
        )
    return out


def cmd_trace(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    tests_dir = Path(args.tests) if args.tests else tree.root / "tests"
    if not tests_dir.is_dir():
        raise UsageError(f"no test directory at {tests_dir}")
    rows = scenarios(tree)
    covered = marked_files(tests_dir, tree.root)
    for row in rows:
        row.files = sorted({f for key in row.keys for f in covered.get(key, [])})
    if args.results:
        results = _read_results(Path(args.results))
    elif args.run:
        files = sorted({f for row in rows for f in row.files})
        results = run_traced(tree.root, files) if files else {}
    else:
        return _report_static(args, rows)
    for node, result in results.items():
        for row in rows:
            if set(result["scenarios"]) & set(row.keys):
                row.tests[node] = result["outcome"]
    return _report_run(args, rows)


def _report_static(args: argparse.Namespace, rows: list[Scenario]) -> int:
    uncovered = [r for r in rows if not r.files]
    if args.json:
        ui.emit_json(
            {
                "scenarios": [
                    {
                        "spec": r.spec,
                        "requirement": r.requirement,
                        "scenario": r.name,
                        "tests": r.files,
                    }
                    for r in rows
                ],
                "covered": len(rows) - len(uncovered),
                "uncovered": len(uncovered),
            }
        )
    else:
        # Words, not check marks: a test that names a scenario says nothing of whether it passes
        # (--run and --results say that).
        for r in rows:
            named = f"named in {', '.join(r.files)}" if r.files else "no test names it"
            ui.result(f"{r.spec}: {r.name}  ({named})")
        ui.result(
            f"{len(rows) - len(uncovered)}/{len(rows)} scenarios named by a test "
            "(whether those pass: panther spec trace --run)"
        )
    return ExitCode.FAILURE if args.strict and uncovered else ExitCode.OK


def _report_run(args: argparse.Namespace, rows: list[Scenario]) -> int:
    counts = {s: sum(r.status == s for r in rows) for s in ("passed", "failed", "untested")}
    requirements = _requirements(rows)
    if args.json:
        ui.emit_json({"requirements": requirements, "totals": counts})
    else:
        width = max((len(f"{r['spec']}: {r['requirement']}") for r in requirements), default=0)
        for req in requirements:
            ui.result(f"{req['status']:8} {req['spec'] + ': ' + req['requirement']:{width}}")
            for scenario in req["scenarios"]:
                tests = len(scenario["tests"])
                ui.result(f"  {scenario['status']:8} {scenario['name']}  ({tests} test(s))")
        ui.result(
            f"scenarios: {counts['passed']} passed, {counts['failed']} failed, "
            f"{counts['untested']} untested"
        )
    if counts["failed"] or (args.strict and counts["untested"]):
        return ExitCode.FAILURE
    return ExitCode.OK
