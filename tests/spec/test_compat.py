"""panther spec beside the real OpenSpec CLI 1.13.2 on a generated corpus: every difference fails.

The CLI comes from npm (`.ci/run` installs it); its path is PANTHEROS_OPENSPEC_CLI, or
.ci/openspec/node_modules/.bin/openspec in the checkout.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.spec import corpus
from tests.spec.tools import CLI, node_ok, openspec, panther

pytestmark = pytest.mark.skipif(
    not Path(CLI).exists() or not node_ok(),
    reason="needs the OpenSpec CLI 1.13.2 from npm (.ci/run installs it) and Node.js >= 20.19",
)


def issues(item: dict[str, Any]) -> Counter[tuple[object, ...]]:
    return Counter((i["level"], i["path"], i.get("line")) for i in item["issues"])


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return corpus.write(tmp_path_factory.mktemp("corpus"))


@pytest.mark.scenario("spec-management: Same verdicts as the OpenSpec CLI")
@pytest.mark.parametrize("strict", [False, True], ids=["normal", "strict"])
def test_validate_verdicts_and_issues_match(tree: Path, strict: bool) -> None:
    flags = ["validate", "--all", "--json"] + (["--strict"] if strict else [])
    theirs = json.loads(openspec(tree, *flags).stdout)
    ours = json.loads(panther(tree, *flags).stdout)
    a = {(i["type"], i["id"]): i for i in theirs["items"]}
    b = {(i["type"], i["id"]): i for i in ours["items"]}
    report = []
    if a.keys() != b.keys():
        report.append(
            f"items only in openspec: {sorted(a.keys() - b.keys())}; "
            f"only in panther: {sorted(b.keys() - a.keys())}"
        )
    for key in sorted(a.keys() & b.keys()):
        if a[key]["valid"] != b[key]["valid"]:
            report.append(
                f"{key}: openspec valid={a[key]['valid']}, panther valid={b[key]['valid']}"
            )
        if issues(a[key]) != issues(b[key]):
            report.append(
                f"{key}: issues differ\n    openspec: {sorted(issues(a[key]).elements(), key=str)}"
                f"\n    panther:  {sorted(issues(b[key]).elements(), key=str)}"
            )
    assert not report, "\n".join(report)
    assert theirs["summary"] == ours["summary"]


@pytest.mark.scenario("spec-management: Same archive results")
@pytest.mark.parametrize("change", sorted([*corpus.CHANGES, *corpus.LINKED]))
def test_archive_outcome_and_files_match(tmp_path: Path, tree: Path, change: str) -> None:
    results = {}
    for tool, run in (("openspec", openspec), ("panther", panther)):
        copy = tmp_path / tool
        shutil.copytree(tree, copy, symlinks=True)
        proc = run(copy, "archive", change, "--yes", "--json")
        payload = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
        code = (
            (payload.get("status") or [{}])[0].get("code") if not payload.get("archive") else "ok"
        )
        files = {
            str(p.relative_to(copy)): p.read_bytes() for p in sorted(copy.rglob("*")) if p.is_file()
        }
        results[tool] = (proc.returncode, code, files, payload.get("archive"))
    (rc_a, code_a, files_a, arch_a), (rc_b, code_b, files_b, arch_b) = (
        results["openspec"],
        results["panther"],
    )
    assert (rc_a, code_a) == (rc_b, code_b), f"openspec {rc_a} {code_a}; panther {rc_b} {code_b}"
    assert files_a.keys() == files_b.keys(), sorted(files_a.keys() ^ files_b.keys())
    differing = [k for k in files_a if files_a[k] != files_b[k]]
    assert not differing, "\n".join(
        f"{k}:\n--- openspec\n{files_a[k].decode()}\n--- panther\n{files_b[k].decode()}"
        for k in differing
    )
    if arch_a:
        assert arch_b is not None, "openspec archived the change, panther did not"
        assert arch_a["archivedAs"] == arch_b["archivedAs"]
        assert arch_a.get("totals") == arch_b.get("totals")
        assert arch_a["specsUpdated"] == arch_b["specsUpdated"]


@pytest.mark.scenario("spec-management: Same task progress as the OpenSpec CLI")
def test_list_task_progress_matches(tree: Path) -> None:
    def progress(proc_stdout: str) -> dict[str, tuple[int, int, str]]:
        return {
            c["name"]: (c["completedTasks"], c["totalTasks"], c["status"])
            for c in json.loads(proc_stdout)["changes"]
        }

    theirs = progress(openspec(tree, "list", "--json").stdout)
    ours = progress(panther(tree, "list", "--json").stdout)
    assert theirs == ours


@pytest.mark.scenario("spec-management: Same artifact status and dashboard as the OpenSpec CLI")
def test_status_and_view_match(tree: Path) -> None:
    def artifacts(stdout: str) -> dict[str, object]:
        # A change whose metadata cannot be loaded has an error entry instead of artifacts.
        return {
            c["changeName"]: [(a["id"], a["status"]) for a in c["artifacts"]]
            if "artifacts" in c
            else c["status"][0]["code"]
            for c in json.loads(stdout)["changes"]
        }

    assert artifacts(openspec(tree, "status", "--all", "--json").stdout) == artifacts(
        panther(tree, "status", "--all", "--json").stdout
    )
    text = openspec(tree, "view").stdout
    summary = json.loads(panther(tree, "view", "--json").stdout)["summary"]
    figures = {
        "Specifications": f"{summary['specs']} specs, {summary['requirements']} requirements",
        "Draft Changes": str(summary["draftChanges"]),
        "Active Changes": f"{summary['activeChanges']} in progress",
        "Completed Changes": str(summary["completedChanges"]),
        "Task Progress": f"{summary['completedTasks']}/{summary['totalTasks']}",
    }
    for label, figure in figures.items():
        assert f"{label}: {figure}" in text, (label, figure, text[:600])
