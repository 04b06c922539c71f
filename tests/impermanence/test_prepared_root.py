"""The next boot's root, prepared by stage 2 (`--prepare`, D150): used by the boot step only while
it is still a read-only, unchanged snapshot of the recorded blank; the first boot, and a prepared
root that is stale or tampered with, take the step's own path (snapshot, exchange, archive,
commit), and the root that was beside it is archived, never deleted."""

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
from tests.helpers import Pfs, next_root_problem
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
    assert any(a.startswith("commit") for a in first.actions), first.actions
    assert PREPARED not in first.notes
    fresh_and_writable(pfs)
    [archived] = first.archived
    # The boot path never seals old roots: stage 2 does.
    assert not btrfs.subvolume_info(pfs.old_roots / archived).readonly
    prepared = prepare(pfs)
    assert f"made old root {archived} read-only" in prepared.notes
    assert btrfs.subvolume_info(pfs.old_roots / archived).readonly
    info = btrfs.subvolume_info(new_root(pfs))
    assert info.readonly
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
    assert not any(a.startswith("commit") for a in outcome.actions), outcome.actions
    assert "make root writable (its commit makes the renames durable)" in outcome.actions
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
    btrfs.set_readonly(tampered, False)
    change(tampered)
    btrfs.set_readonly(tampered, True)
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


def test_a_prepared_root_made_writable_is_not_taken_as_prepared(pfs: Pfs) -> None:
    """Writable and unchanged is what a first-boot run killed after its snapshot leaves: that
    run's path finishes it (reused, then its own commit), never the prepared root's."""
    step(pfs)
    prepare(pfs)
    btrfs.set_readonly(new_root(pfs), False)
    btrfs.sync(pfs.top)
    pfs.dirty("etc/hostname", "this boot")
    outcome = step(pfs)
    assert PREPARED not in outcome.notes
    assert "reusing the fresh root of an interrupted rollback" in outcome.notes
    assert any(a.startswith("commit") for a in outcome.actions), outcome.actions
    fresh_and_writable(pfs)


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
    """Read-only and unchanged, but a snapshot of another subvolume (here the dirty root)."""
    step(pfs)
    pfs.dirty("etc/hostname", "planted")
    btrfs.snapshot(pfs.root, new_root(pfs), readonly=True)
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


def test_prepare_seals_a_fresh_root_an_interrupted_run_left_writable(pfs: Pfs) -> None:
    step(pfs)
    prepare(pfs)
    left = new_root(pfs)
    left_id = btrfs.subvolume_info(left).id
    btrfs.set_readonly(left, False)
    outcome = prepare(pfs)
    assert "make root.pantheros-new read-only" in outcome.actions
    info = btrfs.subvolume_info(left)
    assert (info.id, info.readonly) == (left_id, True)
