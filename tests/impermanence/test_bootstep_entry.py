"""The step's entry, `pantheros-btrfs rollback` (D155): the usual boot runs in the helper alone,
with the script's checks; every other state, and every other mode, goes to the script untouched.

The script beside the helper is replaced here by one that only says it ran: a state the helper
took for the usual boot (and changed) where the script is owed it would show as a changed root
or a missing line; a usual boot the helper left to the script would show as the line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.impermanence import bootstep
from tests.bootstep_variant import NEW_SUFFIX
from tests.helpers import Pfs, copy_image, mounted_image, subvolume_ids

pytestmark = pytest.mark.root

SCRIPT_RAN = "the script ran"
STAND_IN = f"#!/bin/sh\necho '{SCRIPT_RAN}' \"$@\" >&2\nexit 97\n"


@pytest.fixture
def entry(workdir: Path) -> Path:
    """A copy of the built helper with the stand-in script beside it."""
    where = workdir / "entry"
    where.mkdir(mode=0o700)
    shutil.copy2(bootstep.artifact_dir() / bootstep.HELPER, where / bootstep.HELPER)
    (where / bootstep.SCRIPT).write_text(STAND_IN)
    os.chmod(where / bootstep.SCRIPT, 0o700)
    return where


def run_entry(entry: Path, pfs: Pfs, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = bootstep.argv(pfs.manifest, top=pfs.top)
    assert argv[1] == bootstep.ENTRY
    return subprocess.run(
        [str(entry / bootstep.HELPER), *argv[1:], *extra],
        capture_output=True,
        text=True,
        check=False,
    )


def usual(pfs: Pfs) -> None:
    """The usual boot's state: a dirty root, the fresh root stage 2 prepared beside it."""
    assert bootstep.run(pfs.manifest, top=pfs.top)[1] == 0
    assert bootstep.prepare(pfs.manifest, top=pfs.top).result == "prepared"
    pfs.dirty("etc/hostname", "this boot")
    btrfs.sync(pfs.top)


def new_root(pfs: Pfs) -> Path:
    return pfs.top / ("root" + NEW_SUFFIX)


def test_the_usual_boot_runs_in_the_helper_alone(pfs: Pfs, entry: Path) -> None:
    usual(pfs)
    prepared_id = btrfs.subvolume_info(new_root(pfs)).id
    report = pfs.top / "run" / "report"
    proc = run_entry(entry, pfs, "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    assert SCRIPT_RAN not in proc.stderr
    outcome = bootstep.parse_report(proc.stdout)
    assert report.read_text() == proc.stdout
    assert outcome.result == "fresh"
    assert outcome.root_id == prepared_id == btrfs.subvolume_info(pfs.root).id
    assert outcome.notes == ["using the fresh root prepared for this boot"]
    [archived] = outcome.archived
    assert outcome.actions == [
        "exchange root and root.pantheros-new (RENAME_EXCHANGE)",
        f"archive root.pantheros-new as old_roots/{archived}",
    ]
    assert (pfs.old_roots / archived / "etc" / "hostname").read_text() == "this boot"
    assert not os.path.lexists(new_root(pfs))
    # The same state run again is no longer the usual boot: the script's.
    again = run_entry(entry, pfs)
    assert again.returncode == 97
    assert SCRIPT_RAN in again.stderr


def _read_only(pfs: Pfs) -> None:
    btrfs.set_readonly(new_root(pfs), True)


def _changed(pfs: Pfs) -> None:
    (new_root(pfs) / "planted").write_text("x")


def _blank_writable(pfs: Pfs) -> None:
    btrfs.set_readonly(pfs.top / "root-blank", False)


def _record_of_another(pfs: Pfs) -> None:
    record = pfs.top / ".pantheros-blank"
    record.write_text(record.read_text().replace("name=root-blank", "name=other"))


def _no_record(pfs: Pfs) -> None:
    (pfs.top / ".pantheros-blank").unlink()


def _record_key(key: str, value: str | None) -> Callable[[Pfs], None]:
    def change(pfs: Pfs) -> None:
        record = pfs.top / ".pantheros-blank"
        lines = record.read_text().splitlines()
        kept = [line for line in lines if not line.startswith(f"{key}=")]
        assert len(kept) == len(lines) - 1
        record.write_text("\n".join(kept + ([f"{key}={value}"] if value else [])) + "\n")

    return change


def _blank_changed(pfs: Pfs) -> None:
    blank = pfs.top / "root-blank"
    btrfs.set_readonly(blank, False)
    (blank / "planted").write_text("in every new root")
    btrfs.set_readonly(blank, True)


def _old_roots_a_symlink(pfs: Pfs) -> None:
    pfs.old_roots.rename(pfs.top / "elsewhere")
    pfs.old_roots.symlink_to("elsewhere")


def _old_roots_missing(pfs: Pfs) -> None:
    for name in pfs.old_root_names():
        btrfs.delete_subvolume(pfs.old_roots / name)
    pfs.old_roots.rmdir()


def _from_the_root(pfs: Pfs) -> None:
    btrfs.delete_subvolume(new_root(pfs))
    btrfs.snapshot(pfs.root, new_root(pfs))


def _root_fresh(pfs: Pfs) -> None:
    btrfs.delete_subvolume(pfs.root)
    btrfs.snapshot(pfs.top / "root-blank", pfs.root)


def _root_read_only(pfs: Pfs) -> None:
    btrfs.set_readonly(pfs.root, True)


def _root_missing(pfs: Pfs) -> None:
    btrfs.delete_subvolume(pfs.root)


def _empty_design(pfs: Pfs) -> None:
    pfs.configure(design="empty-subvolume")


STATES: dict[str, Callable[[Pfs], None]] = {
    "read-only prepared root": _read_only,
    "prepared root changed": _changed,
    "blank writable": _blank_writable,
    "blank record names another": _record_of_another,
    "no blank record": _no_record,
    "blank record with another uuid": _record_key("uuid", "0" * 8 + "-0000-0000-0000-" + "0" * 12),
    "blank record with another otransid": _record_key("otransid", "1"),
    "blank record without an id": _record_key("id", None),
    "blank changed since made": _blank_changed,
    "old roots a symlink": _old_roots_a_symlink,
    "old roots missing": _old_roots_missing,
    "prepared from the root": _from_the_root,
    "root already fresh": _root_fresh,
    "root missing": _root_missing,
    "root read-only": _root_read_only,
    "empty-subvolume design": _empty_design,
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_every_other_state_goes_to_the_script_untouched(pfs: Pfs, entry: Path, state: str) -> None:
    usual(pfs)
    STATES[state](pfs)
    btrfs.sync(pfs.top)
    before = subvolume_ids(pfs)
    proc = run_entry(entry, pfs)
    assert proc.returncode == 97, proc.stderr
    assert SCRIPT_RAN in proc.stderr
    assert proc.stdout == ""
    assert subvolume_ids(pfs) == before, "the helper changed nothing before the script ran"


@pytest.mark.parametrize("mode", ["--dry-run", "--prepare"])
def test_other_modes_go_to_the_script_with_the_same_arguments(
    pfs: Pfs, entry: Path, mode: str
) -> None:
    usual(pfs)
    before = subvolume_ids(pfs)
    proc = run_entry(entry, pfs, mode)
    assert proc.returncode == 97
    args = bootstep.argv(pfs.manifest, top=pfs.top)[2:]
    assert f"{SCRIPT_RAN} {' '.join(args)} {mode}" in proc.stderr
    assert subvolume_ids(pfs) == before


@pytest.mark.parametrize("mounted", ["root", "root" + NEW_SUFFIX])
def test_a_root_mounted_goes_to_the_script(
    pfs: Pfs, entry: Path, workdir: Path, mounted: str
) -> None:
    usual(pfs)
    where = workdir / "mounted-root"
    where.mkdir()
    subprocess.run(["mount", "-o", f"subvol={mounted}", pfs.device + "p2", str(where)], check=True)
    try:
        before = subvolume_ids(pfs)
        proc = run_entry(entry, pfs)
        assert proc.returncode == 97
        assert SCRIPT_RAN in proc.stderr
        assert subvolume_ids(pfs) == before
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_a_record_without_its_last_newline_is_read_by_the_script(pfs: Pfs) -> None:
    """The format allows it; the helper's answer to the script then still ends its line, so the
    script is not left waiting for the answer's end (a hang until the unit's timeout)."""
    usual(pfs)
    record = pfs.top / ".pantheros-blank"
    record.write_text(record.read_text().rstrip("\n"))
    proc = subprocess.run(
        bootstep.argv(pfs.manifest, top=pfs.top, dry_run=True),
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert bootstep.parse_report(proc.stdout).result == "would-roll-back"


def test_an_archive_name_taken_leaves_the_swap_to_the_script(pfs: Pfs, entry: Path) -> None:
    """The helper exchanged the roots, then found the old root's name taken: the script (here
    the stand-in) is run on roots already swapped, which the script's recovery finishes."""
    usual(pfs)
    root = btrfs.subvolume_info(pfs.root)
    stamp = root.created.strftime("%Y%m%dT%H%M%SZ")
    (pfs.old_roots / f"{root.otransid:012d}-{stamp}").mkdir()
    prepared_id = btrfs.subvolume_info(new_root(pfs)).id
    proc = run_entry(entry, pfs)
    assert proc.returncode == 97, proc.stderr
    assert "archiving the previous root here failed" in proc.stderr
    assert btrfs.subvolume_info(pfs.root).id == prepared_id
    assert btrfs.subvolume_info(new_root(pfs)).id == root.id
    # The real script finishes it: the previous root kept under another name.
    outcome, code = bootstep.run(pfs.manifest, top=pfs.top)
    assert code == 0, outcome.error
    assert "finishing an interrupted rollback" in outcome.notes
    [archived] = outcome.archived
    assert (pfs.old_roots / archived / "etc" / "hostname").read_text() == "this boot"


def test_the_helper_reports_what_the_script_reports(pfs: Pfs, workdir: Path) -> None:
    """The same usual boot on two copies of one disk: the script alone on one, the entry on the
    other; the reports are the same, byte for byte."""
    usual(pfs)
    copy_image(pfs, workdir / "copy.img")
    with mounted_image(workdir / "copy.img", workdir / "copy-top", pfs.manifest_path) as copy:
        argv = bootstep.argv(pfs.manifest, top=copy.top)
        script = [str(bootstep.artifact_dir() / bootstep.SCRIPT), *argv[2:]]
        by_script = subprocess.run(script, capture_output=True, text=True, check=False)
        assert by_script.returncode == 0, by_script.stderr
        by_entry = subprocess.run(
            bootstep.argv(pfs.manifest, top=pfs.top), capture_output=True, text=True, check=False
        )
        assert by_entry.returncode == 0, by_entry.stderr
        assert by_entry.stdout == by_script.stdout
        assert bootstep.parse_report(by_entry.stdout).result == "fresh"


def test_a_read_only_dirty_root_is_archived(pfs: Pfs) -> None:
    """The script makes it writable to move it (btrfs moves a read-only subvolume to another
    directory only then), and the fresh root boots."""
    usual(pfs)
    btrfs.set_readonly(pfs.root, True)
    dirty_id = btrfs.subvolume_info(pfs.root).id
    outcome, code = bootstep.run(pfs.manifest, top=pfs.top)
    assert code == 0, outcome.error
    assert outcome.result == "fresh"
    [archived] = outcome.archived
    assert btrfs.subvolume_info(pfs.old_roots / archived).id == dirty_id
    assert (pfs.old_roots / archived / "etc" / "hostname").read_text() == "this boot"
    assert not btrfs.subvolume_info(pfs.root).readonly
