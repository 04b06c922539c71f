"""The blank's identity (issue 20.3, D80): recorded when the disk is laid out, changed only by
`panther blank bless`, and any other blank refused by the boot step, status, diff and audit.

The attack: snapshot the blank, add a file and a mode 0777 directory, delete the blank, and
snapshot the changed tree read-only under the blank's name. The new blank is read-only and
unchanged since it was made, so the rules before this passed it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.impermanence import blank
from pantheros.machine import Machine
from pantheros.storage import blankrecord
from tests.helpers import Pfs, one_line_error, panther
from tests.impermanence.test_bootstep_hostile import script, step

pytestmark = pytest.mark.root


def swap_the_blank(top: Path, name: str = "root-blank") -> None:
    """The issue's sequence, on a mounted top level."""
    blank_path = top / name
    btrfs.snapshot(blank_path, top / "copy")
    (top / "copy" / "planted").write_text("in every new root")
    (top / "copy" / "evil").mkdir()
    os.chmod(top / "copy" / "evil", 0o777)
    btrfs.delete_subvolume(blank_path)
    btrfs.snapshot(top / "copy", blank_path, readonly=True)
    btrfs.delete_subvolume(top / "copy")
    btrfs.sync(top)


def test_format_records_the_blank_it_made(pfs: Pfs) -> None:
    recorded = blankrecord.read(pfs.top)
    assert recorded is not None
    info = btrfs.subvolume_info(pfs.top / "root-blank")
    assert recorded.matches("root-blank", info)
    assert (recorded.id, recorded.uuid) == (info.id, str(info.uuid))
    assert blank.problem(pfs.top, pfs.manifest) is None


@pytest.mark.parametrize("policy", ["boot-dirty", "fail-closed"])
def test_the_boot_step_refuses_a_replaced_blank(pfs: Pfs, policy: str) -> None:
    swap_the_blank(pfs.top)
    info = btrfs.subvolume_info(pfs.top / "root-blank")
    assert info.readonly
    assert info.ctransid <= info.otransid, "the old rules pass this blank"
    pfs.dirty("etc/hostname", "kept")
    root_id = btrfs.subvolume_info(pfs.root).id
    proc = step(pfs, "--fail-policy", policy)
    assert proc.returncode == (1 if policy == "fail-closed" else 6), proc.stderr
    assert "the blank snapshot root-blank is not the one recorded" in proc.stderr
    assert "panther blank bless" in proc.stderr
    assert btrfs.subvolume_info(pfs.root).id == root_id
    assert not (pfs.root / "planted").exists()
    assert (pfs.root / "etc/hostname").read_text() == "kept"
    problem = blank.problem(pfs.top, pfs.manifest)
    assert problem is not None
    assert "is not the one recorded" in problem


@pytest.mark.parametrize(
    "kind", ["missing", "symlink", "fifo", "directory", "garbage", "escaped", "huge"]
)
def test_a_missing_or_planted_record_is_refused_without_hanging(pfs: Pfs, kind: str) -> None:
    record = pfs.top / blankrecord.RECORD
    good = record.read_bytes()
    record.unlink()
    if kind == "symlink":
        (pfs.top / "elsewhere").write_bytes(good)
        record.symlink_to("elsewhere")
    elif kind == "fifo":
        os.mkfifo(record)
    elif kind == "directory":
        record.mkdir()
    elif kind == "garbage":
        record.write_bytes(good.replace(b"uuid=", b"uuid=0") + b"\rname=root-blank\n")
    elif kind == "escaped":  # one spelling per value: both readers refuse another
        record.write_bytes(good.replace(b"name=root-blank", b"name=root\\x2dblank"))
    elif kind == "huge":
        record.write_bytes(good + b"note=" + b"x" * 10_000 + b"\n")
    pfs.dirty()
    proc = subprocess.run(script(pfs), capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 6, proc.stderr
    assert "panther blank bless" in proc.stderr
    problem = blank.problem(pfs.top, pfs.manifest)
    assert problem is not None
    assert "panther blank bless" in problem


def test_a_lab_whose_blank_was_replaced(lab: Path) -> None:
    """status, diff and audit refuse it; bless shows what differs, records only on --yes."""
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        swap_the_blank(top)
    status = panther("status", "--lab", str(lab), "--json")
    assert status.returncode == 1
    assert json.loads(status.stdout)["blank"]["trusted"] is False
    assert "is not the one recorded" in json.loads(status.stdout)["blank"]["problem"]
    diff = panther("diff", "--lab", str(lab), "--json")
    assert diff.returncode == 1
    assert json.loads(diff.stdout)["trusted"] is False
    audit = panther("audit", "--lab", str(lab), "--json")
    [finding] = [f for f in json.loads(audit.stdout)["findings"] if f["id"] == "impermanence.blank"]
    assert finding["status"] == "fail"
    assert "is not the one recorded" in finding["reason"]
    assert "panther blank bless --yes" in finding["fix"]["other"]

    (lab / "mnt" / "junk").write_text("x")
    reboot = panther("lab", "reboot", str(lab))
    assert reboot.returncode == 6, reboot.stderr
    assert (lab / "mnt" / "junk").exists()
    assert not (lab / "mnt" / "planted").exists()

    shown = panther("blank", "bless", "--lab", str(lab))
    assert shown.returncode == 2, shown.stderr
    assert "give --yes" in one_line_error(shown)
    assert "differs: uuid:" in shown.stdout
    assert "content compared with nothing (the recorded blank is gone)" in shown.stdout
    assert "+ /planted  (file, mode 0644)" in shown.stdout
    assert "+ /evil  (directory, mode 0777)" in shown.stdout
    assert panther("status", "--lab", str(lab)).returncode == 1, "nothing was recorded"

    as_json = panther("blank", "bless", "--lab", str(lab), "--yes", "--json")
    assert as_json.returncode == 0, as_json.stderr
    result = json.loads(as_json.stdout)
    assert result["recorded"] is True
    assert {"change": "+", "path": "/planted", "detail": "file, mode 0644"} in result["content"]
    assert panther("status", "--lab", str(lab)).returncode == 0
    again = panther("blank", "bless", "--lab", str(lab))
    assert again.returncode == 0
    assert "nothing to do" in again.stderr
    reboot = panther("lab", "reboot", str(lab))
    assert reboot.returncode == 0, reboot.stderr
    assert (lab / "mnt" / "planted").exists(), "the blessed blank is what boots"


def test_bless_compares_with_the_recorded_blank_when_it_still_exists(lab: Path) -> None:
    """A new blank beside the old one: bless shows the content differences between them."""
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        btrfs.snapshot(top / "root-blank", top / "new")
        (top / "new" / "added").write_text("x")
        os.rename(top / "root-blank", top / "old-blank")
        btrfs.snapshot(top / "new", top / "root-blank", readonly=True)
        btrfs.delete_subvolume(top / "new")
        btrfs.sync(top)
    shown = panther("blank", "bless", "--lab", str(lab))
    assert shown.returncode == 2
    assert "content compared with the recorded blank, now at old-blank" in shown.stdout
    assert "+ /added  (file, mode 0644)" in shown.stdout
    lines = [line for line in shown.stdout.splitlines() if line.startswith("  ")]
    assert [line for line in lines if line.startswith(("  +", "  -", "  ~"))] == [
        "  + /added  (file, mode 0644)"
    ]


def test_bless_refuses_a_blank_that_is_not_trustworthy_itself(lab: Path) -> None:
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        btrfs.set_readonly(top / "root-blank", False)
    proc = panther("blank", "bless", "--lab", str(lab), "--yes")
    assert proc.returncode == 5
    assert "cannot be recorded" in one_line_error(proc)
    assert "writable" in one_line_error(proc)
    with machine.top_level() as top:
        assert blankrecord.read(top) is not None
        assert btrfs.subvolume_info(top / "root-blank").readonly is False


def test_bless_waits_for_the_machine_lock(lab: Path) -> None:
    """It changes what every boot trusts: one writer at a time (invariant 8)."""
    from pantheros.lab.lab import Lab

    with Lab(lab).lock():
        busy = panther("blank", "bless", "--lab", str(lab), "--no-wait")
        assert busy.returncode == 5
        assert "busy" in one_line_error(busy)
