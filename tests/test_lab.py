"""`panther lab`: up, status, down on a real sparse image."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros.lab.lab import Lab
from pantheros.storage.record import record_file
from tests.helpers import REPO, attach_partitioned, one_line_error, panther

pytestmark = pytest.mark.root


def loops_of(image: Path) -> str:
    return subprocess.run(
        ["losetup", "--associated", str(image)], capture_output=True, text=True, check=True
    ).stdout


@pytest.mark.scenario("storage-layout: Lab up, status and down")
def test_lab_up_status_down(workdir: Path) -> None:
    lab = workdir / "lab"
    up = panther("lab", "up", str(lab), "--size", "1G")
    assert up.returncode == 0, up.stderr
    assert "What to try next" in up.stdout
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["image"] == str(lab / "disk.img")
    assert status["device"].startswith("/dev/loop")
    assert status["manifest"] == str(lab / "manifest.json")
    assert status["up"] is True
    mnt = lab / "mnt"
    assert status["mounts"] == {
        str(mnt): "root",
        str(mnt / "nix"): "nix",
        str(mnt / "persist"): "persist",
        str(mnt / "var/log"): "log",
        str(mnt / "home"): "home",
    }
    # A sparse image: it takes far less space than its size.
    assert (lab / "disk.img").stat().st_size == 1024**3
    assert (lab / "disk.img").stat().st_blocks * 512 < 200 * 1024**2

    (mnt / "persist" / "kept").write_text("data")
    again = panther("lab", "up", str(lab))
    assert again.returncode == 0, again.stderr
    assert "already up" in again.stderr
    assert loops_of(lab / "disk.img").count("\n") == 1

    down = panther("lab", "down", str(lab))
    assert down.returncode == 0, down.stderr
    assert loops_of(lab / "disk.img") == ""
    with open("/proc/self/mountinfo") as f:
        assert not any(line.split()[4].startswith(str(lab)) for line in f)

    # Up again on the same image keeps what was written to persist.
    assert panther("lab", "up", str(lab)).returncode == 0
    assert (mnt / "persist" / "kept").read_text() == "data"
    assert panther("lab", "down", str(lab), "--purge").returncode == 0
    assert not (lab / "disk.img").exists()


def test_lab_status_without_a_lab(workdir: Path) -> None:
    proc = panther("lab", "status", str(workdir / "none"), "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["image"] is None


def test_lab_up_rejects_a_bad_manifest_and_a_bad_size(workdir: Path) -> None:
    bad = workdir / "bad.json"
    bad.write_text('{"version": 1}')
    proc = panther("lab", "up", str(workdir / "lab"), "--manifest", str(bad))
    assert "missing required property" in one_line_error(proc)
    assert not (workdir / "lab").exists()
    proc = panther("lab", "up", str(workdir / "lab2"), "--size", "lots")
    assert "not a size" in one_line_error(proc)


@pytest.mark.parametrize(
    ("size", "why"),
    [
        ("inf", "not a size"),
        ("nan", "not a size"),
        ("1e400", "not a size"),
        ("1K", "too small: the layout needs at least"),
        ("100M", "too small: the layout needs at least"),
    ],
)
def test_lab_up_refuses_a_size_before_making_the_lab(workdir: Path, size: str, why: str) -> None:
    proc = panther("lab", "up", str(workdir / "lab"), "--size", size)
    assert why in one_line_error(proc)
    assert not (workdir / "lab").exists()


# Hostile lab states (issue 12): a recorded loop device now backing another image, two
# commands at once, commands killed half-way. Each ends whole, or in a one-line refusal.


def lab_mounts(lab: Path) -> list[tuple[str, str]]:
    """(mount point, source) of every mount inside the lab directory, in mount order."""
    prefix = str(lab.resolve()) + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split(" ")[4]
            if point.startswith(prefix):
                found.append((point, line.split(" - ", 1)[1].split(" ")[1]))
    return found


def backing_file(dev: str) -> str | None:
    path = Path("/sys/block") / Path(dev).name / "loop" / "backing_file"
    return path.read_text().strip() if path.exists() else None


def assert_whole(lab: Path) -> str:
    """The lab is up exactly once: one loop on its image, each mount once, all from it."""
    loops = loops_of(lab / "disk.img").splitlines()
    assert len(loops) == 1, loops
    dev = loops[0].split(":")[0]
    found = lab_mounts(lab)
    points = [point for point, _ in found]
    mnt = str(lab / "mnt")
    expected = {mnt, f"{mnt}/nix", f"{mnt}/persist", f"{mnt}/var/log", f"{mnt}/home"}
    assert set(points) >= expected
    assert len(points) == len(set(points)), f"a mount is stacked twice: {points}"
    assert all(source.startswith(dev + "p") for _, source in found), found
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["up"] is True
    assert status["device"] == dev
    return dev


def assert_down(lab: Path) -> None:
    assert loops_of(lab / "disk.img") == ""
    assert lab_mounts(lab) == []


def test_two_lab_up_then_two_lab_down_at_once(workdir: Path) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    assert panther("lab", "down", str(lab)).returncode == 0
    argv = [sys.executable, "-m", "pantheros", "lab"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for action in ("up", "down"):
        procs = [
            subprocess.Popen([*argv, action, str(lab)], env=env, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        errors = [p.communicate()[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        if action == "up":
            assert_whole(lab)
            assert any("already up" in e for e in errors), errors
        else:
            assert_down(lab)
            assert any("not up" in e for e in errors), errors


@pytest.mark.scenario("state-safety: Second writer waits or is busy")
def test_no_wait_says_busy_and_changes_nothing(workdir: Path) -> None:
    lab = workdir / "lab"
    lab.mkdir()
    with Lab(lab).lock():
        for action in ("up", "status", "down"):
            proc = panther("lab", action, str(lab), "--no-wait")
            assert proc.returncode == 5
            assert "is busy" in one_line_error(proc)
    assert sorted(p.name for p in lab.iterdir()) == [".lock"]


def _decoy(workdir: Path) -> Path:
    """Another PantherOS image of ours, with a file the lab must never show."""
    decoy = workdir / "decoy.img"
    with open(decoy, "wb") as f:
        f.truncate(512 * 1024**2)
    fmt = panther("disk", "format", "--manifest", "lab", str(decoy))
    assert fmt.returncode == 0, fmt.stderr
    return decoy


def _take_loop_number(dev: str, image: Path) -> None:
    """Attach image at exactly dev, as a device freed behind the lab's back may be reused."""
    deadline = time.monotonic() + 10
    while backing_file(dev) is not None and time.monotonic() < deadline:
        time.sleep(0.05)  # the kernel finishes a detach in the background
    taken = subprocess.run(
        ["losetup", "--partscan", dev, str(image)], capture_output=True, text=True, check=False
    )
    if taken.returncode != 0:
        pytest.skip(f"another process took {dev} first: {taken.stderr.strip()}")


@pytest.mark.parametrize("first", ["up", "down", "status"])
def test_a_reused_loop_device_is_never_touched(workdir: Path, first: str) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    (lab / "mnt" / "persist" / "mine").write_text("lab data")
    dev = assert_whole(lab)
    decoy = _decoy(workdir)
    # Behind the lab's back: its tree is unmounted, its loop freed and taken by the decoy.
    subprocess.run(["umount", "--recursive", str(lab / "mnt")], check=True)
    subprocess.run(["losetup", "--detach", dev], check=True)
    _take_loop_number(dev, decoy)
    try:
        proc = panther("lab", first, str(lab))
        assert proc.returncode == 0, proc.stderr
        if first == "status":
            assert json.loads(panther("lab", "status", str(lab), "--json").stdout)["device"] is None
        assert backing_file(dev) == str(decoy), f"lab {first} touched {dev}"
        up = panther("lab", "up", str(lab))
        assert up.returncode == 0, up.stderr
        new = assert_whole(lab)
        assert new != dev
        assert (lab / "mnt" / "persist" / "mine").read_text() == "lab data"
        assert panther("lab", "reboot", str(lab)).returncode == 0
        assert_whole(lab)
        down = panther("lab", "down", str(lab))
        assert down.returncode == 0, down.stderr
        assert_down(lab)
        assert backing_file(dev) == str(decoy), "lab down detached the decoy"
        assert not any(source.startswith(dev) for _, source in lab_mounts(workdir))
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def _record() -> Path:
    [record] = (workdir_state() / "mounts").glob("*.json")
    return record


def workdir_state() -> Path:
    return Path(os.environ["PANTHER_STATE_DIR"])


@pytest.mark.parametrize("lost", ["some mounts", "the whole record"])
def test_a_run_killed_before_its_record_is_finished(workdir: Path, lost: str) -> None:
    """What a SIGKILL between a mount (or the attach) and saving the record leaves."""
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    record = _record()
    if lost == "the whole record":
        record.unlink()
    else:
        data = json.loads(record.read_text())
        data["mounts"] = data["mounts"][:2]
        record.write_text(json.dumps(data))
    up = panther("lab", "up", str(lab))
    assert up.returncode == 0, up.stderr
    assert_whole(lab)
    assert len(json.loads(_record().read_text())["mounts"]) == 5
    if lost == "the whole record":
        _record().unlink()
    down = panther("lab", "down", str(lab))
    assert down.returncode == 0, down.stderr
    assert_down(lab)


def test_lab_commands_killed_at_random_finish_on_the_next_run(workdir: Path) -> None:
    lab = workdir / "lab"
    argv = [sys.executable, "-m", "pantheros", "lab"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    rng = random.Random(12)
    for round_ in range(8):
        action = ["up", str(lab), "--size", "1G"] if round_ % 2 == 0 else ["down", str(lab)]
        proc = subprocess.Popen(
            [*argv, *action], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.2, 1.5))
        proc.kill()
        proc.wait()
        again = panther("lab", *action)
        assert again.returncode == 0, (round_, again.stderr)
        if action[0] == "up":
            assert_whole(lab)
        else:
            assert_down(lab)
    assert not list(lab.glob("disk.img.new"))


def test_a_killed_top_level_mount_leaks_nothing(lab: Path) -> None:
    dev = assert_whole(lab)
    code = (
        "import os, signal, sys\n"
        "from pantheros.storage import mounts\n"
        "with mounts.top_level_mount(sys.argv[1]):\n"
        "    print('inside', flush=True)\n"
        "    sys.stdin.readline()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"{dev}p2"],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    assert proc.stdout.readline() == "inside\n"
    # The read-write top level exists for that process alone.
    with open("/proc/self/mountinfo") as f:
        assert not any("subvolid=5" in line and f"{dev}p2" in line for line in f)
    proc.stdin.write("go\n")
    proc.stdin.close()
    assert proc.wait() == -9
    assert panther("lab", "down", str(lab)).returncode == 0
    # Detached at once: no mount anywhere (any namespace) still holds the device.
    assert backing_file(dev) is None
    assert list((workdir_state() / "top").iterdir()) != []  # the killed run's empty directory
    assert panther("status", "--lab", str(lab), "--json").returncode == 0
    assert list((workdir_state() / "top").iterdir()) == []  # removed by the next run


def test_purge_removes_everything_the_lab_made(workdir: Path) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    (lab / "mnt" / "var" / "lib" / "app").mkdir(parents=True)
    added = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert added.returncode == 0, added.stderr
    assert (lab / "persistence.json").exists()
    down = panther("lab", "down", str(lab), "--purge")
    assert down.returncode == 0, down.stderr
    assert not lab.exists()
    assert list((workdir_state() / "mounts").iterdir()) == []
    # A file of the user's in the lab directory stays, and with it the directory.
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    assert not (lab / "persistence.json").exists()
    (lab / "notes.txt").write_text("mine")
    assert panther("lab", "down", str(lab), "--purge").returncode == 0
    assert sorted(p.name for p in lab.iterdir()) == ["notes.txt"]


def test_purge_after_a_reboot_removes_the_boot_report(lab: Path) -> None:
    """`lab reboot` writes the machine's /run/pantheros in the lab: the lab made it."""
    reboot = panther("lab", "reboot", str(lab), "--json")
    assert reboot.returncode == 0, reboot.stderr
    outcome = json.loads(reboot.stdout)
    assert outcome["result"] == "fresh"
    listed = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)
    assert [row["name"] for row in listed["roots"]] == outcome["archived"]
    assert (lab / "run" / "rollback.report").exists()
    down = panther("lab", "down", str(lab), "--purge")
    assert down.returncode == 0, down.stderr
    assert not lab.exists()


def test_the_run_files_purge_removes_are_those_the_boot_writes() -> None:
    from pantheros.impermanence import bootstep, stage2
    from pantheros.lab.lab import RUN_FILES

    assert sorted(RUN_FILES) == sorted([bootstep.BOOT_REPORT.name, stage2.LOGIN_WARNING])


def test_down_and_status_of_a_directory_that_is_no_lab_touch_nothing(workdir: Path) -> None:
    """`lab down --purge /` must not be a way to delete an empty /mnt or files in /run."""
    place = workdir / "not-a-lab"
    (place / "mnt").mkdir(parents=True)
    (place / "run").mkdir()
    (place / "run" / "rollback.report").write_text("someone else's")
    before = sorted(p.relative_to(place) for p in place.rglob("*"))
    for argv in (["status"], ["down"], ["down", "--purge"], ["down", "--purge", "--json"]):
        proc = panther("lab", *argv, str(place))
        assert proc.returncode == 0, proc.stderr
    assert sorted(p.relative_to(place) for p in place.rglob("*")) == before
    assert (place / "run" / "rollback.report").read_text() == "someone else's"


def test_lab_reboot_refuses_a_symlinked_run_directory(lab: Path, workdir: Path) -> None:
    """The boot report is deleted and written in DIR/run: never through a link out of the lab."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "rollback.report").write_text("not the lab's")
    (lab / "run").symlink_to(elsewhere)
    proc = panther("lab", "reboot", str(lab))
    assert "is not a directory (a symlink?)" in one_line_error(proc)
    assert [p.name for p in elsewhere.iterdir()] == ["rollback.report"]
    assert (elsewhere / "rollback.report").read_text() == "not the lab's"
    assert json.loads(panther("lab", "status", str(lab), "--json").stdout)["up"] is True


def _a_regular_file(workdir: Path) -> Path:
    lab = workdir / "lab-file"
    lab.write_text("not a lab\n")
    return lab


def _a_symlink_to_a_file(workdir: Path) -> Path:
    (workdir / "lab-link").symlink_to(_a_regular_file(workdir))
    return workdir / "lab-link"


def _mnt_a_file(workdir: Path) -> Path:
    lab = workdir / "lab"
    lab.mkdir()
    (lab / "mnt").write_text("not a directory\n")
    return lab


def _mnt_a_foreign_mount(workdir: Path) -> Path:
    lab = workdir / "lab"
    (lab / "mnt").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "foreign", str(lab / "mnt")], check=True)
    return lab


@pytest.mark.parametrize(
    ("place", "why"),
    [
        (_a_regular_file, "is not a directory"),
        (_a_symlink_to_a_file, "is not a directory"),
        (_mnt_a_file, "mnt is not a directory"),
        (_mnt_a_foreign_mount, "foreign is mounted at"),
    ],
)
def test_lab_up_refuses_a_place_it_cannot_finish_in_before_making_anything(
    workdir: Path, place: Callable[[Path], Path], why: str
) -> None:
    lab = place(workdir)
    mounted = lab_mounts(workdir)
    before = {p: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in workdir.rglob("*")}
    proc = panther("lab", "up", str(lab), "--size", "1G")
    assert why in one_line_error(proc)
    after = {p: (p.lstat().st_mtime_ns, p.lstat().st_size) for p in workdir.rglob("*")}
    assert after == before
    assert lab_mounts(workdir) == mounted


def test_down_after_a_layout_killed_half_way_detaches_its_image(workdir: Path) -> None:
    """What SIGKILL during `lab up`'s layout leaves: the manifest and disk.img.new, attached."""
    lab = workdir / "lab"
    lab.mkdir()
    (lab / "manifest.json").write_bytes(manifests.bundled_path("lab").read_bytes())
    with open(lab / "disk.img.new", "wb") as f:
        f.truncate(512 * 1024**2)
    attach_partitioned(lab / "disk.img.new")
    assert loops_of(lab / "disk.img.new") != ""
    down = panther("lab", "down", str(lab), "--purge")
    assert down.returncode == 0, down.stderr
    assert not lab.exists()
    listed = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(lab) not in listed.stdout


def test_status_of_a_down_lab(lab: Path) -> None:
    assert panther("lab", "reboot", str(lab)).returncode == 0
    assert panther("lab", "down", str(lab)).returncode == 0
    proc = panther("status", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["root"]["state"] == "down"
    assert report["old_roots"]["count"] == 1
    assert report["blank"]["trusted"] is True
    text = panther("status", "--lab", str(lab))
    assert "down: nothing is mounted" in text.stdout
    lab_text = panther("lab", "status", str(lab))
    assert "(down)" in lab_text.stdout
    assert_down(lab)


def test_lab_down_refuses_a_foreign_mount_in_the_tree(lab: Path) -> None:
    tmp = lab / "mnt" / "tmp"
    tmp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(tmp)], check=True)
    proc = panther("lab", "down", str(lab))
    assert "not by panther" in one_line_error(proc)
    assert json.loads(panther("lab", "status", str(lab), "--json").stdout)["up"] is True
    assert (str(tmp), "none") in lab_mounts(lab)
    subprocess.run(["umount", str(tmp)], check=True)
    assert panther("lab", "down", str(lab)).returncode == 0
    assert_down(lab)


def test_lab_up_refuses_a_symlinked_mount_directory(workdir: Path) -> None:
    lab = workdir / "lab"
    lab.mkdir()
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    (lab / "mnt").symlink_to(elsewhere)
    proc = panther("lab", "up", str(lab), "--size", "1G")
    assert "is a symlink" in one_line_error(proc)
    assert lab_mounts(workdir) == []
    assert not (lab / "disk.img").exists()


def test_a_symlink_in_the_machine_is_not_mounted_over(lab: Path, workdir: Path) -> None:
    """A machine's /home replaced by a link to a host directory: the next boot refuses it."""
    host_dir = workdir / "host-dir"
    host_dir.mkdir()
    assert panther("lab", "down", str(lab)).returncode == 0
    top = workdir / "top"
    top.mkdir()
    dev = attach_partitioned(lab / "disk.img")
    try:
        subprocess.run(["mount", "-o", "subvolid=5", f"{dev}p2", str(top)], check=True)
        (top / "root" / "home").rmdir()
        (top / "root" / "home").symlink_to(host_dir)
        subprocess.run(["umount", str(top)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=True)
    proc = panther("lab", "up", str(lab))
    # The link is inside the root subvolume: seen, and refused, once the root is mounted.
    assert proc.returncode == 5
    assert "home is not a directory (a symlink?)" in proc.stderr.splitlines()[-1]
    assert not any(point.startswith(str(host_dir)) for point, _ in lab_mounts(workdir))
    assert_down(lab)


def test_lab_down_refuses_while_its_disk_is_mounted_elsewhere(lab: Path, workdir: Path) -> None:
    assert panther("lab", "reboot", str(lab)).returncode == 0
    [root] = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    view = workdir / "view"
    view.mkdir()
    assert panther("roots", "mount", root["name"], str(view), "--lab", str(lab)).returncode == 0
    try:
        proc = panther("lab", "down", str(lab))
        assert f"also mounted at {view}" in one_line_error(proc)
        assert_whole(lab)
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert panther("lab", "down", str(lab)).returncode == 0
    assert_down(lab)


def test_lab_up_and_down_at_once_leave_it_whole_either_way(workdir: Path) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    argv = [sys.executable, "-m", "pantheros", "lab"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for _ in range(3):
        procs = [
            subprocess.Popen([*argv, action, str(lab)], env=env, stderr=subprocess.PIPE, text=True)
            for action in ("down", "up")
        ]
        errors = [p.communicate()[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        if loops_of(lab / "disk.img"):
            assert_whole(lab)
        else:
            assert_down(lab)
    assert panther("lab", "down", str(lab)).returncode == 0
    assert_down(lab)


def test_a_down_lab_is_attached_for_a_look_only_under_its_lock(lab: Path) -> None:
    """`lab up` adopts a device on the image: a reader's temporary one must not be among them."""
    assert panther("lab", "down", str(lab)).returncode == 0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    with Lab(lab).lock():
        reader = subprocess.Popen(
            [sys.executable, "-m", "pantheros", "status", "--lab", str(lab), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(2)
        assert reader.poll() is None
        assert loops_of(lab / "disk.img") == ""
    out, err = reader.communicate()
    assert reader.returncode == 0, err
    assert "waiting for another panther command" in err
    assert json.loads(out)["root"]["state"] == "down"
    assert_down(lab)


def test_lab_up_when_up_says_one_line_and_warns_only_when_laying_out(workdir: Path) -> None:
    lab = workdir / "lab"
    first = panther("lab", "up", str(lab), "--size", "1G")
    assert first.returncode == 0, first.stderr
    assert "What to try next" in first.stdout
    vfat = "vfat" in Path("/proc/filesystems").read_text().split()
    # A kernel without vfat is warned about once, when the image is laid out.
    assert first.stderr.count("warning:") == (0 if vfat else 1), first.stderr
    again = panther("lab", "up", str(lab))
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""
    assert again.stderr.splitlines() == [
        f"the lab at {lab} is already up; its root is at {lab / 'mnt'}"
    ]
    as_json = panther("lab", "up", str(lab), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == {
        "dir": str(lab),
        "root": str(lab / "mnt"),
        "already_up": True,
        "laid_out": False,
    }
    down = panther("lab", "down", str(lab), "--json")
    assert json.loads(down.stdout) == {"dir": str(lab), "was_up": True, "purged": False}
    # Up again from the laid-out image: mounted without a new layout, and without the warning.
    up = panther("lab", "up", str(lab), "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["laid_out"] is False
    assert json.loads(up.stdout)["already_up"] is False
    assert "warning:" not in up.stderr


def test_lab_status_shows_a_persisted_path_as_a_bind_mount(bare_lab: Path) -> None:
    lab = bare_lab
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    added = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert added.returncode == 0, added.stderr
    text = panther("lab", "status", str(lab)).stdout
    assert f"  {app}  <- bind mount of persistent /var/lib/app\n" in text
    assert "subvolume bind:" not in text
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["binds"] == {str(app): "/var/lib/app"}
    assert str(app) not in status["mounts"]
    assert status["up"] is True
    removed = panther("persist", "remove", "/var/lib/app", "--lab", str(lab))
    assert removed.returncode == 0, removed.stderr
    status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    assert status["binds"] == {}
    assert status["up"] is True


def test_a_record_written_by_the_previous_version_is_read_and_undone(lab: Path) -> None:
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    before = json.loads(panther("lab", "status", str(lab), "--json").stdout)
    # The record as panther before the typed record wrote it: "what" says everything.
    (path,) = (workdir_state() / "mounts").iterdir()
    record = json.loads(path.read_text())
    record.pop("version")
    record["mounts"] = [
        {"path": m["path"], "what": f"bind:{m['of']}" if m["kind"] == "bind" else m["of"]}
        for m in record["mounts"]
    ]
    path.write_text(json.dumps(record))
    assert json.loads(panther("lab", "status", str(lab), "--json").stdout) == before
    down = panther("lab", "down", str(lab))
    assert down.returncode == 0, down.stderr
    assert_down(lab)


FIRST_BOOT = (
    "/etc/machine-id",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_ed25519_key.pub",
    "/var/lib/nixos",
    "/var/lib/systemd/timers",
)


def test_a_new_lab_has_what_its_first_boot_makes(lab: Path) -> None:
    """The bundled manifest persists what systemd, sshd and activation make at a first boot; the
    lab makes it in persistent storage and mounts it, so `persist list` and the audit are clean."""
    listed = json.loads(panther("persist", "list", "--json", "--lab", str(lab)).stdout)
    assert {row["path"]: row["state"] for row in listed} == dict.fromkeys(FIRST_BOOT, "ok")
    copy = lab / "mnt" / "persist"
    machine_id = (copy / "etc/machine-id").read_text()
    assert re.fullmatch(r"[0-9a-f]{32}\n", machine_id)
    assert (lab / "mnt/etc/machine-id").read_text() == machine_id  # through the bind mount
    key = copy / "etc/ssh/ssh_host_ed25519_key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((copy / "var/lib/nixos").stat().st_mode) == 0o755
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True
    ).stdout.split()[:2]
    assert (copy / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2] == derived
    audit = json.loads(panther("audit", "--lab", str(lab), "--json").stdout)
    failing = [f["id"] for f in audit["findings"] if f["status"] == "fail"]
    assert not [f for f in failing if f.startswith("impermanence.")], failing
    # A boot makes again what is gone, and leaves alone what is there.
    (copy / "etc/machine-id").unlink()
    (copy / "etc/ssh/ssh_host_ed25519_key.pub").unlink()
    reboot = panther("lab", "reboot", str(lab))
    assert reboot.returncode == 0, reboot.stderr
    assert (copy / "etc/machine-id").read_text() != machine_id
    public = (copy / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert public == derived  # made again from the private key, which was kept
    listed = json.loads(panther("persist", "list", "--json", "--lab", str(lab)).stdout)
    assert {row["state"] for row in listed} == {"ok"}


def test_up_finishes_a_reboot_cut_short(lab: Path) -> None:
    """Ctrl-C during `lab reboot` left the lab down with its junk; `up` rolls back first."""
    (lab / "mnt" / "junk").write_text("from the last boot")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pantheros", "lab", "reboot", str(lab)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_COLOR": "1"},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "initrd: the boot step" in line:
            proc.send_signal(signal.SIGINT)  # as Ctrl-C, once the tree is unmounted
            break
    proc.communicate()
    assert proc.returncode == 130
    assert (lab / "booting").exists()
    up = panther("lab", "up", str(lab))
    assert up.returncode == 0, up.stderr
    assert "initrd: the boot step" in up.stderr
    assert not (lab / "mnt" / "junk").exists()
    assert not (lab / "booting").exists()
    status = json.loads(panther("status", "--json", "--lab", str(lab)).stdout)
    assert status["root"]["state"] == "fresh"
    assert status["last_rollback"]["result"] in ("fresh", "already-fresh")


def test_a_lab_that_is_down_is_said_to_be_down(lab: Path, workdir: Path) -> None:
    """Commands that need the lab's tree say so in one line, and leave nothing attached or
    mounted (`roots mount` mounted the old root and left the image attached, then waited 10 s
    to say the loop device was busy)."""
    assert panther("lab", "reboot", str(lab)).returncode == 0
    name = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"][0]
    assert panther("lab", "down", str(lab)).returncode == 0
    target = workdir / "view"
    target.mkdir()
    down = f"panther: error: the lab at {lab} is down (panther lab up {lab})"
    for argv in (
        ["roots", "mount", name["name"], str(target), "--lab", str(lab)],
        ["restore", "/etc/machine-id", "--from", "latest", "--to", "/x", "--lab", str(lab)],
        ["persist", "add", "/etc/hostname", "--lab", str(lab)],
        ["lab", "reboot", str(lab)],
    ):
        proc = panther(*argv)
        assert one_line_error(proc) == down, argv
        assert proc.returncode == 2, argv
    assert not os.path.ismount(target)
    image = str((lab / "disk.img").resolve())
    listed = subprocess.run(["losetup", "--json", "--list"], capture_output=True, text=True)
    assert image not in listed.stdout


def test_a_refused_down_leaves_no_record_it_made(lab: Path, workdir: Path) -> None:
    """`down` adopts a device no record names (a run killed before recording), to undo it;
    refused (its disk mounted elsewhere), it must not leave that adopted record behind."""
    assert panther("lab", "reboot", str(lab)).returncode == 0
    [root] = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    view = workdir / "view"
    view.mkdir()
    assert panther("roots", "mount", root["name"], str(view), "--lab", str(lab)).returncode == 0
    record = _record()
    record.unlink()  # as a run killed between attaching and recording leaves it
    try:
        proc = panther("lab", "down", str(lab))
        assert f"also mounted at {view}" in one_line_error(proc)
        assert not record.exists()
    finally:
        subprocess.run(["umount", str(view)], check=True)
    assert panther("lab", "down", str(lab)).returncode == 0
    assert_down(lab)


def test_an_image_that_is_a_link_to_another_lab_s_is_refused(lab: Path, workdir: Path) -> None:
    """A lab whose disk.img links to another lab's would take that lab's loop device and
    mounts for its own: every command refuses it, and no record naming that device is made."""
    other = workdir / "other"
    other.mkdir()
    (other / ".lock").touch()
    (other / "manifest.json").write_text((lab / "manifest.json").read_text())
    (other / "disk.img").symlink_to(lab / "disk.img")
    dev = assert_whole(lab)
    for argv in (["down"], ["down", "--purge"], ["status"], ["up"]):
        proc = panther("lab", *argv, str(other))
        assert "not this lab's image" in one_line_error(proc)
        assert proc.returncode == 5
    assert not record_file((other / "mnt").resolve()).exists()
    assert assert_whole(lab) == dev


def test_the_labs_a_disk_command_touches_are_each_locked(workdir: Path) -> None:
    """`disk` commands hold the lock of every lab a path belongs to: its image, its tree, a lab
    inside another lab's tree (both), a directory whose record names a lab's image."""
    from pantheros.lab.lab import owning

    outer, inner = workdir / "outer", workdir / "outer" / "mnt" / "srv" / "inner"
    for lab in (outer, inner):
        (lab / "mnt").mkdir(parents=True)
        (lab / ".lock").touch()
    nowhere = workdir / "nowhere"
    (nowhere / "mnt").mkdir(parents=True)  # no lock, no manifest: not a lab
    (workdir / "mnt").mkdir()

    def dirs(*paths: Path) -> list[Path]:
        return [lab.directory for lab in owning(*paths)]

    assert dirs(outer / "disk.img") == [outer]
    assert dirs(outer / "mnt" / "etc") == [outer]
    assert dirs(inner / "mnt", workdir / "decoy.img") == [outer, inner]
    assert dirs(inner / "disk.img") == [outer, inner]  # the image lies in the outer tree
    assert dirs(nowhere / "mnt", workdir / "mnt", Path("/")) == []


def test_an_image_hard_linked_to_an_attached_one_is_not_attached_again(
    lab: Path, workdir: Path
) -> None:
    """The same file under two names: a second loop device would let btrfs mount the one
    filesystem twice (a clone gets a temporary fsid), two writers on one disk."""
    dev = assert_whole(lab)
    other = workdir / "other"
    other.mkdir()
    (other / ".lock").touch()
    (other / "manifest.json").write_text((lab / "manifest.json").read_text())
    os.link(lab / "disk.img", other / "disk.img")
    proc = panther("lab", "up", str(other))
    line = one_line_error(proc)
    assert proc.returncode == 5
    assert f"already attached to {dev}" in line
    assert loops_of(other / "disk.img").splitlines() == loops_of(lab / "disk.img").splitlines()
    assert len(loops_of(lab / "disk.img").splitlines()) == 1
    proc = panther("disk", "format", "--manifest", "lab", "--yes-wipe", str(other / "disk.img"))
    assert "mount one filesystem twice" in one_line_error(proc)
    assert assert_whole(lab) == dev
    assert (lab / "mnt" / "persist").is_dir()
