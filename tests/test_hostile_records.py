"""Issue 20, as a hostile process on the machine would try it: every record panther writes or
reads inside a machine stays inside it and is refused when planted; no read hangs or runs out
of memory (FIFOs, /dev/zero); bad JSON is one line naming the file; an old root's name is
never a mount option; `disk` commands on a lab hold its lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pantheros import btrfs, mounttable
from pantheros.machine import Machine
from pantheros.storage.record import record_file
from tests.helpers import REPO, one_line_error

pytestmark = pytest.mark.root

# Every command here must answer well within this; a read that waits on a FIFO never does.
PATIENCE = 60


def run(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pantheros", *args]
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO / "src")}
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, env=env, timeout=PATIENCE, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"panther {' '.join(args)} hangs")


def records(lab: Path) -> Path:
    return lab / "mnt" / "persist" / ".pantheros"


def reboot(lab: Path) -> None:
    """A reboot that archives the root: something is written to it first."""
    (lab / "mnt" / f"written-{time.monotonic_ns()}").write_text("x")
    proc = run("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr


@contextmanager
def top_level(lab: Path) -> Iterator[Path]:
    """The lab's btrfs top level, mounted in this process's private namespace."""
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        yield top


def not_busy(lab: Path) -> None:
    """The lab's lock is free again: a refusal released it."""
    proc = run("lab", "status", str(lab), "--no-wait")
    assert proc.returncode == 0, proc.stderr


# Item 4: records written through the machine's symlinks landed on the host.


def test_records_never_go_through_a_symlinked_records_directory(lab: Path, workdir: Path) -> None:
    reboot(lab)  # persist/.pantheros exists, with a real record in it
    host = workdir / "host"
    host.mkdir()
    planted = {
        "result": "fresh",
        "time": 1,
        "boot_id": "",
        "policy": "fail-closed",
        "design": "blank-snapshot",
    }
    (host / "rollback.json").write_text(json.dumps(planted))
    os.rename(records(lab), lab / "mnt" / "persist" / "kept-records")
    records(lab).symlink_to(host)  # absolute: the host's directory, as a host path

    proc = run("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert "could not record the rollback result" in proc.stderr
    assert "a symlink on its way" in proc.stderr
    proc = run("status", "--lab", str(lab), "--json")
    line = one_line_error(proc)
    assert proc.returncode == 5
    assert "the rollback record" in line
    assert "a symlink on its way" in line
    audit = run("audit", "--lab", str(lab), "--json")
    reasons = {f["id"]: f["reason"] for f in json.loads(audit.stdout)["findings"]}
    assert "a symlink on its way" in reasons["impermanence.rollback"]

    (lab / "mnt" / "etc").mkdir(exist_ok=True)
    (lab / "mnt" / "etc" / "app.conf").write_text("live")
    proc = run("persist", "add", "/etc/app.conf", "--lab", str(lab))
    assert "a symlink on its way" in one_line_error(proc)
    assert not (lab / "mnt" / "persist" / "etc" / "app.conf").exists()
    assert (lab / "mnt" / "etc" / "app.conf").read_text() == "live"

    # The host directory is exactly as planted: nothing written, nothing deleted, nothing read.
    assert sorted(p.name for p in host.iterdir()) == ["rollback.json"]
    assert json.loads((host / "rollback.json").read_text()) == planted
    not_busy(lab)


def test_a_record_planted_by_another_user_is_refused(lab: Path) -> None:
    reboot(lab)
    record = records(lab) / "rollback.json"
    data = json.loads(record.read_text())
    record.unlink()
    record.write_text(json.dumps({**data, "result": "fresh"}))
    os.chown(record, 65534, 65534)
    proc = run("status", "--lab", str(lab))
    assert "owned by uid 65534, not by root" in one_line_error(proc)
    os.chown(record, 0, 0)
    os.chmod(record, 0o666)
    proc = run("status", "--lab", str(lab))
    assert "writable by everyone" in one_line_error(proc)


def test_pins_and_the_mount_record_are_not_followed_out(lab: Path, workdir: Path) -> None:
    reboot(lab)
    [root] = json.loads(run("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    outside = workdir / "outside.json"
    outside.write_text("{}")
    with top_level(lab) as top:
        (top / "old_roots" / ".pantheros-pins.json").symlink_to(outside)
    proc = run("roots", "pin", root["name"], "--lab", str(lab))
    assert "the pin file" in one_line_error(proc)
    assert outside.read_text() == "{}"
    with top_level(lab) as top:
        (top / "old_roots" / ".pantheros-pins.json").unlink()
    proc = run("roots", "pin", root["name"], "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr

    mount_record = record_file((lab / "mnt").resolve())
    kept = mount_record.read_bytes()
    mount_record.unlink()
    mount_record.symlink_to(outside)
    proc = run("lab", "status", str(lab))
    assert "the mount record" in one_line_error(proc)
    assert outside.read_text() == "{}"
    mount_record.unlink()
    mount_record.write_bytes(kept)
    assert run("lab", "status", str(lab)).returncode == 0


# Item 10: a FIFO, a device or a link to one where panther reads a file.


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def _zero_link(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def _zero_node(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mknod(path, 0o644 | 0o020000, os.makedev(1, 5))


PLANTS: dict[str, Callable[[Path], None]] = {
    "a FIFO": _fifo,
    "a link to /dev/zero": _zero_link,
    "/dev/zero itself": _zero_node,
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_no_read_hangs_or_runs_out_of_memory(lab: Path, plant: str) -> None:
    reboot(lab)
    make = PLANTS[plant]
    says = {"a FIFO": "a FIFO", "a link to /dev/zero": "a symlink"}.get(plant, "character device")

    record = records(lab) / "rollback.json"
    make(record)
    proc = run("status", "--lab", str(lab))
    line = one_line_error(proc)
    assert "the rollback record /persist/.pantheros/rollback.json" in line
    assert says in line
    not_busy(lab)
    reboot(lab)  # the record is replaced by a rename: what was planted is never opened
    assert json.loads(record.read_text())["result"] == "fresh"

    persistence = lab / "persistence.json"
    make(persistence)
    proc = run("persist", "list", "--lab", str(lab))
    line = one_line_error(proc)
    assert "the persistence file" in line
    assert says in line
    proc = run("diff", "--lab", str(lab))
    assert "the persistence file" in one_line_error(proc)
    persistence.unlink()
    not_busy(lab)

    ignore = lab / "diff-ignore"
    make(ignore)
    proc = run("diff", "--lab", str(lab), "--ignore-file", str(ignore))
    assert "the ignore file" in one_line_error(proc)
    ignore.unlink()


def test_a_manifest_that_is_a_fifo_is_one_line(workdir: Path) -> None:
    fifo = workdir / "manifest.json"
    os.mkfifo(fifo)
    proc = run("disk", "plan", "--manifest", str(fifo), str(fifo))
    assert "a FIFO, not a regular file" in one_line_error(proc)
    proc = run("lab", "up", str(workdir / "lab"), "--manifest", str(fifo))
    assert "a FIFO, not a regular file" in one_line_error(proc)


# Item 12: bad JSON in every record and manifest panther reads.

BAD_JSON = {
    "100,000 deep": "[" * 100_000 + "]" * 100_000,
    "time 1e400": '{"result": "fresh", "time": 1e400}',
    "5,000 digits": '{"version": ' + "9" * 5000 + "}",
    "NaN": '{"result": "fresh", "time": NaN}',
    "Infinity": '{"version": Infinity}',
}


@pytest.mark.parametrize("content", list(BAD_JSON))
def test_bad_json_in_any_record_is_one_line_naming_it(lab: Path, content: str) -> None:
    reboot(lab)
    text = BAD_JSON[content]
    [root] = json.loads(run("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]

    record = records(lab) / "rollback.json"
    record.write_text(text)
    proc = run("status", "--lab", str(lab))
    assert "the rollback record /persist/.pantheros/rollback.json" in one_line_error(proc)
    assert proc.returncode == 2
    record.unlink()

    persistence = lab / "persistence.json"
    persistence.write_text(text)
    proc = run("persist", "list", "--lab", str(lab))
    assert f"the persistence file {persistence}" in one_line_error(proc)
    persistence.unlink()

    with top_level(lab) as top:
        (top / "old_roots" / ".pantheros-pins.json").write_text(text)
    proc = run("roots", "pin", root["name"], "--lab", str(lab))
    assert "the pin file" in one_line_error(proc)
    with top_level(lab) as top:
        (top / "old_roots" / ".pantheros-pins.json").unlink()

    mount_record = record_file((lab / "mnt").resolve())
    kept = mount_record.read_bytes()
    mount_record.write_text(text)
    proc = run("lab", "status", str(lab))
    assert f"the mount record {mount_record}" in one_line_error(proc)
    mount_record.write_bytes(kept)
    assert run("lab", "status", str(lab)).returncode == 0


@pytest.mark.parametrize("content", list(BAD_JSON))
def test_bad_json_in_a_tree_manifest_is_one_line(tmp_path: Path, content: str) -> None:
    tree = tmp_path / "tree"
    (tree / "etc" / "pantheros").mkdir(parents=True)
    manifest = tree / "etc" / "pantheros" / "manifest.json"
    manifest.write_text(BAD_JSON[content])
    proc = run("audit", "--root", str(tree))
    assert proc.returncode == 2
    assert str(manifest) in one_line_error(proc)


def test_a_rollback_record_far_in_the_future_is_refused(lab: Path) -> None:
    reboot(lab)
    record = records(lab) / "rollback.json"
    data = json.loads(record.read_text())
    for stamp in (1e300, -5, "1"):
        record.write_text(json.dumps({**data, "time": stamp}))
        proc = run("status", "--lab", str(lab))
        assert "is not a time panther wrote" in one_line_error(proc)
        audit = run("audit", "--lab", str(lab), "--json")
        findings = {f["id"]: f for f in json.loads(audit.stdout)["findings"]}
        assert "is not a time panther wrote" in findings["impermanence.rollback"]["reason"]


# Item 5: a name from the disk in a mount option.


def test_roots_mount_mounts_by_id_whatever_the_name(lab: Path, workdir: Path) -> None:
    (lab / "mnt" / "marker").write_text("the old root")
    reboot(lab)
    [root] = json.loads(run("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    hostile = "x,subvol=persist,rw"
    with top_level(lab) as top:
        os.rename(top / "old_roots" / root["name"], top / "old_roots" / hostile)
    view = workdir / "view"
    view.mkdir()
    proc = run("roots", "mount", hostile, str(view), "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    try:
        entry = mounttable.mount_at(view)
        assert entry is not None
        assert entry.option("subvolid") == str(root["id"])
        assert "ro" in entry.options
        assert (view / "marker").read_text() == "the old root"
        assert btrfs.subvolume_info(view).id == root["id"]
    finally:
        subprocess.run(["umount", str(view)], check=True)


# Item 6: `disk` commands on a lab's tree hold the lab's lock.


@contextmanager
def lock_held(path: Path) -> Iterator[None]:
    """Another process holds the flock on path for the duration (as a panther command would)."""
    code = (
        "import fcntl, sys, time\n"
        "f = open(sys.argv[1], 'a')\n"
        "fcntl.flock(f, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        yield
    finally:
        holder.kill()
        holder.wait()


def test_disk_unmount_of_a_lab_waits_for_its_lock(lab: Path) -> None:
    with lock_held(lab / ".lock"):
        assert run("lab", "status", str(lab), "--no-wait").returncode == 5
        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO / "src")}
        argv = [sys.executable, "-m", "pantheros", "disk", "unmount", str(lab / "mnt")]
        waiting = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None, "disk unmount went ahead while the lab was busy"
        assert mounttable.mount_at(lab / "mnt" / "persist") is not None
    _, err = waiting.communicate(timeout=PATIENCE)
    assert waiting.returncode == 0, err
    assert "waiting for another panther command" in err
    assert mounttable.mount_at(lab / "mnt" / "persist") is None


def test_roots_pin_and_mount_hold_the_machine_lock(lab: Path, workdir: Path) -> None:
    reboot(lab)
    [root] = json.loads(run("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"]
    view = workdir / "view"
    view.mkdir()
    with lock_held(lab / ".lock"):
        for args in (("roots", "pin", root["name"]), ("roots", "mount", root["name"], str(view))):
            proc = run(*args, "--no-wait", "--lab", str(lab))
            assert proc.returncode == 5
            assert "busy" in one_line_error(proc)
    assert mounttable.mount_at(view) is None


# Item 13: names from the disk are printed escaped, one line each, wherever they are printed.


def _retention(lab: Path, max_count: int) -> None:
    manifest = json.loads((lab / "manifest.json").read_text())
    manifest["impermanence"]["retention"] = {"keep_min": 1, "max_count": max_count}
    (lab / "manifest.json").write_text(json.dumps(manifest))


def _rename_oldest(lab: Path, name: str) -> None:
    oldest = json.loads(run("roots", "list", "--json", "--lab", str(lab)).stdout)["roots"][-1]
    with top_level(lab) as top:
        os.rename(top / "old_roots" / oldest["name"], top / "old_roots" / name)


def test_old_root_names_are_printed_escaped_everywhere(lab: Path) -> None:
    hostile = "evil\nresult=fresh\x1b[31m\u2028"
    shown = "evil\\nresult=fresh\\x1b[31m\\u2028"
    _retention(lab, 1)
    reboot(lab)
    _rename_oldest(lab, hostile)
    proc = run("roots", "pin", hostile, "--lab", str(lab))
    assert proc.stderr == f"{shown} pinned\n"
    assert run("roots", "unpin", hostile, "--lab", str(lab)).returncode == 0
    (lab / "mnt" / "next").write_text("x")
    proc = run("lab", "reboot", str(lab))  # prunes it: max_count 1
    assert proc.returncode == 0, proc.stderr
    assert f"  pruned: old_roots/{shown}\n" in proc.stdout

    _retention(lab, 3)
    reboot(lab)
    _rename_oldest(lab, hostile)
    _retention(lab, 1)
    for dry in (["--dry-run"], []):
        proc = run("roots", "gc", *dry, "--lab", str(lab))
        assert proc.returncode == 0, proc.stderr
        assert f"delete {shown}: beyond the 1 newest (max_count)" in proc.stdout
        assert not any(line.startswith("result=") for line in proc.stdout.splitlines())
        assert "\x1b" not in proc.stdout
        assert "\u2028" not in proc.stdout


def test_messages_escape_what_they_quote(capsys: pytest.CaptureFixture[str]) -> None:
    from pantheros import ui

    ui.warn("a\nb\x1b[31m")
    ui.info("c\rd")
    ui.error("e\u2028f")
    err = capsys.readouterr().err
    assert err == "warning: a\\nb\\x1b[31m\nc\\rd\npanther: error: e\\u2028f\n"


def test_a_mount_by_descriptor_follows_no_symlink_swapped_in(workdir: Path) -> None:
    """What persist's bind mounts and the lab's tree mount on: the directory that was checked,
    even when a process on the machine swaps its path for a symlink to the host afterwards."""
    from pantheros import files
    from pantheros.storage import mounts

    machine = workdir / "machine"
    (machine / "copy").mkdir(parents=True)
    (machine / "copy" / "mine").write_text("the machine's")
    (machine / "live").mkdir()
    host = workdir / "host"
    host.mkdir()
    (host / "secret").write_text("the host's")
    source = files.open_beneath(machine / "copy", beneath=machine)
    target = files.open_beneath(machine / "live", beneath=machine)
    os.rename(machine / "copy", machine / "copy-moved")
    (machine / "copy").symlink_to(host)
    try:
        mounts.mount(source, target, ["bind"])
    finally:
        os.close(source)
        os.close(target)
    try:
        assert sorted(p.name for p in (machine / "live").iterdir()) == ["mine"]
    finally:
        subprocess.run(["umount", str(machine / "live")], check=True)
    with pytest.raises(files.Unreadable, match="a symlink"):
        files.open_beneath(machine / "copy", beneath=machine)
    (machine / "live").rmdir()
    (machine / "live").symlink_to(host)
    with pytest.raises(files.Unreadable, match="a symlink"):
        files.open_beneath(machine / "live", beneath=machine)
