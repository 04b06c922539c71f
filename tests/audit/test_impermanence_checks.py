"""Impermanence checks on a real lab: rolled back, a tampered blank, a failed rollback and an
unmounted /persist each fail their check, with a fix."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pantheros import btrfs
from pantheros.impermanence.rollback import RECORD_FILE
from pantheros.machine import Machine
from pantheros.manifest.models import RECORD_DIR
from tests.helpers import panther

pytestmark = pytest.mark.root


def audit(lab: Path) -> dict[str, dict[str, Any]]:
    proc = panther("audit", "--lab", str(lab), "--json")
    assert proc.returncode in (0, 1, 7), proc.stderr
    return {f["id"]: f for f in json.loads(proc.stdout)["findings"] if f["area"] == "impermanence"}


def status(findings: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {cid.removeprefix("impermanence."): f["status"] for cid, f in findings.items()}


def assert_fails_with_a_fix(f: dict[str, Any], why: str) -> None:
    assert f["status"] == "fail", f
    assert why in f["reason"], f
    assert f["fix"]["other"] or f["fix"]["nixos"]


@pytest.mark.scenario("audit-evidence: Tampered blank fails a check")
def test_a_rolled_back_lab_and_three_ways_to_break_it(lab: Path) -> None:
    before = status(audit(lab))
    # Fresh from `lab up`: nothing fails. The lab has not booted: there is no rollback to judge
    # yet, and what a first boot makes (machine-id, SSH host keys, state directories) is there
    # and bind-mounted.
    assert before["root_fresh"] == "skipped"
    assert before["rollback"] == "skipped"
    for check in ("blank", "mounts", "persistence", "identity", "persist_top"):
        assert before[check] == "pass", (check, before)

    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr
    booted = status(audit(lab))
    checks = ("root_fresh", "blank", "old_roots", "rollback", "mounts", "persistence", "identity")
    for check in (*checks, "persist_top"):
        assert booted[check] == "pass", (check, booted)

    # A tampered blank: writable for a moment, a file written, read-only again.
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        blank = top / machine.manifest.storage.blank_snapshot
        btrfs.set_readonly(blank, False)
        (blank / "etc-backdoor").write_text("x")
        btrfs.set_readonly(blank, True)
        btrfs.sync(top)
    found = audit(lab)
    assert_fails_with_a_fix(found["impermanence.blank"], "changed after it was made")
    assert found["impermanence.rollback"]["status"] == "pass"

    # A failed rollback: the record says dirty.
    record = lab / "mnt/persist" / RECORD_DIR / RECORD_FILE
    data = json.loads(record.read_text())
    data.update(result="dirty", error="no space left on device")
    record.write_text(json.dumps(data))
    found = audit(lab)
    assert_fails_with_a_fix(found["impermanence.rollback"], "no space left on device")
    assert found["impermanence.rollback"]["evidence"]["path"] == "/persist/.pantheros/rollback.json"
    assert found["impermanence.mounts"]["status"] == "pass"

    # /persist not mounted: the record is still read through the top level.
    subprocess.run(["umount", str(lab / "mnt/persist")], check=True)
    found = audit(lab)
    assert_fails_with_a_fix(found["impermanence.mounts"], "/persist is not mounted")
    assert found["impermanence.rollback"]["status"] == "fail"
    assert "no space left" in found["impermanence.rollback"]["reason"]


def test_writable_old_roots_and_a_world_writable_persist_entry_fail(lab: Path) -> None:
    assert panther("lab", "reboot", str(lab)).returncode == 0
    (lab / "mnt/persist/drop").mkdir()
    (lab / "mnt/persist/drop").chmod(0o777)
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        old = top / machine.manifest.storage.old_roots
        victim = next(p for p in old.iterdir() if btrfs.is_subvolume(p))
        btrfs.set_readonly(victim, False)
    found = audit(lab)
    assert_fails_with_a_fix(found["impermanence.persist_top"], "/persist/drop")
    assert "chmod o-w '/persist/drop'" in found["impermanence.persist_top"]["fix"]["other"]
    assert_fails_with_a_fix(found["impermanence.old_roots"], f"writable: {victim.name}")


def test_persistent_paths_and_identity_follow_the_bind_mounts(lab: Path) -> None:
    found = audit(lab)  # the first boot made them (lab.firstboot) and mounted them
    assert found["impermanence.persistence"]["status"] == "pass"
    assert found["impermanence.identity"]["status"] == "pass"
    root = lab / "mnt"
    subprocess.run(["umount", str(root / "etc/machine-id")], check=True)
    found = audit(lab)
    assert_fails_with_a_fix(
        found["impermanence.identity"], "/etc/machine-id: not bind-mounted from persistent storage"
    )
    assert_fails_with_a_fix(found["impermanence.persistence"], "/etc/machine-id")
    (root / "persist/etc/machine-id").unlink()
    found = audit(lab)
    identity = found["impermanence.identity"]
    assert_fails_with_a_fix(identity, "/etc/machine-id: no copy in persistent storage")
    # The fix names this lab, and it works.
    command = shlex.split(identity["fix"]["other"].split(" (")[0])
    assert command == ["panther", "lab", "reboot", str(lab)]
    assert f"--lab '{lab}'" in found["impermanence.persistence"]["fix"]["other"]
    assert panther(*command[1:]).returncode == 0
    found = audit(lab)
    assert found["impermanence.identity"]["status"] == "pass"
    assert found["impermanence.persistence"]["status"] == "pass"


def test_on_the_host_the_record_must_be_from_this_boot(lab: Path) -> None:
    """The host rules (this boot's record, the btrfs root mounted at the real /), run against
    the lab's filesystem as if it were the host's."""
    from pantheros.audit import impermanence
    from pantheros.audit.checks import Finding, Status
    from pantheros.audit.system import System

    assert panther("lab", "reboot", str(lab)).returncode == 0
    lab_machine = Machine.select(str(lab))
    as_host = Machine(manifest=lab_machine.manifest, root=lab / "mnt")
    system = System(base=lab / "mnt", live=False)

    def check(name: str, top: Path) -> Finding:
        record, problem = impermanence.read_record(top, lab_machine)
        facts = impermanence.Facts(as_host, system, top, record, problem)
        f = Finding(name, "impermanence", "", "high", Status.SKIPPED)
        impermanence.PROBES[name](facts, f)
        return f

    with lab_machine.top_level() as top:
        assert check("impermanence.rollback", top).status is Status.PASS  # written this boot
        record = top / "persist" / RECORD_DIR / RECORD_FILE
        data = json.loads(record.read_text())
        record.write_text(json.dumps({**data, "boot_id": "an-earlier-boot"}))
        f = check("impermanence.rollback", top)
        assert (f.status, f.reason) == (Status.FAIL, "the record is from an earlier boot")
        f = check("impermanence.root_fresh", top)
        assert (f.status, f.reason) == (
            Status.FAIL,
            "no rollback ran this boot (the record is older)",
        )
    system.tree.close()


def test_the_lab_report_is_valid_sarif(lab: Path, tmp_path: Path) -> None:
    import jsonschema

    from tests.audit.test_sarif import sarif_schema

    out = tmp_path / "lab.sarif"
    proc = panther("audit", "--lab", str(lab), "--sarif", "-o", str(out))
    assert proc.returncode in (1, 7), proc.stderr
    data = json.loads(out.read_text())
    jsonschema.validate(data, sarif_schema())
    run = data["runs"][0]
    assert run["originalUriBaseIds"]["ROOT"]["uri"] == f"file://{(lab / 'mnt').resolve()}/"
    record = next(r for r in run["results"] if r["ruleId"] == "impermanence.rollback")
    uri = record["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "persist/.pantheros/rollback.json"
