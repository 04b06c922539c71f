"""The blank is trusted only while unchanged; gc never deletes an old root that is mounted."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.errors import Refused
from pantheros.impermanence import blank
from pantheros.lab.lab import Lab
from pantheros.storage import blankrecord
from pantheros.storage.blankrecord import BlankIdentity
from tests.helpers import Pfs, one_line_error, panther

pytestmark = pytest.mark.root


@contextmanager
def top_level(lab: Path, workdir: Path) -> Iterator[Path]:
    """The lab's btrfs top level, mounted for the test itself."""
    dev = json.loads(panther("lab", "status", str(lab), "--json").stdout)["device"]
    top = workdir / "top"
    top.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "subvolid=5", f"{dev}p2", str(top)], check=True)
    try:
        yield top
    finally:
        subprocess.run(["umount", str(top)], check=True)


def reboot(lab: Path) -> None:
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr


def test_a_blank_snapshotted_every_boot_is_still_trusted(lab: Path) -> None:
    for _ in range(2):
        reboot(lab)
    proc = panther("status", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["blank"] == {
        "name": "root-blank",
        "trusted": True,
        "problem": None,
    }


@pytest.mark.scenario("state-safety: Changed blank is not trusted")
def test_a_changed_blank_is_reported_loudly(bare_lab: Path, workdir: Path) -> None:
    lab = bare_lab
    with top_level(lab, workdir) as top:
        snapshot = top / "root-blank"
        btrfs.set_readonly(snapshot, False)
        (snapshot / "planted").write_text("in every new root")
        btrfs.set_readonly(snapshot, True)
    (lab / "mnt" / "planted").write_text("in every new root")  # as the next root would carry it

    proc = panther("status", "--lab", str(lab), "--json")
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["blank"]["trusted"] is False
    assert "changed after it was made" in report["blank"]["problem"]
    assert report["root"]["state"] == "untrusted"
    assert "the blank cannot be trusted" in proc.stderr
    text = panther("status", "--lab", str(lab))
    assert "NOT TRUSTED" in text.stdout

    diff = panther("diff", "--lab", str(lab), "--json")
    assert diff.returncode == 1
    assert "this answer cannot be trusted" in diff.stderr
    result = json.loads(diff.stdout)
    assert result["trusted"] is False
    # The planted file is in the blank too, so the diff cannot see it: hence the warning.
    assert not any(c["path"] == "/planted" for c in result["changes"]), result["changes"]


def test_a_writable_blank_is_not_trusted(lab: Path, workdir: Path) -> None:
    with top_level(lab, workdir) as top:
        btrfs.set_readonly(top / "root-blank", False)
    proc = panther("status", "--lab", str(lab), "--json")
    assert proc.returncode == 1
    assert "is writable" in json.loads(proc.stdout)["blank"]["problem"]


def set_max_count(lab: Path, count: int) -> None:
    manifest = lab / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["impermanence"]["retention"].update(keep_min=1, max_count=count)
    manifest.write_text(json.dumps(doc))


def gc(lab: Path) -> dict[str, object]:
    proc = panther("roots", "gc", "--json", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout)
    return result


@pytest.mark.parametrize("how", ["roots mount", "bind mount of a directory inside"])
def test_gc_keeps_an_old_root_that_is_mounted(lab: Path, workdir: Path, how: str) -> None:
    for _ in range(3):
        (lab / "mnt" / "etc").mkdir(exist_ok=True)
        reboot(lab)
    names = [row["name"] for row in json.loads(panther("roots", "list", "--json", "--lab",
             str(lab)).stdout)["roots"]]  # fmt: skip
    assert len(names) == 3
    oldest = names[-1]
    view = workdir / "view"
    view.mkdir()
    if how == "roots mount":
        mounted = panther("roots", "mount", oldest, str(view), "--lab", str(lab))
        assert mounted.returncode == 0, mounted.stderr
    else:
        with top_level(lab, workdir) as top:
            subprocess.run(
                ["mount", "--bind", str(top / "old_roots" / oldest / "etc"), str(view)], check=True
            )
    set_max_count(lab, 1)
    try:
        dry = panther("roots", "gc", "--dry-run", "--json", "--lab", str(lab))
        decisions = {d["name"]: d for d in json.loads(dry.stdout)["decisions"]}
        assert decisions[oldest]["keep"] is True
        assert decisions[oldest]["reason"] == f"mounted at {view}"
        result = gc(lab)
        assert result["deleted"] == [f"old_roots/{names[1]}"]
        assert btrfs.is_subvolume(view) if how == "roots mount" else view.is_dir()
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert gc(lab)["deleted"] == [f"old_roots/{oldest}"]


def test_the_trust_rule_on_a_blank_made_transactions_after_its_source_changed(pfs: Pfs) -> None:
    """A snapshot inherits its source's ctransid, older than its own creation: still unchanged."""
    blank_path = pfs.top / "root-blank"
    btrfs.delete_subvolume(blank_path)
    pfs.dirty("etc/motd", "hello")
    btrfs.sync(pfs.top)
    btrfs.sync(pfs.top)
    btrfs.snapshot(pfs.root, blank_path, readonly=True)
    btrfs.sync(pfs.top)
    info = btrfs.subvolume_info(blank_path)
    assert info.ctransid < info.otransid
    # A new blank is not the one recorded until it is blessed (D80).
    assert "is not the one recorded" in str(blank.problem(pfs.top, pfs.manifest))
    blessed = btrfs.subvolume_info(blank_path)
    blankrecord.write(pfs.top, BlankIdentity.of("root-blank", blessed, "the test blesses it"))
    assert blank.problem(pfs.top, pfs.manifest) is None
    btrfs.snapshot(blank_path, pfs.top / "next-root")  # what every boot does
    btrfs.sync(pfs.top)
    assert btrfs.subvolume_info(blank_path).generation != info.generation
    assert blank.problem(pfs.top, pfs.manifest) is None
    btrfs.set_readonly(blank_path, False)
    os.chmod(blank_path / "etc", 0o777)
    btrfs.set_readonly(blank_path, True)
    btrfs.sync(pfs.top)
    problem = blank.problem(pfs.top, pfs.manifest)
    assert problem is not None
    assert "changed after it was made" in problem


def test_gc_holds_the_machine_lock(lab: Path) -> None:
    for _ in range(2):
        (lab / "mnt" / "etc").mkdir(exist_ok=True)  # a changed root is archived at reboot
        reboot(lab)
    set_max_count(lab, 1)

    def count() -> int:
        listing = panther("roots", "list", "--json", "--lab", str(lab))
        return len(json.loads(listing.stdout)["roots"])

    with Lab(lab).lock():
        busy = panther("roots", "gc", "--no-wait", "--lab", str(lab))
        assert busy.returncode == 5
        assert "is busy" in one_line_error(busy)
    assert count() == 2
    deleted = gc(lab)["deleted"]
    assert isinstance(deleted, list)
    assert len(deleted) == 1
    assert count() == 1


def test_a_layout_run_again_keeps_the_record_and_never_records_another_blank(pfs: Pfs) -> None:
    """`disk format`'s record step, run again (disko's hook twice), changes nothing; over a
    record of another blank it refuses: re-recording is `panther blank bless`'s, after a look."""
    before = blankrecord.read(pfs.top)
    assert before is not None
    blankrecord.record_blank(pfs.top, "root-blank", "run again")
    assert blankrecord.read(pfs.top) == before
    blank_path = pfs.top / "root-blank"
    btrfs.delete_subvolume(blank_path)
    btrfs.snapshot(pfs.root, blank_path, readonly=True)
    with pytest.raises(Refused, match="records another blank"):
        blankrecord.record_blank(pfs.top, "root-blank", "laid out by panther")
    assert blankrecord.read(pfs.top) == before
