"""`panther persist` under hostile paths, crashes, an unmounted /persist and a busy machine."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pantheros import btrfs, locking, mounttable
from pantheros.errors import Refused
from pantheros.fsutil import remove_path
from pantheros.lab.lab import Lab
from pantheros.state.persist import KILL_AFTER_ENV
from tests.helpers import one_line_error, panther

pytestmark = pytest.mark.root


def mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    return sorted(m.mountpoint for m in mounttable.mountinfo() if m.mountpoint.startswith(prefix))


def journals(lab: Path) -> list[str]:
    directory = lab / "mnt" / "persist" / ".pantheros" / "journal"
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def recorded(lab: Path) -> list[str]:
    path = lab / "persistence.json"
    if not path.exists():
        return []
    data = json.loads(path.read_text())
    return [i["directory"] for i in data["directories"]] + [i["file"] for i in data["files"]]


def reboot(lab: Path) -> None:
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.scenario("state-safety: Persist through a symlinked parent loses nothing")
def test_a_symlinked_parent_is_resolved_inside_the_machine(lab: Path, workdir: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "data" / "app").mkdir(parents=True)
    os.chmod(mnt / "data", 0o750)
    (mnt / "data" / "app" / "state").write_text("precious")
    (mnt / "srv").symlink_to("/data")  # absolute: read as the machine sees it, not the host
    proc = panther("persist", "add", "/srv/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert "/srv/app resolves to /data/app" in proc.stderr
    copy = mnt / "persist" / "data" / "app"
    assert (copy / "state").read_text() == "precious"
    assert recorded(lab) == ["/data/app"]
    # A missing parent takes the resolved live parent's owner and mode, never a symlink's 0777.
    assert stat.S_IMODE(os.lstat(mnt / "persist" / "data").st_mode) == 0o750
    assert str((mnt / "data" / "app").resolve()) in mounts_under(lab)
    reboot(lab)
    assert (mnt / "data" / "app" / "state").read_text() == "precious"
    proc = panther("persist", "remove", "/data/app", "--purge", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "data" / "app" / "state").read_text() == "precious"
    assert not copy.exists()


def test_a_symlink_to_the_host_or_to_persist_changes_nothing(lab: Path, workdir: Path) -> None:
    mnt = lab / "mnt"
    host = workdir / "host-dir"
    host.mkdir()
    (host / "file").write_text("the host's")
    (mnt / "srv").symlink_to(host)  # names a host path, which inside the lab does not exist
    proc = panther("persist", "add", "/srv/file", "--lab", str(lab))
    assert "does not exist" in one_line_error(proc)
    (mnt / "up").symlink_to("../../../../../../../../..")
    proc = panther("persist", "add", "/up/etc", "--lab", str(lab))
    assert "points outside" in one_line_error(proc)
    (mnt / "persist" / "etc" / "kept").parent.mkdir(parents=True, exist_ok=True)
    (mnt / "persist" / "etc" / "kept").write_text("persistent")
    (mnt / "in-persist").symlink_to("/persist")
    proc = panther("persist", "add", "/in-persist/etc", "--lab", str(lab))
    assert "/persist/etc (/in-persist/etc resolves to it) is on the persist subvolume" in (
        one_line_error(proc)
    )
    proc = panther("persist", "remove", "/in-persist/etc", "--purge", "--lab", str(lab))
    assert proc.returncode != 0
    assert (mnt / "persist" / "etc" / "kept").read_text() == "persistent"
    assert (host / "file").read_text() == "the host's"
    assert mounts_under(host) == []
    assert mounts_under(workdir / "lab" / "mnt" / "srv") == []
    assert recorded(lab) == []
    assert journals(lab) == []


def test_a_symlink_itself_and_a_symlinked_copy_are_refused(lab: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "etc").mkdir(exist_ok=True)
    (mnt / "etc" / "real").write_text("x")
    (mnt / "etc" / "link").symlink_to("real")
    proc = panther("persist", "add", "/etc/link", "--lab", str(lab))
    assert "is a symlink (to real)" in one_line_error(proc)
    (mnt / "srv" / "app").mkdir(parents=True)
    (mnt / "persist" / "srv").symlink_to("/etc")
    proc = panther("persist", "add", "/srv/app", "--lab", str(lab))
    assert "symlink on its way in persistent storage" in one_line_error(proc)
    assert recorded(lab) == []
    assert journals(lab) == []


def test_a_path_holding_a_mount_or_a_subvolume_is_refused(lab: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "var" / "log" / "journal").mkdir(parents=True, exist_ok=True)
    (mnt / "var" / "log" / "journal" / "system").write_text("logs")
    before = mounts_under(lab)
    for action in ("add", "remove"):
        proc = panther("persist", action, "/var", "--lab", str(lab))
        assert "contains /var/log, where another subvolume is mounted" in one_line_error(proc)
    assert (mnt / "var" / "log" / "journal" / "system").read_text() == "logs"
    # A nested subvolume, and a bind mount the manifest knows nothing about.
    (mnt / "srv").mkdir()
    btrfs.create_subvolume(mnt / "srv" / "machines")
    (mnt / "opt" / "tool").mkdir(parents=True)
    (mnt / "home" / "shared").mkdir()
    subprocess.run(["mount", "--bind", str(mnt / "home" / "shared"), str(mnt / "opt" / "tool")],
                   check=True)  # fmt: skip
    for path in ("/srv", "/opt"):
        proc = panther("persist", "add", path, "--lab", str(lab))
        assert "a mount point or another subvolume" in one_line_error(proc)
    # And a path below such a mount or inside such a subvolume is not on the root either.
    (mnt / "home" / "shared" / "x").mkdir()
    (mnt / "srv" / "machines" / "y").mkdir()
    proc = panther("persist", "add", "/opt/tool/x", "--lab", str(lab))
    assert "is on the mount at" in one_line_error(proc)
    proc = panther("persist", "add", "/srv/machines/y", "--lab", str(lab))
    assert "on another subvolume or filesystem than the root" in one_line_error(proc)
    assert not (mnt / "persist" / "srv").exists()
    assert not (mnt / "persist" / "opt").exists()
    assert mounts_under(lab) == sorted([*before, str((mnt / "opt" / "tool").resolve())])
    assert recorded(lab) == []
    assert journals(lab) == []


def test_deletion_never_crosses_a_mount(lab: Path, workdir: Path) -> None:
    mnt = lab / "mnt"
    tree = mnt / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "file").write_text("goes")
    (workdir / "outside").mkdir()
    (workdir / "outside" / "keep").write_text("stays")
    subprocess.run(["mount", "--bind", str(workdir / "outside"), str(tree / "a" / "b")], check=True)
    with pytest.raises(Refused, match="is a mount point"):
        remove_path(tree)
    assert (workdir / "outside" / "keep").read_text() == "stays"
    subprocess.run(["umount", str(tree / "a" / "b")], check=True)
    btrfs.create_subvolume(tree / "a" / "b" / "sub")
    (tree / "a" / "b" / "sub" / "keep").write_text("stays")
    with pytest.raises(Refused, match="another subvolume"):
        remove_path(tree)
    assert (tree / "a" / "b" / "sub" / "keep").read_text() == "stays"


@pytest.mark.parametrize("step", ["staged", "placed", "recorded"])
def test_a_resumed_add_keeps_what_changed_meanwhile(lab: Path, step: str) -> None:
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("old")
    (app / "gone").write_text("deleted meanwhile")
    killed = panther("persist", "add", "/var/lib/app", "--lab", str(lab),
                     env={KILL_AFTER_ENV: step})  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    (app / "db").write_text("new")
    (app / "added").write_text("written meanwhile")
    (app / "gone").unlink()
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    expected = {"db": "new", "added": "written meanwhile"}
    assert {p.name: p.read_text() for p in app.iterdir()} == expected
    reboot(lab)
    assert {p.name: p.read_text() for p in app.iterdir()} == expected
    staging = [p for p in app.parent.iterdir() if ".panther-" in p.name]
    staging += [p for p in (lab / "mnt/persist/var/lib").iterdir() if ".panther-" in p.name]
    assert staging == []
    assert journals(lab) == []


def test_remove_clears_the_journal_and_purge_then_add_works(lab: Path) -> None:
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("one")
    killed = panther("persist", "add", "/var/lib/app", "--lab", str(lab),
                     env={KILL_AFTER_ENV: "recorded"})  # fmt: skip
    assert killed.returncode == -9
    assert len(journals(lab)) == 1
    proc = panther("persist", "remove", "/var/lib/app", "--purge", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert journals(lab) == []
    assert recorded(lab) == []
    assert (app / "db").read_text() == "one"
    assert not (lab / "mnt" / "persist" / "var" / "lib" / "app").exists()
    (app / "db").write_text("two")
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    reboot(lab)
    assert (app / "db").read_text() == "two"


def test_an_unmounted_or_wrong_persist_is_refused(lab: Path) -> None:
    mnt = lab / "mnt"
    app = mnt / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("data")
    subprocess.run(["umount", str(mnt / "persist")], check=True)
    for argv in (["add", "/var/lib/app"], ["remove", "/var/lib/app"]):
        proc = panther("persist", *argv, "--lab", str(lab))
        assert "/persist in the lab" in one_line_error(proc)
        assert "is not the persist subvolume" in proc.stderr
    assert list((mnt / "persist").iterdir()) == []
    # Another subvolume mounted there (same filesystem, wrong UUID) is not it either.
    subprocess.run(["mount", "--bind", str(mnt / "home"), str(mnt / "persist")], check=True)
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert "is not the persist subvolume" in one_line_error(proc)
    assert (app / "db").read_text() == "data"
    assert not (mnt / "home" / "var").exists()
    assert recorded(lab) == []


@pytest.mark.scenario("state-safety: Second writer waits or is busy")
def test_one_writer_busy_without_waiting(lab: Path) -> None:
    (lab / "mnt" / "etc").mkdir(exist_ok=True)
    (lab / "mnt" / "etc" / "x").write_text("x")
    with locking.exclusive(lab / ".lock", what="the lab"):
        for argv in (["persist", "add", "/etc/x"], ["persist", "remove", "/etc/x"],
                     ["restore", "/etc/x", "--from", "none"]):  # fmt: skip
            proc = panther(*argv, "--no-wait", "--lab", str(lab))
            assert proc.returncode == 5
            assert "is busy" in one_line_error(proc)
    assert recorded(lab) == []
    assert journals(lab) == []


def test_list_states_and_bad_paths(lab: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "etc").mkdir(exist_ok=True)
    (mnt / "etc" / "adjtime").write_text("0.0 0 0.0\n")
    (mnt / "var" / "lib" / "app").mkdir(parents=True)
    (mnt / "var" / "lib" / "app" / "db").write_text("db")
    for path in ("/etc/adjtime", "/var/lib/app"):
        assert panther("persist", "add", path, "--lab", str(lab)).returncode == 0

    def listing() -> dict[str, str]:
        proc = panther("persist", "list", "--json", "--lab", str(lab))
        assert proc.returncode == 0, proc.stderr
        return {e["path"]: e["state"] for e in json.loads(proc.stdout)}

    states = listing()
    assert states["/etc/adjtime"] == "ok"
    assert states["/var/lib/app"] == "ok"
    (lab / "mnt" / "persist" / "var" / "lib" / "app" / "db").unlink()
    (lab / "mnt" / "persist" / "etc" / "ssh" / "ssh_host_ed25519_key.pub").unlink()
    assert panther("lab", "down", str(lab)).returncode == 0
    states = listing()
    assert states["/etc/adjtime"] == "machine down"
    assert states["/var/lib/app"] == "machine down"
    assert states["/etc/ssh/ssh_host_ed25519_key.pub"] == "missing data"
    assert panther("lab", "up", str(lab)).returncode == 0

    proc = panther("persist", "add", "/", "--lab", str(lab))
    assert "/ is the whole root" in one_line_error(proc)
    for bad in ("/var/lib/new\nline", "/var/lib/\udcff"):
        proc = panther("persist", "add", bad, "--lab", str(lab))
        assert "newline" in one_line_error(proc) or "not valid UTF-8" in proc.stderr
    assert sorted(recorded(lab)) == ["/etc/adjtime", "/var/lib/app"]


def test_a_symlinked_entry_never_stops_a_reboot(lab: Path, workdir: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "var" / "lib" / "app").mkdir(parents=True)
    (mnt / "var" / "lib" / "app" / "db").write_text("db")
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    host = workdir / "host-target"
    host.mkdir()
    (mnt / "persist" / "etc").mkdir(exist_ok=True)
    (mnt / "persist" / "etc" / "evil").symlink_to(host)
    data = json.loads((lab / "persistence.json").read_text())
    data["directories"].append({"directory": "/etc/evil"})
    (lab / "persistence.json").write_text(json.dumps(data))
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert "/etc/evil is not mounted" in proc.stderr
    assert (mnt / "var" / "lib" / "app" / "db").read_text() == "db"
    assert mounts_under(host) == []
    assert not os.path.ismount(mnt / "etc" / "evil")


def test_two_adds_of_one_path_at_once(lab: Path) -> None:
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_bytes(os.urandom(4_000_000))
    before = (app / "db").read_bytes()
    with ThreadPoolExecutor(2) as pool:
        procs = list(pool.map(lambda _: panther("persist", "add", "/var/lib/app", "--lab",
                                                str(lab)), range(2)))  # fmt: skip
    # The second finds it done: "already persistent" is bad input (2), as in docs/cli.md.
    assert sorted(p.returncode for p in procs) == [0, 2], [p.stderr for p in procs]
    loser = next(p for p in procs if p.returncode == 2)
    assert loser.stderr.splitlines()[-1].endswith("/var/lib/app is already persistent")
    assert (app / "db").read_bytes() == before
    assert journals(lab) == []
    assert recorded(lab) == ["/var/lib/app"]


def test_remove_keeps_live_data_that_was_never_covered_and_a_stale_journal_is_dropped(
    lab: Path,
) -> None:
    mnt = lab / "mnt"
    app = mnt / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("persisted")
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    subprocess.run(["umount", str(app)], check=True)  # as if the boot had not mounted it
    (app / "db").write_text("written since, on the root")
    proc = panther("persist", "remove", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert "its live data is kept as is" in proc.stderr
    assert (app / "db").read_text() == "written since, on the root"
    assert (mnt / "persist" / "var" / "lib" / "app" / "db").read_text() == "persisted"
    assert Lab(lab).is_up()
    # A journal that names a copy nobody has any more (an old --purge) starts the add afresh.
    proc = panther("persist", "remove", "/var/lib/app", "--purge", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    killed = panther("persist", "add", "/var/lib/app", "--lab", str(lab),
                     env={KILL_AFTER_ENV: "placed"})  # fmt: skip
    assert killed.returncode == -9
    remove_path(mnt / "persist" / "var" / "lib" / "app")
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert "names no copy; starting again" in proc.stderr
    reboot(lab)
    assert (app / "db").read_text() == "written since, on the root"


def test_a_file_where_the_copy_needs_a_directory_is_one_line_and_resumable(lab: Path) -> None:
    mnt = lab / "mnt"
    app = mnt / "opt" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("data")
    (mnt / "persist" / "opt").write_text("in the way")  # where /persist/opt/ must be made
    proc = panther("persist", "add", "/opt/app", "--lab", str(lab))
    persist_opt = (mnt / "persist" / "opt").resolve()
    assert one_line_error(proc).startswith(
        f"panther: error: persist add /opt/app: Not a directory: {persist_opt}/"
    )
    assert proc.returncode == 1
    assert (app / "db").read_text() == "data"
    assert mounts_under(app) == []
    assert recorded(lab) == []
    (mnt / "persist" / "opt").unlink()
    proc = panther("persist", "add", "/opt/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "persist" / "opt" / "app" / "db").read_text() == "data"
    assert journals(lab) == []


def test_a_malformed_persistence_file_or_journal_is_one_line_and_changes_nothing(
    lab: Path,
) -> None:
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    (app / "db").write_text("data")
    host_file = lab / "persistence.json"
    for items in ([{"user": "root"}], ["/var/lib/x"], {"directory": "/x"}, [{"directory": 7}]):
        host_file.write_text(json.dumps({"version": 1, "directories": items}))
        for argv in (["add", "/var/lib/app"], ["list"], ["stray"]):
            proc = panther("persist", *argv, "--lab", str(lab))
            assert one_line_error(proc) == (
                f'panther: error: {host_file}: "directories" is not a list of '
                '{"directory": PATH, ...} items'
            )
            assert proc.returncode == 2
    host_file.unlink()
    assert journals(lab) == []
    killed = panther("persist", "add", "/var/lib/app", "--lab", str(lab),
                     env={KILL_AFTER_ENV: "staged"})  # fmt: skip
    assert killed.returncode == -9
    (name,) = journals(lab)
    journal = lab / "mnt" / "persist" / ".pantheros" / "journal" / name
    data = json.loads(journal.read_text())
    assert data["step"] == "staged"
    del data["boot"]
    journal.write_text(json.dumps(data))
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert one_line_error(proc) == (
        f"panther: error: {journal} is not a journal of /var/lib/app: move it away"
    )
    assert proc.returncode == 2
    assert (app / "db").read_text() == "data"
    assert mounts_under(app) == []


@pytest.mark.parametrize(
    ("item", "says"),
    [
        ({"directory": "/var/lib/app", "mode": "07777777"}, "$.directories[0].mode"),
        ({"directory": "/var/lib/app", "mode": "8"}, "$.directories[0].mode"),
        ({"directory": "/../../../etc"}, "$.directories[0].directory"),
        ({"directory": "/var//lib"}, "$.directories[0].directory"),
        ({"directory": "/var/lib/app\n"}, "$.directories[0].directory"),
        ({"directory": "/var/lib/app", "user": "a b"}, "$.directories[0].user"),
        ({"directory": "/var/lib/app", "owner": "root"}, "$.directories[0]"),
        ({"directory": "/home/alice"}, "/home/alice lies on the home subvolume"),
        ({"directory": "/var"}, "/var holds the mount point /var/log"),
    ],
)
def test_a_persistence_entry_is_held_to_the_manifest_s_rules(
    bare_lab: Path, item: dict[str, str], says: str
) -> None:
    """A mode is 0 to 07777 and a path absolute and normalised, as in the manifest: what the
    file says is what the NixOS module would declare, so a bad one is refused, not guessed.
    (A lab that persists nothing of /etc, so that /persist/etc appearing would be `add`'s.)"""
    lab = bare_lab
    host_file = lab / "persistence.json"
    host_file.write_text(json.dumps({"version": 1, "directories": [item]}))
    for argv in (["list"], ["stray"], ["add", "/etc"]):
        proc = panther("persist", *argv, "--lab", str(lab))
        line = one_line_error(proc)
        assert line.startswith(f"panther: error: the persistence file {host_file} is not valid: ")
        assert says in line
        assert "symlink" not in line
        assert proc.returncode == 2
    proc = panther("diff", "--lab", str(lab))
    assert says in one_line_error(proc)
    assert not (lab / "mnt" / "persist" / "etc").exists()


def test_stray_never_lists_through_a_symlink(lab: Path, workdir: Path) -> None:
    host = workdir / "host-secrets"
    host.mkdir()
    (host / "lib").mkdir()
    (host / "lib" / "host-only").write_text("x")
    app = lab / "mnt" / "var" / "lib" / "app"
    app.mkdir(parents=True)
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    persist = lab / "mnt" / "persist"
    os.rename(persist / "var", persist / "var-kept")
    (persist / "var").symlink_to(host)  # /persist/var/lib/app's parent, now the host's
    proc = panther("persist", "stray", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert "/persist/var" in found  # as the machine sees it
    assert not any("host-only" in path for path in found)
    states = json.loads(panther("persist", "list", "--lab", str(lab), "--json").stdout)
    assert {s["path"]: s["state"] for s in states}["/var/lib/app"] == "symlink on the path"
