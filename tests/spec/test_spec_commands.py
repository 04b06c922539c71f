"""panther spec on its own: the project's specs, trace, new, diff, show and the merge order."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from panther_spec import archive, parse
from tests.spec import corpus
from tests.spec.tools import ENV, REPO, one_line_error, panther


def test_the_projects_own_specs_validate_strictly() -> None:
    proc = panther(REPO, "validate", "--all", "--strict", "--json")
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    ids = {i["id"] for i in report["items"]}
    assert ids >= {
        "storage-layout",
        "impermanence-rollback",
        "diff-and-persist",
        "security-audit",
        "spec-management",
        "nixos-modules",
    }
    assert all(not i["issues"] for i in report["items"])


def test_trace_maps_the_projects_scenarios_to_tests() -> None:
    proc = panther(REPO, "trace", "--json")
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["covered"] + report["uncovered"] == len(report["scenarios"]) >= 40
    wave_one = {"storage-layout", "impermanence-rollback", "diff-and-persist", "spec-management"}
    assert all(r["tests"] for r in report["scenarios"] if r["spec"] in wave_one)
    row = next(r for r in report["scenarios"] if r["scenario"] == "Crash at any step")
    assert row["tests"] == ["tests/impermanence/test_rollback.py"]
    assert row["requirement"] == "Atomic rollback"


def test_trace_reports_an_uncovered_scenario(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    (tmp_path / "tests").mkdir()
    proc = panther(tmp_path, "trace", "--strict")
    assert proc.returncode == 1
    assert "auth: good password  (no test names it)" in proc.stdout
    assert "✓" not in proc.stdout  # no mark that reads as a pass


def test_new_scaffolds_a_change_that_validates(tmp_path: Path) -> None:
    (tmp_path / "openspec" / "specs").mkdir(parents=True)
    proc = panther(tmp_path, "new", "add-widgets", "--capability", "widgets", "--json")
    assert proc.returncode == 0, proc.stderr
    created = json.loads(proc.stdout)["change"]
    assert created["id"] == "add-widgets"
    folder = Path(created["path"])
    assert {p.name for p in folder.iterdir()} >= {
        "proposal.md",
        "tasks.md",
        "specs",
        ".openspec.yaml",
    }
    assert (folder / "specs" / "widgets" / "spec.md").exists()
    proc = panther(tmp_path, "validate", "add-widgets", "--json")
    assert json.loads(proc.stdout)["items"][0]["valid"] is True
    nested = panther(tmp_path, "new", "add-login", "--capability", "identity/user-auth")
    assert nested.returncode == 0, nested.stderr
    assert (tmp_path / "openspec/changes/add-login/specs/identity/user-auth/spec.md").is_file()


def _everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("change", "capability"),
    [
        ("add-x", "../../x"),
        ("add-x", "a/../../x"),
        ("add-x", "/tmp/x"),
        ("add-x", "Widgets"),
        ("add-x", "a//b"),
        ("add-x", ""),
        ("../x", None),
        ("Bad Name", None),
        ("a--b", None),
        ("-a", None),
        ("a-", None),
        ("under_score", None),
        ("x" * 201, None),
    ],
)
@pytest.mark.scenario("spec-management: Hostile names are refused")
def test_new_refuses_hostile_names_and_creates_nothing(
    tmp_path: Path, change: str, capability: str | None
) -> None:
    project = tmp_path / "project"
    (project / "openspec" / "specs").mkdir(parents=True)
    before = _everything(tmp_path)
    args = ["new", change] + (["--capability", capability] if capability is not None else [])
    proc = panther(project, *args)
    assert proc.returncode == 2
    one_line_error(proc)
    assert _everything(tmp_path) == before


def test_new_refuses_a_changes_folder_that_leads_outside(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "openspec").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "openspec" / "changes").symlink_to(elsewhere)
    proc = panther(project, "new", "add-x")
    assert proc.returncode == 2
    assert "outside" in proc.stderr
    assert list(elsewhere.iterdir()) == []


def test_new_refuses_an_existing_change(tmp_path: Path) -> None:
    (tmp_path / "openspec" / "specs").mkdir(parents=True)
    assert panther(tmp_path, "new", "add-x").returncode == 0
    proposal = tmp_path / "openspec/changes/add-x/proposal.md"
    proposal.write_text("mine")
    again = panther(tmp_path, "new", "add-x", "--capability", "other")
    assert again.returncode == 1
    assert proposal.read_text() == "mine"
    assert not (tmp_path / "openspec/changes/add-x/specs/other").exists()


def test_diff_shows_the_effect_before_archiving(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    before = (tmp_path / "openspec/specs/auth/spec.md").read_bytes()
    proc = panther(tmp_path, "diff", "c-full-merge", "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)["specs"]
    assert entry["added"] == ["Two Factor"]
    assert entry["removed"] == ["Legacy Tokens"]
    assert entry["totals"] == {"added": 1, "modified": 1, "removed": 1, "renamed": 1}
    assert (tmp_path / "openspec/specs/auth/spec.md").read_bytes() == before
    failing = panther(tmp_path, "diff", "c-modified-missing")
    assert failing.returncode == 1
    assert "cannot apply" in failing.stdout


def test_merge_order_renamed_removed_modified_added() -> None:
    current = corpus.SPECS["auth"]
    result = archive.build(
        "auth", "x", corpus.CHANGES["c-full-merge"]["specs/auth/spec.md"], current
    )
    names = [b.name for b in parse.requirements_section(result.text).blocks]
    assert names == ["Session Login", "Logout", "Password Reset", "Two Factor"]
    assert (result.added, result.modified, result.removed, result.renamed) == (1, 1, 1, 1)
    assert "\n## Requirements\n\n### Requirement: Session Login" in result.text


def test_show_and_list_json(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    shown = json.loads(panther(tmp_path, "show", "auth", "--json").stdout)
    assert shown["requirementCount"] == 4
    assert shown["requirements"][0]["text"] == "The system SHALL do it."
    change = json.loads(panther(tmp_path, "show", "c-full-merge", "--json").stdout)
    assert [d["operation"] for d in change["deltas"]] == ["ADDED", "MODIFIED", "REMOVED", "RENAMED"]
    listing = json.loads(panther(tmp_path, "list", "--json").stdout)
    assert {c["name"] for c in listing["changes"]} == set(corpus.CHANGES)
    missing = panther(tmp_path, "validate", "nope", "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["status"][0]["code"] == "unknown_item"


def test_status_reports_artifacts_and_their_order(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    done = json.loads(panther(tmp_path, "status", "--change", "c-full-merge", "--json").stdout)
    states = {a["id"]: a["status"] for a in done["artifacts"]}
    assert states == {"proposal": "done", "specs": "done", "design": "ready", "tasks": "done"}
    assert done["isComplete"] is False
    bare = tmp_path / "openspec/changes/c-bare"
    bare.mkdir()
    (bare / "proposal.md").write_text(corpus.PROPOSAL)
    fresh = json.loads(panther(tmp_path, "status", "--change", "c-bare", "--json").stdout)
    tasks = next(a for a in fresh["artifacts"] if a["id"] == "tasks")
    assert tasks["status"] == "blocked"
    assert tasks["missingDeps"] == ["specs", "design"]
    text = panther(tmp_path, "status", "--change", "c-bare").stdout
    assert "[x] proposal" in text
    assert "[-] tasks (blocked by: specs, design)" in text
    every = json.loads(panther(tmp_path, "status", "--all", "--json").stdout)
    assert len(every["changes"]) == len(corpus.CHANGES) + 1
    unknown = panther(tmp_path, "status", "--change", "nope", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout)["status"][0]["code"] == "change_not_found"
    ambiguous = panther(tmp_path, "status")
    assert ambiguous.returncode == 2
    one_line_error(ambiguous)


def test_status_refuses_a_schema_it_does_not_know(tmp_path: Path) -> None:
    change = tmp_path / "openspec/changes/c-custom"
    change.mkdir(parents=True)
    (change / ".openspec.yaml").write_text("schema: my-flow\n")
    proc = panther(tmp_path, "status", "--change", "c-custom")
    assert proc.returncode == 2
    assert "my-flow" in proc.stderr


def test_view_is_plain_text_in_a_pipe_and_counts_like_list(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    proc = panther(tmp_path, "view")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.isascii()
    assert "\x1b[" not in proc.stdout
    board = json.loads(panther(tmp_path, "view", "--json").stdout)
    listing = json.loads(panther(tmp_path, "list", "--json").stdout)["changes"]
    drafts = sorted(c["name"] for c in listing if c["status"] == "no-tasks")
    assert [c["name"] for c in board["draft"]] == drafts
    assert board["summary"]["completedChanges"] == sum(c["status"] == "complete" for c in listing)
    assert f"Draft changes: {len(drafts)}" in proc.stdout
    for change in board["active"]:
        assert change["name"] in proc.stdout


TRACED_SPEC = corpus.spec(
    corpus.GOOD_PURPOSE,
    corpus.req("Sums", scenarios=("adds", "subtracts")),
    corpus.req("Products", scenarios=("multiplies",)),
    corpus.req("Skips", scenarios=("skipped only",)),
)
TRACED_TESTS = """
import pytest

@pytest.mark.scenario("calc: adds")
def test_add():
    assert 1 + 1 == 2

@pytest.mark.scenario("subtracts")
def test_subtract():
    assert 2 - 1 == {answer}

@pytest.mark.scenario("calc: skipped only")
def test_skipped():
    pytest.skip("not on this machine")

def test_unrelated():
    raise SystemExit("an untraced test must not run")
"""


def _traced_project(root: Path, answer: int) -> Path:
    spec = root / "openspec/specs/calc/spec.md"
    spec.parent.mkdir(parents=True)
    spec.write_text(TRACED_SPEC)
    (root / "tests").mkdir()
    (root / "tests/test_calc.py").write_text(TRACED_TESTS.format(answer=answer))
    return root


@pytest.mark.scenario("spec-management: Passed, failed and untested scenarios")
def test_trace_run_reports_passed_failed_untested(tmp_path: Path) -> None:
    root = _traced_project(tmp_path, answer=0)
    proc = panther(root, "trace", "--run", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    states = {
        (r["requirement"], s["name"]): s["status"]
        for r in report["requirements"]
        for s in r["scenarios"]
    }
    assert states == {
        ("Sums", "adds"): "passed",
        ("Sums", "subtracts"): "failed",
        ("Products", "multiplies"): "untested",
        ("Skips", "skipped only"): "untested",
    }
    by_name = {r["requirement"]: r["status"] for r in report["requirements"]}
    assert by_name == {"Sums": "failed", "Products": "untested", "Skips": "untested"}
    assert report["totals"] == {"passed": 1, "failed": 1, "untested": 2}
    assert "test_unrelated" not in proc.stderr


def test_trace_run_fails_on_untested_only_when_strict(tmp_path: Path) -> None:
    root = _traced_project(tmp_path, answer=1)
    relaxed = panther(root, "trace", "--run")
    assert relaxed.returncode == 0, relaxed.stdout + relaxed.stderr
    assert "passed   calc: Sums" in relaxed.stdout
    assert "untested multiplies" in relaxed.stdout
    assert "2 passed, 0 failed, 2 untested" in relaxed.stdout
    assert panther(root, "trace", "--run", "--strict").returncode == 1


def test_trace_results_reports_from_a_whole_test_run(tmp_path: Path) -> None:
    root = _traced_project(tmp_path, answer=0)
    results = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "panther_spec.pytest_trace", "-q", "tests"],
        cwd=root,
        env={**ENV, "PANTHER_TRACE_OUT": str(results)},
        capture_output=True,
        text=True,
        check=False,
    )
    # The whole run ran the untraced test too; the recorded results hold only traced ones.
    assert "test_unrelated" in run.stdout
    assert "2 failed, 1 passed, 1 skipped" in run.stdout
    recorded = json.loads(results.read_text())
    assert sorted(node.split("::")[1] for node in recorded) == [
        "test_add",
        "test_skipped",
        "test_subtract",
    ]
    proc = panther(root, "trace", "--results", str(results), "--json")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["totals"] == {"passed": 1, "failed": 1, "untested": 2}
    (tmp_path / "bad.json").write_text('{"x": 1}')
    bad = panther(root, "trace", "--results", str(tmp_path / "bad.json"))
    assert "not a results file" in one_line_error(bad)


@pytest.mark.parametrize(
    "argv",
    [
        ["list"],
        ["list", "--specs"],
        ["show", "x"],
        ["validate", "x"],
        ["archive", "x", "-y"],
        ["status"],
        ["view"],
        ["diff", "x"],
        ["trace"],
    ],
)
def test_no_root_is_one_error_line_or_openspecs_json(tmp_path: Path, argv: list[str]) -> None:
    proc = panther(tmp_path, *argv)
    assert proc.returncode == 2, proc.stderr  # bad input (docs/cli.md); 1 with --json
    assert proc.stdout == ""
    line = one_line_error(proc)
    assert "No OpenSpec root found" in line or "Unknown change 'x'" in line
    as_json = panther(tmp_path, *argv, "--json")
    assert as_json.returncode == 1
    [status] = json.loads(as_json.stdout)["status"]
    assert status["code"] == ("unknown_change" if argv[0] == "diff" else "no_openspec_root")


def test_an_unknown_item_is_one_error_line(tmp_path: Path) -> None:
    (tmp_path / "openspec" / "specs").mkdir(parents=True)
    for argv in (["show", "nope"], ["validate", "nope"], ["archive", "nope", "-y"]):
        proc = panther(tmp_path, *argv)
        assert proc.returncode == 2, proc.stderr
        assert "nope" in one_line_error(proc)


ALONE = (
    "import sys\n"
    "sys.modules['pantheros'] = None  # any import of pantheros fails\n"
    "from panther_spec.cli import main\n"
    "raise SystemExit(main(sys.argv[1:]))\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--json"],
        ["list", "--specs"],
        ["validate", "--all", "--json"],
        ["show", "auth", "--json"],
        ["show", "nope"],
        ["status", "--all", "--json"],
        ["diff", "c-full-merge"],
        ["archive", "c-full-merge"],
        ["view"],
    ],
)
def test_panther_spec_alone_is_panther_spec(tmp_path: Path, argv: list[str]) -> None:
    """panther_spec imports nothing of pantheros, and `panther-spec` says what `panther spec`
    says, byte for byte but for the name in an error line, with the same exit code."""
    corpus.write(tmp_path)
    ours = panther(tmp_path, *argv)
    alone = subprocess.run(
        [sys.executable, "-c", ALONE, *argv],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    timing = re.compile(r'"durationMs": \d+')  # how long validation took differs from run to run
    assert alone.returncode == ours.returncode
    assert timing.sub("", alone.stdout) == timing.sub("", ours.stdout)
    assert alone.stderr.replace("panther-spec: error:", "panther: error:") == ours.stderr
