"""panther spec on its own: the project's specs, trace, new, diff, show and the merge order."""

from __future__ import annotations

import json
from pathlib import Path

import corpus
from tools import REPO, panther

from pantheros.spec import archive, parse


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


def test_trace_maps_every_scenario_to_a_test() -> None:
    proc = panther(REPO, "trace", "--json", "--strict")
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["uncovered"] == 0
    assert report["covered"] == len(report["scenarios"]) >= 12
    row = next(r for r in report["scenarios"] if r["scenario"] == "Crash at any step")
    assert row["tests"] == ["tests/impermanence/test_rollback.py"]


def test_trace_reports_an_uncovered_scenario(tmp_path: Path) -> None:
    corpus.write(tmp_path)
    (tmp_path / "tests").mkdir()
    proc = panther(tmp_path, "trace", "--strict")
    assert proc.returncode == 1
    assert "✗ auth: good password" in proc.stdout


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
    assert panther(tmp_path, "new", "Bad Name").returncode == 2


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
