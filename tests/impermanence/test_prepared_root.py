"""The next boot's root, prepared by stage 2 (`--prepare`, D150, D154): used by the boot step only
while it is still an unchanged snapshot of the recorded blank; the first boot, and a prepared root
that is stale or tampered with, take the step's own path (snapshot, exchange, archive), and the
root that was beside it is archived, never deleted. The step forces no commit (D154): a power cut
before the next one finds the step undone, and the next run does it again."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.impermanence import bootstep
from pantheros.storage import blankrecord
from pantheros.storage.blankrecord import BlankIdentity
from tests.bootstep_variant import NEW_SUFFIX
from tests.helpers import Pfs, copy_image, mounted_image, next_root_problem
from tests.impermanence.test_blank_identity import swap_the_blank

pytestmark = pytest.mark.root

PREPARED = "using the fresh root prepared for this boot"
OWN_PATH = "snapshot root-blank as root.pantheros-new"


def new_root(pfs: Pfs) -> Path:
    return pfs.top / ("root" + NEW_SUFFIX)


def step(pfs: Pfs) -> bootstep.Outcome:
    """The boot step alone (no stage 2), as the initrd runs it."""
    outcome, code = bootstep.run(pfs.manifest, top=pfs.top)
    assert code == 0, outcome.error
    return outcome


def prepare(pfs: Pfs) -> bootstep.Outcome:
    outcome = bootstep.prepare(pfs.manifest, top=pfs.top)
    assert outcome.result == "prepared", outcome.error
    assert next_root_problem(pfs.top, pfs.manifest) is None
    return outcome


def fresh_and_writable(pfs: Pfs) -> None:
    info = btrfs.subvolume_info(pfs.root)
    blank = btrfs.subvolume_info(pfs.top / "root-blank")
    assert info.parent_uuid == blank.uuid
    assert info.ctransid <= info.otransid, "the new root is unchanged since it was made"
    assert not info.readonly
    assert not (pfs.root / "etc" / "hostname").exists()


def test_the_first_boot_makes_its_own_root_then_stage_two_prepares_the_next(pfs: Pfs) -> None:
    assert not os.path.lexists(new_root(pfs))
    pfs.dirty("etc/hostname", "installed")
    first = step(pfs)
    assert OWN_PATH in first.actions
    assert not any(a.startswith("commit") for a in first.actions), first.actions
    assert PREPARED not in first.notes
    fresh_and_writable(pfs)
    [archived] = first.archived
    # The boot path never seals old roots: stage 2 does.
    assert not btrfs.subvolume_info(pfs.old_roots / archived).readonly
    prepared = prepare(pfs)
    assert f"made old root {archived} read-only" in prepared.notes
    assert btrfs.subvolume_info(pfs.old_roots / archived).readonly
    info = btrfs.subvolume_info(new_root(pfs))
    assert not info.readonly, "prepared writable: the step needs no flag change, so no commit"
    # Run again, it finds the root ready and changes nothing.
    again = bootstep.prepare(pfs.manifest, top=pfs.top)
    assert again.result == "already-prepared"
    assert btrfs.subvolume_info(new_root(pfs)).id == info.id


def test_a_prepared_root_is_swapped_in_with_no_snapshot_and_no_commit_of_its_own(
    pfs: Pfs,
) -> None:
    step(pfs)
    prepare(pfs)
    prepared_id = btrfs.subvolume_info(new_root(pfs)).id
    pfs.dirty("etc/hostname", "this boot")
    dirty_id = btrfs.subvolume_info(pfs.root).id
    outcome = step(pfs)
    assert PREPARED in outcome.notes
    assert OWN_PATH not in outcome.actions
    assert outcome.actions == [
        "exchange root and root.pantheros-new (RENAME_EXCHANGE)",
        f"archive root.pantheros-new as old_roots/{outcome.archived[0]}",
    ]
    assert btrfs.subvolume_info(pfs.root).id == prepared_id == outcome.root_id
    fresh_and_writable(pfs)
    assert not os.path.lexists(new_root(pfs))
    [archived] = outcome.archived
    kept = btrfs.subvolume_info(pfs.old_roots / archived)
    assert kept.id == dirty_id
    assert (pfs.old_roots / archived / "etc" / "hostname").read_text() == "this boot"


def _written(path: Path) -> None:
    (path / "planted").write_text("in every new root")


def _chmod(path: Path) -> None:
    os.chmod(path / "persist", 0o777)


def _made_and_removed(path: Path) -> None:
    # The same content as before, but a later generation: not the root as it was made.
    (path / "gone").write_text("x")
    (path / "gone").unlink()


@pytest.mark.parametrize(
    "change", [_written, _chmod, _made_and_removed], ids=["written", "chmod", "generation"]
)
def test_a_prepared_root_changed_since_made_is_archived_and_not_used(
    pfs: Pfs, change: Callable[[Path], None]
) -> None:
    step(pfs)
    prepare(pfs)
    tampered = new_root(pfs)
    tampered_id = btrfs.subvolume_info(tampered).id
    change(tampered)
    btrfs.sync(pfs.top)
    pfs.dirty("etc/hostname", "this boot")
    outcome = step(pfs)
    assert PREPARED not in outcome.notes
    assert "root.pantheros-new was left over: archived, not deleted" in outcome.notes
    assert OWN_PATH in outcome.actions
    fresh_and_writable(pfs)
    assert not (pfs.root / "planted").exists()
    assert btrfs.subvolume_info(pfs.root).id != tampered_id
    kept = {btrfs.subvolume_info(pfs.old_roots / name).id for name in outcome.archived}
    assert tampered_id in kept, "the changed root is kept as an old root, never deleted"


def test_a_read_only_prepared_root_is_used_and_made_writable(pfs: Pfs) -> None:
    """Read-only and unchanged is how stage 2 prepared the next root before D154: still a fresh
    root, used, and made writable (the kernel commits that flag change)."""
    step(pfs)
    prepare(pfs)
    btrfs.set_readonly(new_root(pfs), True)
    prepared_id = btrfs.subvolume_info(new_root(pfs)).id
    pfs.dirty("etc/hostname", "this boot")
    outcome = step(pfs)
    assert PREPARED in outcome.notes
    assert "make root writable (the kernel commits the flag change)" in outcome.actions
    assert outcome.root_id == prepared_id
    fresh_and_writable(pfs)


@pytest.mark.parametrize("fsynced", [None, "persist", "root"])
def test_a_power_cut_before_the_next_commit_is_finished_by_the_next_run(
    pfs: Pfs, workdir: Path, fsynced: str | None
) -> None:
    """The step forces no commit (D154): with nothing synced since, the disk holds the step
    undone. The booted system may fsync before the first commit, in /persist or in its root:
    btrfs then commits the whole transaction (the renames with it), or logs the file alone, and
    mounting replays it (a file replayed into the root still named as the prepared one makes
    that root changed since made: kept, never booted). Each state is finished by the next run,
    and what was fsynced is there."""
    step(pfs)
    prepare(pfs)
    pfs.dirty("etc/hostname", "this boot")
    btrfs.sync(pfs.top)
    prepared_id = btrfs.subvolume_info(new_root(pfs)).id
    assert PREPARED in step(pfs).notes
    if fsynced is not None:
        path = pfs.top / fsynced / "fsynced"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.write(fd, b"written after the step, before any commit")
            os.fsync(fd)
        finally:
            os.close(fd)
    # The power goes (commit=300: no background commit came between).
    copy_image(pfs, workdir / "cut.img")
    with mounted_image(workdir / "cut.img", workdir / "cut-top", pfs.manifest_path) as copy:
        undone = (copy.root / "etc" / "hostname").exists()
        if fsynced is None:
            assert undone, "nothing committed the step's renames: the disk holds it undone"
            assert btrfs.subvolume_info(new_root(copy)).id == prepared_id
        if fsynced == "persist":
            assert (copy.top / "persist" / "fsynced").exists(), "an fsynced file survives"
        elif fsynced == "root":
            where = new_root(copy) if undone else copy.root
            assert (where / "fsynced").exists(), "an fsynced file survives"
        outcome = step(copy)
        fresh_and_writable(copy)
        assert not (copy.root / "fsynced").exists()
        if undone:
            kept = {btrfs.subvolume_info(copy.old_roots / n).id for n in outcome.archived}
            changed = (new_root(copy) / "fsynced").exists() if fsynced == "root" else False
            assert (prepared_id in kept) == changed
            assert (PREPARED in outcome.notes) == (not changed)
        hostnames = [
            (copy.old_roots / n / "etc" / "hostname").read_text()
            for n in copy.old_root_names()
            if (copy.old_roots / n / "etc" / "hostname").exists()
        ]
        assert "this boot" in hostnames, "the root of the cut boot's predecessor is kept"


def test_a_root_prepared_from_a_blank_since_replaced_is_stale(pfs: Pfs) -> None:
    step(pfs)
    prepare(pfs)
    stale_id = btrfs.subvolume_info(new_root(pfs)).id
    swap_the_blank(pfs.top)
    # As `panther blank bless` records it (record_blank keeps a record of another blank).
    blessed = btrfs.subvolume_info(pfs.top / "root-blank")
    blankrecord.write(pfs.top, BlankIdentity.of("root-blank", blessed, "test: blessed"))
    btrfs.sync(pfs.top)
    pfs.dirty("etc/hostname", "this boot")
    outcome = step(pfs)
    assert PREPARED not in outcome.notes
    assert "root.pantheros-new was left over: archived, not deleted" in outcome.notes
    fresh_and_writable(pfs)
    assert (pfs.root / "planted").exists(), "the root is made from the blank blessed now"
    kept = {btrfs.subvolume_info(pfs.old_roots / name).id for name in outcome.archived}
    assert stale_id in kept


def test_a_prepared_root_from_elsewhere_is_not_used(pfs: Pfs) -> None:
    """Unchanged, but a snapshot of another subvolume (here the dirty root)."""
    step(pfs)
    pfs.dirty("etc/hostname", "planted")
    btrfs.snapshot(pfs.root, new_root(pfs))
    planted_id = btrfs.subvolume_info(new_root(pfs)).id
    btrfs.sync(pfs.top)
    outcome = step(pfs)
    assert PREPARED not in outcome.notes
    fresh_and_writable(pfs)
    kept = {btrfs.subvolume_info(pfs.old_roots / name).id for name in outcome.archived}
    assert planted_id in kept


def test_a_failed_prepare_leaves_the_next_boot_its_own_path(pfs: Pfs) -> None:
    """Stage 2 says it and notes it; the next boot makes its root itself."""
    step(pfs)
    new_root(pfs).mkdir()  # a plain directory where the prepared root goes: refused
    proc = subprocess.run(
        bootstep.argv(pfs.manifest, top=pfs.top, prepare=True),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    outcome = bootstep.parse_report(proc.stdout, bootstep.PREPARE_RESULTS)
    assert outcome.result == "unprepared"
    assert outcome.error
    new_root(pfs).rmdir()
    pfs.dirty("etc/hostname", "this boot")
    assert OWN_PATH in step(pfs).actions
    fresh_and_writable(pfs)


def test_prepare_makes_a_read_only_prepared_root_writable(pfs: Pfs) -> None:
    """As stage 2 prepared it before D154: kept, and made writable off the boot path."""
    step(pfs)
    prepare(pfs)
    left = new_root(pfs)
    left_id = btrfs.subvolume_info(left).id
    btrfs.set_readonly(left, True)
    outcome = prepare(pfs)
    assert "make root.pantheros-new writable" in outcome.actions
    info = btrfs.subvolume_info(left)
    assert (info.id, info.readonly) == (left_id, False)
