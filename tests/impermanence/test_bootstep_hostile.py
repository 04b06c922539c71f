"""The boot step against a hostile user and a careless operator, on real btrfs.

Each test plants one surprise (a symlink, a stray, a second run, a kill, a full disk, a
collision, a bad argument) and checks the safety invariants of DESIGN.md: a root always exists,
nothing but a verified old root is deleted, nothing is written through a symlink or across a
mount, and a refusal comes before any change.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.errors import PantherError
from pantheros.impermanence import bootstep
from tests import bootstep_variant
from tests.bootstep_variant import FAST_STEPS, NEW_SUFFIX, SLOW_STEPS, STEPS
from tests.helpers import REPO, Pfs, assert_invariants, kept_hashes, subvolume_ids

pytestmark = pytest.mark.root

Run = Callable[..., subprocess.CompletedProcess[str]]


def script(pfs: Pfs, *override: str, top: Path | str | None = None) -> list[str]:
    """The boot step's command line for the test filesystem, with flags replaced."""
    args = bootstep.argv(pfs.manifest, top=pfs.top)
    if top is not None:
        args[args.index("--top") + 1] = str(top)
    for flag, value in zip(override[::2], override[1::2], strict=True):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    return args


def step(
    pfs: Pfs, *override: str, top: Path | str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        script(pfs, *override, top=top), capture_output=True, text=True, check=False, cwd=cwd
    )


def is_fresh(pfs: Pfs) -> bool:
    info = btrfs.subvolume_info(pfs.root)
    blank = btrfs.subvolume_info(pfs.top / "root-blank")
    return info.ctransid <= info.otransid and info.parent_uuid == blank.uuid


def unchanged(pfs: Pfs, root_id: int, ids: dict[int, str]) -> None:
    """A refusal: the same root, the same subvolumes, no half-made root."""
    assert btrfs.subvolume_info(pfs.root).id == root_id
    assert subvolume_ids(pfs) == ids
    assert not os.path.lexists(pfs.top / ("root" + NEW_SUFFIX))


# --- the old-roots location and the root name ---------------------------------------------


@pytest.mark.parametrize("kind", ["symlink-into-persist", "symlink-outside", "file", "mount"])
def test_a_bad_old_roots_location_is_refused_before_any_change(
    pfs: Pfs, run_rollback: Run, workdir: Path, kind: str
) -> None:
    """Invariant 7: the previous root is never moved through a symlink or across a mount."""
    pfs.dirty("etc/hostname", "the previous root")
    os.rmdir(pfs.old_roots)
    outside = workdir / "outside"
    outside.mkdir()
    if kind == "symlink-into-persist":
        os.symlink("persist", pfs.old_roots)
    elif kind == "symlink-outside":
        os.symlink(outside, pfs.old_roots)
    elif kind == "file":
        pfs.old_roots.write_text("not a directory")
    else:
        pfs.old_roots.mkdir()
        subprocess.run(
            ["mount", "--bind", str(pfs.top / "persist"), str(pfs.old_roots)], check=True
        )
    btrfs.sync(pfs.top)
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    root_id = btrfs.subvolume_info(pfs.root).id
    try:
        proc = run_rollback()
        assert proc.returncode == 6, proc.stderr
        assert "old-roots location" in proc.stderr
        unchanged(pfs, root_id, ids)
        assert kept_hashes(pfs) == before
        assert list(outside.iterdir()) == []
        assert (pfs.root / "etc/hostname").read_text() == "the previous root"
    finally:
        if kind == "mount":
            subprocess.run(["umount", str(pfs.old_roots)], check=True)


def test_a_symlink_inside_a_nested_path_is_refused(pfs: Pfs) -> None:
    """Every component counts, not only the last: a/old_roots where a -> persist."""
    pfs.dirty()
    os.symlink("persist", pfs.top / "a")
    ids, root_id = subvolume_ids(pfs), btrfs.subvolume_info(pfs.root).id
    proc = step(pfs, "--old-roots", "a/old_roots")
    assert proc.returncode == 6, proc.stderr
    assert "symlink" in proc.stderr
    unchanged(pfs, root_id, ids)
    assert not (pfs.top / "persist" / "old_roots").exists()


@pytest.mark.parametrize("kind", ["symlink", "directory", "file"])
def test_a_root_name_that_is_not_a_subvolume_is_refused(
    pfs: Pfs, run_rollback: Run, kind: str
) -> None:
    """Never act on a name alone: the thing at the root's name must be a subvolume."""
    aside = pfs.top / "root-aside"
    os.rename(pfs.root, aside)
    if kind == "symlink":
        os.symlink("persist", pfs.root)
    elif kind == "directory":
        pfs.root.mkdir()
        (pfs.root / "data").write_text("a plain directory")
    else:
        pfs.root.write_text("a file")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    proc = run_rollback()
    assert proc.returncode == 6, proc.stderr
    assert "is not a subvolume; refusing to touch it" in proc.stderr
    assert subvolume_ids(pfs) == ids
    assert kept_hashes(pfs) == before
    assert os.path.islink(pfs.root) == (kind == "symlink")
    if kind == "directory":
        assert (pfs.root / "data").read_text() == "a plain directory"


def test_a_root_mounted_over_by_another_subvolume_is_refused(pfs: Pfs, run_rollback: Run) -> None:
    """A bind mount at the root's name shows another subvolume's facts: it is somebody's tree."""
    subprocess.run(["mount", "--bind", str(pfs.top / "persist"), str(pfs.root)], check=True)
    try:
        before, ids = kept_hashes(pfs), subvolume_ids(pfs)
        proc = run_rollback()
        assert proc.returncode == 6, proc.stderr
        assert "is mounted at" in proc.stderr
        assert kept_hashes(pfs) == before
    finally:
        subprocess.run(["umount", str(pfs.root)], check=True)
    assert subvolume_ids(pfs) == ids


# --- strays ---------------------------------------------------------------------------------

STRAY_NAMES = [
    "with space",
    "new\nline",
    "-rf",
    "--help",
    "*",
    "[ab]",
    "?",
    "0 0 1 x",
    "$(touch pwned)",
]


def test_strays_with_hostile_names_are_kept_and_do_not_block_boots(
    pfs: Pfs, run_rollback: Run
) -> None:
    """Files, directories and subvolumes with any name: kept, and the boot still works."""
    pfs.configure(keep_min=1)
    for i, name in enumerate(STRAY_NAMES):
        if i % 3 == 0:
            btrfs.create_subvolume(pfs.old_roots / name)
        elif i % 3 == 1:
            (pfs.old_roots / name).mkdir()
        else:
            (pfs.old_roots / name).write_text(name)
    strays = {name: (pfs.old_roots / name).is_dir() for name in STRAY_NAMES}
    for number in range(2):
        pfs.dirty("n", str(number))
        before, ids = kept_hashes(pfs), subvolume_ids(pfs)
        proc = run_rollback("--gc")
        assert proc.returncode == 0, proc.stderr
        assert_invariants(pfs, before, ids)
        assert is_fresh(pfs)
    assert {n: (pfs.old_roots / n).is_dir() for n in STRAY_NAMES} == strays
    assert not (pfs.top / "pwned").exists()
    assert not Path("pwned").exists()


# --- two at once ------------------------------------------------------------------------------


def _hang(pfs: Pfs, after: str) -> subprocess.Popen[str]:
    """A boot step that stops (holding its lock) right after a step."""
    proc = subprocess.Popen(
        [*bootstep_variant.entry(), *script(pfs)[2:]],
        env={**os.environ, **bootstep_variant.env(hang_after=after)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert f"hanging after {after}" in line, line
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stderr is not None:
        proc.stderr.close()


def test_two_rollbacks_at_once_archive_the_root_once(pfs: Pfs) -> None:
    pfs.dirty("etc/hostname", "once")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    procs = [
        subprocess.Popen(script(pfs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], results
    outcomes = sorted(bootstep.parse_report(out).result for out, _ in results)
    assert outcomes == ["already-fresh", "already-fresh", "fresh"]
    assert_invariants(pfs, before, ids)
    [name] = pfs.old_root_names()
    assert (pfs.old_roots / name / "etc/hostname").read_text() == "once"


def test_a_second_rollback_waits_for_a_stuck_one_then_finishes_it(pfs: Pfs) -> None:
    pfs.dirty("etc/hostname", "stuck")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    stuck = _hang(pfs, "exchange")
    try:
        second = subprocess.Popen(
            script(pfs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        time.sleep(1.5)
        assert second.poll() is None, "the second run must wait for the lock"
    finally:
        _kill(stuck)
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    assert "finishing an interrupted rollback" in out
    assert_invariants(pfs, before, ids)
    [name] = pfs.old_root_names()
    assert (pfs.old_roots / name / "etc/hostname").read_text() == "stuck"


def test_gc_waits_for_the_boot_step(pfs: Pfs) -> None:
    """Retention gc takes the same lock: it never prunes in the middle of a rollback."""
    pfs.configure(keep_min=1, max_count=1)
    pfs.dirty()
    assert step(pfs).returncode == 0
    [first] = pfs.old_root_names()
    pfs.dirty("etc/hostname", "racing")
    stuck = _hang(pfs, "archive")
    gc_code = (
        "import sys; from pathlib import Path; from pantheros import manifest;"
        "from pantheros.impermanence import rollback;"
        "print(rollback.gc(Path(sys.argv[1]), manifest.load(sys.argv[2]), dry_run=False)[1])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    try:
        gc = subprocess.Popen(
            [sys.executable, "-c", gc_code, str(pfs.top), str(pfs.manifest_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        time.sleep(1.5)
        assert gc.poll() is None, "gc must wait for the boot step's lock"
        # The archived root is writable and unsealed right now: exactly what gc must not see.
        [name] = [n for n in pfs.old_root_names() if n != first]
        assert not btrfs.subvolume_info(pfs.old_roots / name).readonly
    finally:
        _kill(stuck)
    out, err = gc.communicate(timeout=60)
    assert gc.returncode == 0, err
    assert first in out
    assert pfs.old_root_names() == [name]
    assert (pfs.old_roots / name / "etc/hostname").read_text() == "racing"
    assert btrfs.is_subvolume(pfs.root)
    assert not os.path.lexists(pfs.top / ("root" + NEW_SUFFIX))


# --- crashes during recovery ------------------------------------------------------------------


def test_a_second_sigkill_during_recovery_is_finished_by_the_third_run(
    pfs: Pfs, run_rollback: Run
) -> None:
    """Every pair (kill after step A, then kill the recovery after step B) on one filesystem, on
    both paths: without a prepared root (the first boot's) and with one (D150). B may be a step
    the recovery does not take: it then finishes."""
    pairs = [("slow", a, b) for a in SLOW_STEPS for b in STEPS]
    pairs += [("fast", a, b) for a in FAST_STEPS for b in STEPS]
    prepared = pfs.top / ("root" + NEW_SUFFIX)
    for number, (path, first, second) in enumerate(pairs):
        # Each finished run prepared the next root; the slow path is the one without it.
        if path == "slow" and os.path.lexists(prepared):
            btrfs.delete_subvolume(prepared)
        assert os.path.lexists(prepared) == (path == "fast"), (path, first, second)
        pfs.dirty("etc/hostname", f"boot {number}")
        before, ids = kept_hashes(pfs), subvolume_ids(pfs)
        killed = run_rollback(env=bootstep_variant.env(kill_after=first))
        assert "killed by SIGKILL" in killed.stderr, (first, killed.stderr)
        assert btrfs.is_subvolume(pfs.root)
        again = run_rollback(env=bootstep_variant.env(kill_after=second))
        assert btrfs.is_subvolume(pfs.root)
        assert again.returncode == 0 or "killed by SIGKILL" in again.stderr, again.stderr
        proc = run_rollback()
        assert proc.returncode == 0, (first, second, proc.stderr)
        assert_invariants(pfs, before, ids)
        assert is_fresh(pfs)
        for name in pfs.old_root_names():
            assert btrfs.subvolume_info(pfs.old_roots / name).readonly
    kept = sorted((pfs.old_roots / n / "etc/hostname").read_text() for n in pfs.old_root_names())
    assert kept == sorted(f"boot {n}" for n in range(len(pairs)))


def test_the_report_names_the_fresh_root(pfs: Pfs) -> None:
    """Stage 2 records root_id: it must be the root that boots, not the one just archived."""
    pfs.dirty()
    old_id = btrfs.subvolume_info(pfs.root).id
    proc = step(pfs)
    assert proc.returncode == 0, proc.stderr
    outcome = bootstep.parse_report(proc.stdout)
    assert outcome.root_id == btrfs.subvolume_info(pfs.root).id
    assert outcome.root_id != old_id


# --- careless hands -----------------------------------------------------------------------------


def test_a_root_renamed_by_hand_to_the_new_name_is_kept(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty("etc/hostname", "renamed by hand")
    os.rename(pfs.root, pfs.top / ("root" + NEW_SUFFIX))
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    proc = run_rollback()
    assert proc.returncode == 0, proc.stderr
    assert_invariants(pfs, before, ids)
    assert is_fresh(pfs)
    [name] = pfs.old_root_names()
    assert (pfs.old_roots / name / "etc/hostname").read_text() == "renamed by hand"


def test_a_root_renamed_by_hand_elsewhere_is_left_alone(pfs: Pfs, run_rollback: Run) -> None:
    pfs.dirty("etc/hostname", "my backup")
    os.rename(pfs.root, pfs.top / "root-backup")
    proc = run_rollback()
    assert proc.returncode == 0, proc.stderr
    assert is_fresh(pfs)
    assert (pfs.top / "root-backup" / "etc/hostname").read_text() == "my backup"
    assert pfs.old_root_names() == []


def test_an_archive_name_taken_twice_still_archives(pfs: Pfs, run_rollback: Run) -> None:
    """The archive name <otransid>-<otime> planted in advance, and its fallback too."""
    pfs.dirty("etc/hostname", "collide")
    btrfs.sync(pfs.top)
    info = btrfs.subvolume_info(pfs.root)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(info.otime))
    name = f"{info.otransid:012d}-{stamp}"
    (pfs.old_roots / name).mkdir()
    btrfs.create_subvolume(pfs.old_roots / f"{name}-{info.id}")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    proc = run_rollback()
    assert proc.returncode == 0, proc.stderr
    assert_invariants(pfs, before, ids)
    assert is_fresh(pfs)
    [archived] = [
        n for n in pfs.old_root_names() if btrfs.subvolume_info(pfs.old_roots / n).id == info.id
    ]
    assert archived == f"{name}-{info.id}.2"
    assert (pfs.old_roots / archived / "etc/hostname").read_text() == "collide"
    assert (pfs.old_roots / name).is_dir()


# --- full disks ---------------------------------------------------------------------------------


def _fill(pfs: Pfs, chunk_mib: int = 16) -> None:
    """Data, then metadata, then snapshots until the next snapshot says ENOSPC.

    Metadata has its own space and btrfs keeps a reserve for snapshots: a full data area alone,
    or small files alone, still let the boot step's snapshot through.
    """
    number = 0
    while chunk_mib:
        fd = os.open(pfs.root / f"fill{number}", os.O_CREAT | os.O_WRONLY, 0o600)
        try:
            os.posix_fallocate(fd, 0, chunk_mib << 20)
        except OSError:
            chunk_mib //= 2
        finally:
            os.close(fd)
        number += 1
    _small_files(pfs.root / "meta", 100_000)
    for number in range(500):
        try:
            btrfs.snapshot(pfs.top / "root-blank", pfs.top / f"filler-{number}")
        except PantherError:
            break
    btrfs.sync(pfs.top)


def _small_files(directory: Path, count: int) -> None:
    """Inline files: they live in metadata."""
    directory.mkdir(exist_ok=True)
    try:
        for number in range(count):
            (directory / str(number)).write_bytes(b"m" * 2000)
    except OSError:
        pass


def _boots_with_data(pfs: Pfs, count: int, mib: int = 60) -> None:
    for number in range(count):
        pfs.dirty("n", str(number))
        fd = os.open(pfs.root / "data", os.O_CREAT | os.O_WRONLY, 0o600)
        os.posix_fallocate(fd, 0, mib << 20)
        os.close(fd)
        _small_files(pfs.root / "meta", 5000)
        proc = subprocess.run(script(pfs), capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def _full_boot(pfs: Pfs, *override: str) -> subprocess.CompletedProcess[str]:
    pfs.dirty()
    _fill(pfs)
    return step(pfs, *override)


@pytest.mark.parametrize("why", ["pinned", "keep-min"])
def test_full_disk_with_no_prunable_old_root_keeps_them(pfs: Pfs, why: str) -> None:
    _boots_with_data(pfs, 3)
    names = pfs.old_root_names()
    if why == "pinned":
        pins = {str(btrfs.subvolume_info(pfs.old_roots / n).uuid): n for n in names}
        (pfs.old_roots / ".pantheros-pins.json").write_text(json.dumps(pins))
    root_id = btrfs.subvolume_info(pfs.root).id
    proc = _full_boot(pfs, "--keep-min", "0" if why == "pinned" else "3")
    assert proc.returncode == 6, proc.stderr
    assert "no old root may be pruned" in proc.stderr
    assert "pruned=" not in proc.stdout
    assert pfs.old_root_names() == names
    assert btrfs.subvolume_info(pfs.root).id == root_id


def test_full_disk_prunes_the_oldest_by_transid_with_its_nested_subvolumes(pfs: Pfs) -> None:
    """Ordering comes from btrfs, not names: the oldest root renamed to sort last still goes
    first, nested subvolumes and all, and nothing else is deleted."""
    pfs.dirty()
    nested = pfs.root / "var/lib/machines"
    nested.mkdir(parents=True)
    btrfs.create_subvolume(nested / "a")
    btrfs.create_subvolume(nested / "a" / "b")
    (nested / "a" / "b" / "deep").write_text("deep")
    _boots_with_data(pfs, 3)
    oldest, *rest = sorted(
        pfs.old_root_names(), key=lambda n: btrfs.subvolume_info(pfs.old_roots / n).otransid
    )
    btrfs.set_readonly(pfs.old_roots / oldest, False)
    os.rename(pfs.old_roots / oldest, pfs.old_roots / "999999999999-renamed")
    btrfs.set_readonly(pfs.old_roots / "999999999999-renamed", True)
    ids = subvolume_ids(pfs)
    proc = _full_boot(pfs, "--keep-min", "1")
    assert proc.returncode == 0, proc.stderr
    pruned = bootstep.parse_report(proc.stdout).pruned
    # The disk may need more than one: they go oldest first, and keep_min=1 keeps the newest.
    assert pruned == ["999999999999-renamed", *rest][: len(pruned)]
    assert rest[-1] in pfs.old_root_names()
    gone = {path for sid, path in ids.items() if sid not in subvolume_ids(pfs)}
    assert {p.split("/")[1] for p in gone} == set(pruned), gone
    assert {p for p in gone if "machines" in p} == {
        "old_roots/999999999999-renamed/var/lib/machines/a",
        "old_roots/999999999999-renamed/var/lib/machines/a/b",
    }
    assert is_fresh(pfs)


def test_full_disk_never_prunes_a_mounted_old_root(pfs: Pfs, workdir: Path) -> None:
    """`panther roots mount` (or any mount of an old root) is somebody's open tree."""
    _boots_with_data(pfs, 3)
    oldest = pfs.old_root_names()[0]
    (workdir / "looking").mkdir()
    where = workdir / "looking"
    source = f"subvol=old_roots/{oldest}"
    subprocess.run(["mount", "-o", f"ro,{source}", f"{pfs.device}p2", str(where)], check=True)
    try:
        proc = _full_boot(pfs, "--keep-min", "1")
        assert oldest not in bootstep.parse_report(proc.stdout).pruned
        assert oldest in pfs.old_root_names()
        assert (where / "n").read_text() == "0"
    finally:
        subprocess.run(["umount", str(where)], check=True)


# --- --top and arguments ----------------------------------------------------------------------


def test_top_on_a_non_btrfs_directory_changes_nothing(workdir: Path, pfs: Pfs) -> None:
    plain = workdir / "plain"
    (plain / "root").mkdir(parents=True)
    proc = step(pfs, top=plain)
    assert proc.returncode == 6, proc.stderr
    assert "result=dirty" in proc.stdout
    assert sorted(p.name for p in plain.iterdir()) == ["root"]


def test_top_on_a_subvolume_that_is_not_the_top_level_changes_nothing(pfs: Pfs) -> None:
    ids = subvolume_ids(pfs)
    proc = step(pfs, top=pfs.top / "persist")
    assert proc.returncode == 6, proc.stderr
    assert "is not the top level" in proc.stderr
    assert subvolume_ids(pfs) == ids


@pytest.mark.parametrize("spelling", ["trailing-slash", "relative", "dot-dot"])
def test_a_mounted_root_is_seen_however_top_is_spelled(
    pfs: Pfs, workdir: Path, spelling: str
) -> None:
    """The mount check matches --top against /proc/self/mountinfo: spelling must not hide it."""
    pfs.dirty("etc/hostname", "live")
    live = workdir / "live root"
    live.mkdir()
    subprocess.run(["mount", "-o", "subvol=root", f"{pfs.device}p2", str(live)], check=True)
    try:
        top = {"trailing-slash": f"{pfs.top}/", "relative": "top", "dot-dot": "top/../top"}[
            spelling
        ]
        root_id = btrfs.subvolume_info(pfs.root).id
        proc = step(pfs, top=top, cwd=workdir)
        assert proc.returncode == 6, proc.stderr
        assert f"is mounted at {live}" in proc.stderr
        assert btrfs.subvolume_info(pfs.root).id == root_id
        assert (live / "etc/hostname").read_text() == "live"
    finally:
        subprocess.run(["umount", str(live)], check=True)


def test_a_top_with_spaces_and_metacharacters_works(pfs: Pfs, workdir: Path) -> None:
    odd = workdir / "a b;$(touch pwned)*"
    odd.mkdir()
    subprocess.run(["mount", "-o", "subvolid=5", f"{pfs.device}p2", str(odd)], check=True)
    try:
        pfs.dirty()
        report = odd / "persist" / "r e;port"
        proc = step(pfs, "--report", str(report), top=odd, cwd=workdir)
        assert proc.returncode == 0, proc.stderr
        assert "result=fresh" in report.read_text()
        assert not (workdir / "pwned").exists()
    finally:
        subprocess.run(["umount", str(odd)], check=True)
    assert is_fresh(pfs)


def test_a_report_path_without_a_directory_is_a_file(pfs: Pfs, workdir: Path) -> None:
    """`--report rollback.report` (relative, no slash) must not become a directory."""
    pfs.dirty()
    proc = step(pfs, "--report", "rollback.report", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    report = workdir / "rollback.report"
    assert report.is_file()
    assert bootstep.parse_report(report.read_text()).result == "fresh"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--root", "root;rm -rf x"),
        ("--root", "root$(touch pwned)"),
        ("--old-roots", "old roots"),
        ("--old-roots", "old_roots/*"),
        ("--blank", "`touch pwned`"),
        ("--root", "root\nx"),
        ("--keep-min", "1 "),
    ],
)
def test_shell_metacharacters_in_names_are_refused(
    pfs: Pfs, workdir: Path, flag: str, value: str
) -> None:
    ids = subvolume_ids(pfs)
    proc = step(pfs, flag, value, cwd=workdir)
    assert proc.returncode == 2, proc.stderr
    assert flag in proc.stderr
    assert proc.stdout == ""
    assert subvolume_ids(pfs) == ids
    assert not (workdir / "pwned").exists()


# --- a full disk whose space is not in the old roots (issue 20.1) -------------------------------


def test_a_prune_that_frees_nothing_stops_the_pruning_and_says_where_the_space_is(
    pfs: Pfs,
) -> None:
    """The space is held by the current root (and the filler snapshots beside it), not by the
    old roots: one prune shows that, and the rest of the history is kept."""
    for number in range(4):
        pfs.dirty("n", str(number))
        assert step(pfs).returncode == 0
    names = pfs.old_root_names()
    assert len(names) == 4
    proc = _full_boot(pfs, "--keep-min", "1")
    assert proc.returncode == 6, proc.stderr
    outcome = bootstep.parse_report(proc.stdout)
    assert len(outcome.pruned) <= 1, outcome.pruned
    assert len(pfs.old_root_names()) >= 3
    error = outcome.error or ""
    assert "so the old roots do not hold the space" in error or (
        not outcome.pruned and "no old root may be pruned" in error
    ), error
    assert "the current root root holds" in error
    assert "MiB unallocated" in error


def test_a_pin_file_that_cannot_be_read_prunes_nothing(pfs: Pfs) -> None:
    """Nothing is deleted on a guess: a pin file that is not JSON keeps every old root."""
    _boots_with_data(pfs, 3)
    names = pfs.old_root_names()
    (pfs.old_roots / ".pantheros-pins.json").write_text('{"not": "closed"')
    proc = _full_boot(pfs, "--keep-min", "0")
    assert proc.returncode == 6, proc.stderr
    assert "nothing is deleted while it cannot be read" in proc.stderr
    assert pfs.old_root_names() == names


def test_a_pin_written_with_json_escapes_is_a_pin(pfs: Pfs) -> None:
    """The pin file is JSON, read as JSON: a key spelled with \\u escapes names the same UUID
    (bash matched the file as a substring and missed it)."""
    _boots_with_data(pfs, 3)
    names = pfs.old_root_names()
    uuids = [str(btrfs.subvolume_info(pfs.old_roots / n).uuid) for n in names]
    escaped = {"".join(f"\\u{ord(c):04x}" for c in u): "x" for u in uuids}
    (pfs.old_roots / ".pantheros-pins.json").write_text(
        "{" + ", ".join(f'"{k}": "{v}"' for k, v in escaped.items()) + "}"
    )
    proc = _full_boot(pfs, "--keep-min", "0")
    assert proc.returncode == 6, proc.stderr
    assert "pruned=" not in proc.stdout
    assert pfs.old_root_names() == names
