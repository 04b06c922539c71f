"""The boot step's own edges: its arguments, its helper, its report, and stage 2 (`--finish`).

The rollback behaviour itself (crashes, nesting, full disks, fail policies) is in
test_rollback.py, which drives this same script through `panther rollback`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros import manifest as manifests
from pantheros.errors import PantherError, Refused
from pantheros.impermanence import bootstep
from pantheros.impermanence.bootstep import Outcome, parse_report
from pantheros.impermanence.stage2 import boot_outcome
from tests.helpers import Pfs, panther

SOURCE = Path(bootstep.__file__).parent.parent / "data" / "boot"


def script() -> list[str]:
    return [str(bootstep.artifact_dir() / bootstep.SCRIPT)]


def test_the_script_is_clean_under_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (scripts/setup installs it)")
    proc = subprocess.run(
        ["shellcheck", "--severity=warning", str(SOURCE / bootstep.SCRIPT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


def test_the_helper_builds_without_warnings(tmp_path: Path) -> None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    strict = [compiler, "-O2", "-Wall", "-Wextra", "-Werror"]
    proc = subprocess.run(
        [*strict, "-o", str(tmp_path / "helper"), str(SOURCE / bootstep.HELPER_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    usage = subprocess.run([str(tmp_path / "helper")], capture_output=True, text=True, check=False)
    assert usage.returncode == 2
    assert "usage: pantheros-btrfs" in usage.stderr


GOOD = [
    "--top", "/nonexistent", "--root", "root", "--blank", "root-blank", "--old-roots",
    "old_roots", "--design", "blank-snapshot", "--keep-min", "3", "--fail-policy", "boot-dirty",
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--root": "../etc"}, "--root"),
        ({"--root": "root/./x"}, "--root"),
        ({"--blank": "/abs"}, "--blank"),
        ({"--old-roots": "a/../../b"}, "--old-roots"),
        ({"--keep-min": "-1"}, "--keep-min"),
        ({"--keep-min": "3; rm -rf /"}, "--keep-min"),
        ({"--design": "snapshot"}, "--design"),
        ({"--fail-policy": "maybe"}, "--fail-policy"),
    ],
)
def test_bad_arguments_change_nothing_and_exit_2(change: dict[str, str], message: str) -> None:
    args = list(GOOD)
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    proc = subprocess.run([*script(), *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert proc.stdout == ""


def test_device_and_top_are_exclusive_and_one_is_needed() -> None:
    both = subprocess.run(
        [*script(), *GOOD, "--device", "/dev/null"], capture_output=True, text=True, check=False
    )
    assert both.returncode == 2
    neither = [a for i, a in enumerate(GOOD) if a != "--top" and GOOD[i - 1] != "--top"]
    proc = subprocess.run([*script(), *neither], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "one of --device and --top" in proc.stderr


def test_the_report_is_parsed_and_a_bad_one_refused() -> None:
    outcome = parse_report(
        "action=exchange root and root.pantheros-new\nnote=a note = with equals\n"
        "archived=000000000012-20261127T120000Z\nroot_id=263\nresult=fresh\nunknown_key=x\n"
    )
    assert outcome == Outcome(
        result="fresh",
        root_id=263,
        archived=["000000000012-20261127T120000Z"],
        actions=["exchange root and root.pantheros-new"],
        notes=["a note = with equals"],
    )
    with pytest.raises(PantherError, match="no single valid result"):
        parse_report("result=maybe\n")


@pytest.mark.parametrize(
    "report",
    [
        "result=fresh\nnoise\n",  # a line the writer cannot have written
        "result=dirty\nresult=fresh\n",  # a second result
        "note=x\rresult=fresh\n",  # a byte the writer escapes
        "note=\u2028\nresult=fresh\n",
        "note=a\\qb\nresult=fresh\n",  # an escape that does not exist
        "note=a\\x4\nresult=fresh\n",
        "",
    ],
)
def test_a_report_the_step_cannot_have_written_is_refused(report: str) -> None:
    """Issue 20.7: one line is one record; anything else is not a report of ours."""
    with pytest.raises(PantherError):
        parse_report(report.encode("utf-8"))


def test_stage_two_knows_a_missing_report_from_a_skipped_step(tmp_path: Path) -> None:
    missing = tmp_path / "rollback.report"
    dirty = boot_outcome(missing, "quiet root=LABEL=pantheros")
    assert dirty.result == "dirty"
    assert "did not run" in (dirty.error or "")
    skipped = boot_outcome(missing, "quiet pantheros.norollback root=LABEL=x")
    assert skipped.result == "skipped"
    # A parameter that merely contains the name does not count.
    assert boot_outcome(missing, "pantheros.norollbackx").result == "dirty"
    assert boot_outcome(missing, "xpantheros.norollback").result == "dirty"
    missing.write_text("result=already-fresh\nroot_id=256\n")
    assert boot_outcome(missing, "pantheros.norollback").result == "already-fresh"


@pytest.mark.parametrize(
    "word", ["pantheros.norollback=1", "pantheros.norollback=0", '"pantheros.norollback=a b"']
)
def test_norollback_with_a_value_is_recorded_as_skipped(tmp_path: Path, word: str) -> None:
    """Issue 20.13: systemd.unit(5) matches ConditionKernelCommandLine=!pantheros.norollback
    against the word alone and against an assignment to it, so the unit did not run: skipped,
    not dirty."""
    outcome = boot_outcome(tmp_path / "rollback.report", f"quiet {word} root=LABEL=x")
    assert outcome.result == "skipped", outcome


def test_a_forged_report_is_recorded_as_dirty_not_trusted(tmp_path: Path) -> None:
    """Issue 20.7: a report stage 2 cannot read is a boot that did not roll back."""
    report = tmp_path / "rollback.report"
    report.write_bytes(b"error=x\rresult=fresh\rresult=dirty\n")
    outcome = boot_outcome(report, "quiet")
    assert outcome.result == "dirty"
    assert "not valid" in (outcome.error or "")


@pytest.mark.root
def test_rollback_refuses_a_root_that_is_mounted_elsewhere(pfs: Pfs, workdir: Path) -> None:
    """Another mount of the live root (an up lab, a chroot) is somebody's live tree."""
    pfs.dirty("etc/hostname", "live")
    elsewhere = workdir / "live-root"
    elsewhere.mkdir()
    subprocess.run(["mount", "-o", "subvol=root", f"{pfs.device}p2", str(elsewhere)], check=True)
    try:
        root_id = btrfs.subvolume_info(pfs.root).id
        proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top))
        assert proc.returncode == 6, proc.stderr
        assert f"is mounted at {elsewhere}" in proc.stderr
        assert btrfs.subvolume_info(pfs.root).id == root_id
        assert (elsewhere / "etc/hostname").read_text() == "live"
        dry = panther(
            "rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top), "--dry-run"
        )
        assert dry.returncode == 0, dry.stderr
        assert "a real run would refuse" in dry.stdout
    finally:
        subprocess.run(["umount", str(elsewhere)], check=True)


@pytest.mark.scenario("state-safety: Changed blank is not trusted")
@pytest.mark.root
def test_a_changed_blank_is_not_trusted(pfs: Pfs) -> None:
    """Invariant 9: a planted file in the blank would be in every new root."""
    blank = pfs.top / "root-blank"
    btrfs.set_readonly(blank, False)
    (blank / "planted").write_text("evil")
    btrfs.set_readonly(blank, True)
    pfs.dirty("etc/hostname", "still here")
    proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top))
    assert proc.returncode == 6, proc.stderr
    assert "the blank snapshot root-blank changed after it was made" in proc.stderr
    assert not (pfs.root / "planted").exists()
    assert (pfs.root / "etc/hostname").read_text() == "still here"


@pytest.mark.root
def test_a_writable_blank_is_not_trusted(pfs: Pfs) -> None:
    btrfs.set_readonly(pfs.top / "root-blank", False)
    pfs.configure(fail_policy="fail-closed")
    proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top))
    assert proc.returncode == 1, proc.stderr
    assert "is writable" in proc.stderr
    assert "fail-closed: the boot stops here" in proc.stderr


@pytest.mark.root
def test_the_blank_stays_trusted_across_many_boots(pfs: Pfs) -> None:
    """Taking snapshots of the blank raises its generation; that is not a change."""
    for number in range(3):
        pfs.dirty("n", str(number))
        proc = panther("rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top))
        assert proc.returncode == 0, proc.stderr
    info = btrfs.subvolume_info(pfs.top / "root-blank")
    assert info.generation > info.otransid
    assert len(pfs.old_root_names()) == 3


@pytest.mark.scenario("boot-step: Boot-dirty is reported")
@pytest.mark.root
def test_lab_reboot_is_a_boot_then_stage_two(lab: Path) -> None:
    """The report the step writes is what stage 2 records; a failure is loud after boot."""
    (lab / "mnt" / "junk").write_text("x")
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert not (lab / "mnt" / "junk").exists()
    report = (lab / "run" / "rollback.report").read_text()
    assert "result=fresh" in report
    record = json.loads((lab / "mnt" / "persist" / ".pantheros" / "rollback.json").read_text())
    assert record["result"] == "fresh"
    assert record["root_id"] == btrfs.subvolume_info(lab / "mnt").id, "the new root, not the old"
    assert not (lab / "run" / "login-warning").exists()

    manifest = manifests.load(lab / "manifest.json")
    status = panther("lab", "status", str(lab), "--json")
    assert status.returncode == 0, status.stderr
    # Break the boot: the blank goes missing (renamed aside, never deleted).
    top = lab / "top-for-test"
    top.mkdir()
    device = json.loads(status.stdout)["device"]
    subprocess.run(["mount", "-o", "subvolid=5", f"{device}p2", str(top)], check=True)
    try:
        blank = top / manifest.storage.blank_snapshot
        btrfs.set_readonly(blank, False)
        os.rename(blank, top / "blank-aside")
    finally:
        subprocess.run(["umount", str(top)], check=True)
    (lab / "mnt" / "junk").write_text("y")
    # A link planted where the warning goes is replaced, not written through.
    (lab / "victim").write_text("keep")
    (lab / "run" / "login-warning").symlink_to(lab / "victim")
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 6, proc.stderr
    assert (lab / "mnt" / "junk").read_text() == "y"
    assert (lab / "victim").read_text() == "keep"
    assert not (lab / "run" / "login-warning").is_symlink()
    warning = (lab / "run" / "login-warning").read_text()
    assert "NOT rolled back" in warning
    assert "root-blank is missing" in warning
    record = json.loads((lab / "mnt" / "persist" / ".pantheros" / "rollback.json").read_text())
    assert record["result"] == "dirty"


@pytest.mark.root
def test_device_mode_mounts_and_unmounts_what_it_mounted(pfs: Pfs) -> None:
    """The initrd's way: --device; the top level it mounts under /run is gone afterwards."""
    pfs.dirty("etc/hostname", "dirty")
    btrfs.sync(pfs.top)
    before = set(Path("/run").glob("pantheros-rollback.*"))
    args = [a for a in GOOD if a not in ("--top", "/nonexistent")]
    proc = subprocess.run(
        [*script(), "--device", f"{pfs.device}p2", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "result=fresh" in proc.stdout
    assert "could not unmount" not in proc.stderr
    assert set(Path("/run").glob("pantheros-rollback.*")) == before
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if " /run/pantheros-rollback." in line]
    assert not (pfs.root / "etc/hostname").exists()


# What the script says it runs besides bash builtins: all NixOS's initrd has for it.
INITRD_TOOLS = [
    "mount",
    "umount",
    "flock",
    "mkdir",
    "mktemp",
    "rmdir",
    "mv",
    "readlink",
    "sleep",
    "btrfs",
]


@pytest.mark.root
def test_the_step_needs_only_the_tools_it_names(pfs: Pfs, workdir: Path) -> None:
    """An initrd has few tools: run the step with a PATH holding exactly those it declares."""
    header = (SOURCE / bootstep.SCRIPT).read_text()
    assert ", ".join(INITRD_TOOLS[:-1]) in header.replace("\n# ", " ")
    bin_dir = workdir / "initrd-bin"
    bin_dir.mkdir()
    for tool in INITRD_TOOLS:
        found = shutil.which(tool)
        assert found is not None, tool
        (bin_dir / tool).symlink_to(found)
    pfs.dirty("etc/hostname", "dirty")
    args = [a if a != "/nonexistent" else str(pfs.top) for a in GOOD]
    bash = shutil.which("bash")
    assert bash is not None
    for extra in (["--dry-run"], []):
        proc = subprocess.run(
            [bash, *script(), *args, "--report", str(workdir / "report"), *extra],
            capture_output=True,
            text=True,
            env={"PATH": str(bin_dir)},
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "command not found" not in proc.stderr
    assert "result=fresh" in (workdir / "report").read_text()


# --- the helper's cache (issue 19: owned by root, writable by nobody else) ----------------------


@pytest.mark.parametrize("how", ["group-writable dir", "others-writable parent", "foreign owner",
                                 "writable helper", "symlink to a shared place"])  # fmt: skip
def test_an_unsafe_helper_cache_is_refused_before_every_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """What panther compiles is run as root: every part of its path, up to /, must be owned by
    root (or the user) and writable by nobody else; checked before each run, not only once."""
    if os.geteuid() != 0:
        pytest.skip("needs root (chown to another user)")
    base = tmp_path / "safe"
    base.mkdir(mode=0o755)
    monkeypatch.setenv("PANTHER_CACHE_DIR", str(base / "cache"))
    built = bootstep.artifact_dir()  # builds, and passes
    assert bootstep.artifact_dir() == built
    if how == "group-writable dir":
        built.chmod(0o770)
    elif how == "others-writable parent":
        base.chmod(0o757)
    elif how == "foreign owner":
        os.chown(built / bootstep.SCRIPT, 65534, 65534)
    elif how == "writable helper":
        (built / bootstep.HELPER).chmod(0o775)
    else:
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o777)
        (base / "cache").rename(shared / "cache")
        (base / "cache").symlink_to(shared / "cache")
    with pytest.raises(Refused, match="will not run the boot step from"):
        bootstep.artifact_dir()


@pytest.mark.root
def test_an_unsafe_cache_is_one_line_and_a_root_left_alone(pfs: Pfs, workdir: Path) -> None:
    """`panther rollback` refuses to run it: the rollback did not happen, said in one line."""
    cache = workdir / "cache"
    env = {"PANTHER_CACHE_DIR": str(cache)}
    args = ["rollback", "-m", str(pfs.manifest_path), "--top", str(pfs.top)]
    assert panther(*args, "--dry-run", env=env).returncode == 0
    cache.chmod(0o777)
    pfs.dirty("etc/hostname", "kept")
    proc = panther(*args, env=env)
    assert proc.returncode == 6, proc.stderr
    assert "will not run the boot step from" in proc.stderr
    assert f"{cache} is writable by" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (pfs.root / "etc/hostname").read_text() == "kept"
