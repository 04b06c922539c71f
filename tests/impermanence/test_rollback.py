"""`panther rollback` on real btrfs: every test asserts the safety invariants."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.impermanence import rollback
from tests import bootstep_variant
from tests.bootstep_variant import FAST_STEPS, NEW_SUFFIX, READONLY_STEPS, SLOW_STEPS
from tests.helpers import (
    Pfs,
    assert_invariants,
    cleanup_under,
    copy_image,
    kept_hashes,
    mounted_image,
    next_root_problem,
    subvolume_ids,
)

pytestmark = pytest.mark.root

Run = Callable[..., subprocess.CompletedProcess[str]]


def boot(pfs: Pfs, run_rollback: Run, *extra: str) -> subprocess.CompletedProcess[str]:
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    proc = run_rollback(*extra)
    assert_invariants(pfs, before, ids)
    return proc


def is_fresh(pfs: Pfs) -> bool:
    info = btrfs.subvolume_info(pfs.root)
    blank = btrfs.subvolume_info(pfs.top / "root-blank")
    return info.ctransid <= info.otransid and info.parent_uuid == blank.uuid


@pytest.mark.scenario("impermanence-rollback: Root archived and fresh")
def test_rollback_archives_the_root_and_starts_fresh(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty("etc/hostname", "dirty")
    first_root = btrfs.subvolume_info(pfs.root)
    proc = boot(pfs, run_rollback)
    assert proc.returncode == 0, proc.stderr
    assert is_fresh(pfs)
    assert not (pfs.root / "etc").exists()
    [name] = pfs.old_root_names()
    archived = pfs.old_roots / name
    assert (archived / "etc" / "hostname").read_text() == "dirty"
    assert btrfs.subvolume_info(archived).id == first_root.id
    assert btrfs.subvolume_info(archived).readonly
    assert name.startswith(f"{first_root.otransid:012d}-")
    record = json.loads((pfs.top / "persist" / ".pantheros" / "rollback.json").read_text())
    assert record["result"] == "fresh"
    assert record["archived"] == [name]


@pytest.mark.scenario("boot-step: Already fresh root left alone")
def test_a_fresh_root_is_left_alone(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty()
    assert boot(pfs, run_rollback).returncode == 0
    ids = subvolume_ids(pfs)
    root_id = btrfs.subvolume_info(pfs.root).id
    again = boot(pfs, run_rollback)
    assert again.returncode == 0
    assert "already fresh" in again.stdout
    assert subvolume_ids(pfs) == ids
    assert btrfs.subvolume_info(pfs.root).id == root_id


def test_dry_run_changes_nothing(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty()
    # Committed now: a commit made meanwhile by anyone's sync(2) cannot move the generation.
    btrfs.sync(pfs.top)
    ids = subvolume_ids(pfs)
    generation = btrfs.subvolume_info(pfs.root).generation
    proc = run_rollback("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "exchange root and root.pantheros-new" in proc.stdout
    assert "dry run: nothing was changed" in proc.stdout
    assert subvolume_ids(pfs) == ids
    assert btrfs.subvolume_info(pfs.root).generation == generation


def test_fifty_boots_with_retention(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(keep_min=3, max_count=10, max_age_days=30)
    for number in range(50):
        pfs.dirty("var/lib/boot-count", str(number))
        proc = boot(pfs, run_rollback, "--gc")
        assert proc.returncode == 0, proc.stderr
        names = pfs.old_root_names()
        assert len(names) == min(number + 1, 10)
        by_creation = sorted(names, key=lambda n: btrfs.subvolume_info(pfs.old_roots / n).otransid)
        assert names == by_creation, "names sort in creation order"
    newest = pfs.old_roots / pfs.old_root_names()[-1]
    assert (newest / "var/lib/boot-count").read_text() == "49"


@pytest.mark.scenario("boot-step: Nested subvolumes go with their root")
def test_nested_subvolumes_three_levels_deep(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(keep_min=1, max_count=1)
    machines = pfs.root / "var/lib/machines"
    machines.mkdir(parents=True)
    btrfs.create_subvolume(machines / "a")
    btrfs.create_subvolume(machines / "a" / "b")
    btrfs.create_subvolume(machines / "a" / "b" / "c")
    (machines / "a" / "b" / "c" / "file").write_text("deep")
    assert boot(pfs, run_rollback).returncode == 0
    [name] = pfs.old_root_names()
    deep = pfs.old_roots / name / "var/lib/machines/a/b/c/file"
    assert deep.read_text() == "deep"
    assert not (pfs.root / "var/lib").exists()
    # The next boot pushes that root out: it goes with every nested subvolume, and nothing else.
    pfs.dirty()
    proc = boot(pfs, run_rollback, "--gc")
    assert proc.returncode == 0, proc.stderr
    assert name not in pfs.old_root_names()
    paths = set(subvolume_ids(pfs).values())
    assert not any("machines" in p for p in paths)
    assert len(pfs.old_root_names()) == 1


@pytest.mark.scenario("impermanence-rollback: Stray directory kept")
def test_plain_directory_and_ancient_mtimes_are_not_deleted(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(keep_min=1, max_age_days=1, max_count=2)
    planted = pfs.old_roots / "2019-01-01_00:00:00"
    planted.mkdir()
    (planted / "precious").write_text("not a subvolume")
    long_ago = time.time() - 3650 * 86400
    os.utime(planted, (long_ago, long_ago))
    os.utime(pfs.old_roots, (long_ago, long_ago))
    for _ in range(3):
        pfs.dirty()
        proc = boot(pfs, run_rollback, "--gc")
        assert proc.returncode == 0, proc.stderr
    assert (planted / "precious").read_text() == "not a subvolume"
    assert len(pfs.old_root_names()) == 2
    assert pfs.old_roots.is_dir()


def test_a_root_with_an_old_mtime_is_archived_and_kept(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(keep_min=1, max_age_days=30)
    pfs.dirty()
    old = time.time() - 45 * 86400
    os.utime(pfs.root, (old, old))
    assert boot(pfs, run_rollback, "--gc").returncode == 0
    pfs.dirty()
    assert boot(pfs, run_rollback, "--gc").returncode == 0
    # Both old roots were created today by btrfs' clock: neither is 45 days old.
    assert len(pfs.old_root_names()) == 2


@pytest.mark.scenario("impermanence-rollback: Clock far off")
@pytest.mark.parametrize("years", [10, -10])
def test_clock_far_off_does_not_prune_by_age(pfs: Pfs, run_rollback: Run, years: int) -> None:
    pfs.configure(keep_min=1, max_age_days=1)
    for _ in range(3):
        pfs.dirty()
        assert boot(pfs, run_rollback).returncode == 0
    ids = subvolume_ids(pfs)
    plan, deleted = rollback.gc(
        pfs.top, pfs.manifest, dry_run=False, now=time.time() + years * 365 * 86400
    )
    assert deleted == []
    assert subvolume_ids(pfs) == ids
    assert plan.notes
    assert "age-based pruning skipped" in plan.notes[0]
    # With the clock right again, age applies.
    plan, deleted = rollback.gc(pfs.top, pfs.manifest, dry_run=False, now=time.time() + 3 * 86400)
    assert len(pfs.old_root_names()) == 1


def test_missing_root_is_created(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty()
    os.rename(pfs.root, pfs.old_roots / "moved-away-by-hand")  # what a naive script leaves
    proc = boot(pfs, run_rollback)
    assert proc.returncode == 0, proc.stderr
    assert is_fresh(pfs)
    assert "there was no root subvolume" in proc.stdout


@pytest.mark.scenario("impermanence-rollback: Missing blank snapshot")
@pytest.mark.parametrize(("policy", "code"), [("fail-closed", 1), ("boot-dirty", 6)])
def test_missing_blank_follows_the_fail_policy(
    pfs: Pfs, run_rollback: Run, policy: str, code: int
) -> None:
    pfs.configure(fail_policy=policy)
    pfs.dirty("etc/hostname", "still here")
    btrfs.set_readonly(pfs.top / "root-blank", False)
    os.rename(pfs.top / "root-blank", pfs.top / "blank-renamed")
    root_id = btrfs.subvolume_info(pfs.root).id
    proc = run_rollback()
    assert proc.returncode == code
    assert "blank snapshot root-blank is missing" in proc.stderr
    assert btrfs.subvolume_info(pfs.root).id == root_id
    assert (pfs.root / "etc/hostname").read_text() == "still here"
    record = json.loads((pfs.top / "persist" / ".pantheros" / "rollback.json").read_text())
    assert record["result"] == "dirty"
    assert record["policy"] == policy


def test_something_else_at_the_root_name_is_refused(pfs: Pfs, run_rollback: Run) -> None:
    leftover = pfs.top / ("root" + NEW_SUFFIX)
    leftover.mkdir()
    (leftover / "data").write_text("a plain directory")
    proc = run_rollback()
    assert proc.returncode != 0
    assert "is not a subvolume; refusing to touch it" in proc.stderr
    assert (leftover / "data").read_text() == "a plain directory"


def test_empty_subvolume_design(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(design="empty-subvolume")
    pfs.dirty()
    assert boot(pfs, run_rollback).returncode == 0
    assert list(pfs.root.iterdir()) == []
    assert btrfs.subvolume_info(pfs.root).parent_uuid is None
    assert "already fresh" in boot(pfs, run_rollback).stdout


@pytest.mark.scenario("boot-step: Full disk")
def test_full_filesystem(pfs: Pfs, run_rollback: Run) -> None:
    pfs.configure(keep_min=1, fail_policy="boot-dirty")
    for number in range(3):
        pfs.dirty("big", "")
        with open(pfs.root / "big", "wb") as f:
            f.write(os.urandom(40 * 1024 * 1024))
        pfs.dirty("n", str(number))
        assert boot(pfs, run_rollback).returncode == 0
    filler = pfs.root / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(os.urandom(4 * 1024 * 1024))
                f.flush()
        except OSError:
            pass
    btrfs.sync(pfs.top)
    proc = boot(pfs, run_rollback)
    record_file = pfs.top / "persist" / ".pantheros" / "rollback.json"
    record = json.loads(record_file.read_text())
    if "could not record the rollback result" in proc.stderr:
        record = {"result": "fresh" if proc.returncode == 0 else "dirty"}  # disk too full for it
    if proc.returncode == 0:
        assert is_fresh(pfs)
        assert record["result"] == "fresh"
    else:
        assert proc.returncode == 6, proc.stderr
        assert record["result"] == "dirty"
        assert filler.exists()
    # The newest old root (keep_min=1) always survives, full disk or not.
    assert len(pfs.old_root_names()) >= 1


CRASH_POINTS = [("slow", step) for step in SLOW_STEPS] + [("fast", step) for step in FAST_STEPS]
# A read-only prepared root (as stage 2 made them before D154): its flag change is a commit.
CRASH_POINTS += [("readonly", step) for step in READONLY_STEPS]
# A prepared root changed since made: made writable (to be moved), archived, then the slow path.
CRASH_POINTS += [("stale", "unseal"), ("stale", "archive"), ("stale", "create")]


def _crashed_root(pfs: Pfs, earlier: list[str], stale: bool) -> str:
    """The old root that holds the root of the crashed run (a stale prepared root is the other
    new one)."""
    new = [n for n in pfs.old_root_names() if n not in earlier]
    assert len(new) == 1 + stale, new
    [name] = [n for n in new if (pfs.old_roots / n / "etc/hostname").exists()]
    return name


@pytest.mark.scenario("impermanence-rollback: Crash at any step")
@pytest.mark.parametrize(("path", "step"), CRASH_POINTS)
def test_crash_after_each_step_is_completed_by_the_next_run(
    pfs: Pfs, run_rollback: Run, workdir: Path, path: str, step: str
) -> None:
    """SIGKILL after each step, then the image as the disk holds it (a power cut: only what was
    committed), each finished by the next run. slow: no prepared root (the first boot); fast:
    the root stage 2 prepared (a `panther rollback` made it). The step forces no commit (D154):
    after its last step the disk may hold any of its states."""
    prepared = pfs.top / ("root" + NEW_SUFFIX)
    if path != "slow":
        pfs.dirty("etc/hostname", "an earlier boot")
        assert run_rollback().returncode == 0
        assert not btrfs.subvolume_info(prepared).readonly
    if path == "readonly":
        btrfs.set_readonly(prepared, True)
    if path == "stale":
        btrfs.set_readonly(prepared, False)
        (prepared / "planted").write_text("not fresh")
        btrfs.set_readonly(prepared, True)
    earlier = pfs.old_root_names()
    pfs.dirty("etc/hostname", "before the crash")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    killed = run_rollback(env=bootstep_variant.env(kill_after=step))
    assert killed.returncode != 0
    assert "the boot step was killed by SIGKILL" in killed.stderr, killed.stderr
    assert btrfs.is_subvolume(pfs.root)
    # Power loss: the image as the disk holds it right now.
    crash_image = workdir / "crash.img"
    copy_image(pfs, crash_image)

    proc = run_rollback()
    assert proc.returncode == 0, proc.stderr
    assert_invariants(pfs, before, ids)
    assert is_fresh(pfs)
    assert not btrfs.subvolume_info(pfs.root).readonly
    name = _crashed_root(pfs, earlier, path == "stale")
    assert (pfs.old_roots / name / "etc/hostname").read_text() == "before the crash"
    assert btrfs.subvolume_info(pfs.old_roots / name).readonly
    assert not (pfs.root / "planted").exists()

    with mounted_image(crash_image, workdir / "crash-top", pfs.manifest_path) as copy:
        assert btrfs.is_subvolume(copy.root), "a power cut never leaves the disk without a root"
        from tests.helpers import panther

        proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(copy.top))
        assert proc.returncode == 0, proc.stderr
        assert is_fresh(copy)
        assert not btrfs.subvolume_info(copy.root).readonly
        assert next_root_problem(copy.top, copy.manifest) is None
        name = _crashed_root(copy, earlier, path == "stale")
        assert (copy.old_roots / name / "etc/hostname").read_text() == "before the crash"
        assert not (copy.root / "planted").exists()


def test_top_must_be_the_top_level(pfs: Pfs, workdir: Path) -> None:
    from tests.helpers import one_line_error, panther

    proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.root))
    assert "is not the top level" in one_line_error(proc)


def test_cleanup_helper_leaves_other_mounts_alone(workdir: Path) -> None:
    """The fixtures' cleanup touches only what lives under the test's directory."""
    outside = Path(shutil.which("true") or "/bin/true")
    cleanup_under(workdir / "nothing-here")
    assert outside.exists()
