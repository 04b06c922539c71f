"""roots, restore, status and lab reboot through the real command line on a lab machine."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pantheros import btrfs, process
from pantheros.errors import CommandFailed, ExitCode, PantherError
from pantheros.impermanence import restore
from tests.helpers import one_line_error, panther

pytestmark = pytest.mark.root


def reboot(lab: Path) -> subprocess.CompletedProcess[str]:
    proc = panther("lab", "reboot", str(lab))
    assert proc.returncode == 0, proc.stderr
    return proc


def roots(lab: Path) -> list[dict[str, object]]:
    proc = panther("roots", "list", "--json", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    rows: list[dict[str, object]] = json.loads(proc.stdout)["roots"]
    return rows


def test_lab_reboot_erases_the_root_and_keeps_persist(bare_lab: Path) -> None:
    lab = bare_lab
    mnt = lab / "mnt"
    (mnt / "etc").mkdir(exist_ok=True)
    (mnt / "etc" / "scratch").write_text("goes away")
    (mnt / "persist" / "kept").write_text("stays")
    (mnt / "home" / "notes").write_text("stays too")
    reboot(lab)
    assert not (mnt / "etc").exists()
    assert (mnt / "persist" / "kept").read_text() == "stays"
    assert (mnt / "home" / "notes").read_text() == "stays too"
    [row] = roots(lab)
    assert row["keep"] is True
    assert row["reason"] == "among the 3 newest (keep_min)"
    status = json.loads(panther("status", "--json", "--lab", str(lab)).stdout)
    assert status["root"]["state"] == "fresh"
    assert status["root"]["modified_since_creation"] is False
    assert status["old_roots"]["count"] == 1
    assert status["last_rollback"]["result"] == "fresh"


def test_restore_keeps_metadata_and_refuses_to_overwrite(bare_lab: Path, workdir: Path) -> None:
    lab = bare_lab
    mnt = lab / "mnt"
    data = mnt / "var" / "lib" / "app"
    data.mkdir(parents=True)
    (data / "state.db").write_text("precious")
    os.chown(data / "state.db", 1234, 5678)
    os.chmod(data / "state.db", 0o640)
    os.utime(data / "state.db", (1_600_000_000, 1_600_000_000))
    os.setxattr(data / "state.db", "user.origin", b"panther-test")
    subprocess.run(["setfacl", "-m", "u:4321:r", str(data / "state.db")], check=True)
    (data / "link").symlink_to("state.db")
    reboot(lab)
    [row] = roots(lab)
    name = str(row["name"])

    proc = panther("restore", "/var/lib/app", "--from", name, "--lab", str(lab))
    assert proc.returncode == 2  # the parent /var/lib does not exist in the fresh root
    (mnt / "var" / "lib").mkdir(parents=True)
    proc = panther("restore", "/var/lib/app", "--from", name, "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    restored = data / "state.db"
    st = os.lstat(restored)
    assert restored.read_text() == "precious"
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
    assert st.st_mtime == 1_600_000_000
    assert os.getxattr(restored, "user.origin") == b"panther-test"
    acl = subprocess.run(
        ["getfacl", "-cp", str(restored)], capture_output=True, text=True, check=True
    ).stdout
    assert "user:4321:r--" in acl
    assert os.readlink(data / "link") == "state.db"

    (restored).write_text("newer")
    proc = panther("restore", "/var/lib/app/state.db", "--from", name, "--lab", str(lab))
    assert proc.returncode == 5
    assert "give --force" in one_line_error(proc)
    assert restored.read_text() == "newer"
    proc = panther(
        "restore",
        "/var/lib/app/state.db",
        "--from",
        name,
        "--lab",
        str(lab),
        "--to",
        "/var/lib/app/state.db.old",
    )
    assert proc.returncode == 0, proc.stderr
    assert (data / "state.db.old").read_text() == "precious"
    proc = panther("restore", "/var/lib/app/state.db", "--from", name, "--lab", str(lab), "--force")
    assert proc.returncode == 0, proc.stderr
    assert restored.read_text() == "precious"


@pytest.mark.scenario("state-safety: Restore through an escaping symlink is refused")
def test_restore_refuses_a_symlink_that_escapes(lab: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "srv").mkdir()
    (mnt / "srv" / "out").symlink_to("../../../../../../../../etc")
    (mnt / "srv" / "inside").symlink_to("/srv/real")
    (mnt / "srv" / "real").mkdir()
    (mnt / "srv" / "real" / "file").write_text("within")
    reboot(lab)
    name = str(roots(lab)[0]["name"])
    proc = panther(
        "restore", "/srv/out/passwd", "--from", name, "--lab", str(lab), "--to", "/passwd"
    )
    assert proc.returncode == 5
    assert "points outside" in one_line_error(proc)
    assert not (mnt / "passwd").exists()
    # An absolute symlink is read inside the old root, as that machine saw it.
    proc = panther("restore", "/srv/inside/file", "--from", name, "--lab", str(lab), "--to", "/f")
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "f").read_text() == "within"


def test_pin_gc_and_mount(lab: Path, workdir: Path) -> None:
    manifest = json.loads((lab / "manifest.json").read_text())
    manifest["impermanence"]["retention"] = {"keep_min": 1, "max_count": 2}
    (lab / "manifest.json").write_text(json.dumps(manifest))
    for number in range(3):
        (lab / "mnt" / f"boot-{number}").write_text(str(number))
        reboot(lab)
    names = [str(r["name"]) for r in roots(lab)]  # newest first
    assert len(names) == 2  # gc after each reboot keeps max_count=2

    oldest = names[-1]
    for changed in (True, False):  # pinning twice changes nothing the second time
        proc = panther("roots", "pin", oldest, "--lab", str(lab), "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == {"root": oldest, "pinned": True, "changed": changed}
    for number in range(3, 5):
        (lab / "mnt" / f"boot-{number}").write_text(str(number))
        reboot(lab)
    rows = roots(lab)
    assert oldest in [r["name"] for r in rows]
    pinned = next(r for r in rows if r["name"] == oldest)
    assert pinned["pinned"] is True
    assert pinned["reason"] == "pinned"

    assert panther("roots", "unpin", oldest, "--lab", str(lab)).returncode == 0
    dry = panther("roots", "gc", "--dry-run", "--lab", str(lab))
    assert dry.returncode == 0, dry.stderr
    assert f"would delete {oldest}: beyond the 2 newest (max_count)" in dry.stdout
    assert oldest in [r["name"] for r in roots(lab)]
    done = panther("roots", "gc", "--lab", str(lab))
    assert f"delete {oldest}" in done.stdout
    assert oldest not in [r["name"] for r in roots(lab)]

    view = workdir / "view"
    view.mkdir()
    newest = str(roots(lab)[0]["name"])
    proc = panther("roots", "mount", newest, str(view), "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    try:
        assert json.loads(proc.stdout) == {
            "root": newest,
            "mountpoint": str(view),
            "readonly": True,
        }
        assert (view / "boot-4").read_text() == "4"
        with pytest.raises(OSError, match="Read-only file system"):
            (view / "new").write_text("x")
        assert btrfs.subvolume_info(view).name == newest
    finally:
        subprocess.run(["umount", str(view)], check=True)


def test_unknown_root_and_not_a_lab(lab: Path, workdir: Path) -> None:
    proc = panther("roots", "pin", "no-such-root", "--lab", str(lab))
    assert "no old root named 'no-such-root'" in one_line_error(proc)
    proc = panther("status", "--lab", str(workdir / "nowhere"))
    assert "no lab at" in one_line_error(proc)
    proc = panther("restore", "relative/path", "--from", "x", "--lab", str(lab))
    assert "absolute path" in one_line_error(proc)


def test_rollback_refuses_an_up_lab_but_dry_runs(lab: Path) -> None:
    proc = panther("rollback", "--lab", str(lab))
    assert proc.returncode == 5
    assert "panther lab reboot" in one_line_error(proc)
    dry = panther("rollback", "--lab", str(lab), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run" in dry.stdout


def test_restore_to_stays_inside_the_machine(bare_lab: Path, workdir: Path) -> None:
    lab = bare_lab
    mnt = lab / "mnt"
    (mnt / "etc").mkdir(exist_ok=True)
    (mnt / "etc" / "hosts").write_text("old root's")
    reboot(lab)
    name = str(roots(lab)[0]["name"])
    host = workdir / "host-dir"
    host.mkdir()
    (host / "hosts").write_text("the host's")
    (mnt / "out").symlink_to(host)  # a host path, which does not exist inside the lab
    (mnt / "up").symlink_to("../../../../../../../../..")
    for to, why in (("/out/hosts", "does not exist"), ("/up/hosts", "points outside"),
                    ("/", "the machine's /"), ("/persist", "is a mount point")):  # fmt: skip
        for force in ([], ["--force"]):
            proc = panther("restore", "/etc/hosts", "--from", name, "--to", to, *force,
                           "--lab", str(lab))  # fmt: skip
            assert why in one_line_error(proc)
    assert (host / "hosts").read_text() == "the host's"
    assert sorted(p.name for p in host.iterdir()) == ["hosts"]
    assert not [p for p in mnt.iterdir() if ".panther-" in p.name]
    # The old fixed staging name, planted as a link to the host, is not followed.
    (mnt / "etc").mkdir(exist_ok=True)
    (mnt / "etc" / ".hosts.panther-restore").symlink_to(host / "hosts")
    proc = panther("restore", "/etc/hosts", "--from", name, "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "etc" / "hosts").read_text() == "old root's"
    assert (host / "hosts").read_text() == "the host's"
    assert sorted(p.name for p in (mnt / "etc").iterdir()) == [".hosts.panther-restore", "hosts"]


def test_restore_force_never_deletes_across_a_mount(lab: Path, workdir: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "srv" / "data").mkdir(parents=True)
    (mnt / "srv" / "data" / "file").write_text("old root's")
    reboot(lab)
    name = str(roots(lab)[0]["name"])
    (mnt / "srv" / "data" / "inner").mkdir(parents=True)
    (mnt / "home" / "shared").mkdir()
    (mnt / "home" / "shared" / "keep").write_text("on home")
    subprocess.run(
        ["mount", "--bind", str(mnt / "home" / "shared"), str(mnt / "srv" / "data" / "inner")],
        check=True,
    )
    proc = panther("restore", "/srv/data", "--from", name, "--force", "--lab", str(lab))
    assert "a mount point or another subvolume" in one_line_error(proc)
    assert (mnt / "home" / "shared" / "keep").read_text() == "on home"
    subprocess.run(["umount", str(mnt / "srv" / "data" / "inner")], check=True)
    proc = panther("restore", "/srv/data", "--from", name, "--force", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (mnt / "srv" / "data").iterdir()) == ["file"]
    assert sorted(p.name for p in (mnt / "srv").iterdir()) == ["data"]
    # With /persist not mounted, a restore there would land in the root's directory underneath.
    subprocess.run(["umount", str(mnt / "persist")], check=True)
    proc = panther("restore", "/srv/data", "--from", name, "--to", "/persist/data",
                   "--lab", str(lab))  # fmt: skip
    assert "is not the persist subvolume" in one_line_error(proc)
    assert list((mnt / "persist").iterdir()) == []


def test_a_failed_restore_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_root = tmp_path / "old"
    (old_root / "etc").mkdir(parents=True)
    (old_root / "etc" / "hosts").write_text("old")
    dest = tmp_path / "live" / "hosts"
    dest.parent.mkdir()
    dest.write_text("current")

    def half_copy(argv: list[str], **_: object) -> None:
        Path(argv[-1]).write_text("half")  # cp died part-way through
        raise CommandFailed(argv, 1, "cp: error writing: No space left on device")

    monkeypatch.setattr(process, "run", half_copy)
    # Said with the machine's paths: not the host's, nor the staging directory's.
    with pytest.raises(PantherError) as info:
        restore.restore(old_root, "/etc/hosts", dest, force=True, shown="/etc/hosts")
    assert (
        str(info.value) == "cannot copy /etc/hosts from old to /etc/hosts: No space left on device"
    )
    assert info.value.exit_code == ExitCode.TOOL
    assert sorted(p.name for p in dest.parent.iterdir()) == ["hosts"]
    assert dest.read_text() == "current"


def status_of(lab: Path) -> tuple[dict[str, object], str]:
    proc = panther("status", "--json", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    root: dict[str, object] = json.loads(proc.stdout)["root"]
    text = panther("status", "--lab", str(lab))
    assert text.returncode == 0, text.stderr
    return root, text.stdout


def test_restore_from_a_word_and_status_notices_the_write(bare_lab: Path) -> None:
    lab = bare_lab
    mnt = lab / "mnt"
    (mnt / "note").write_text("first boot")
    reboot(lab)
    (mnt / "note").write_text("second boot")
    reboot(lab)
    latest, previous = (str(r["name"]) for r in roots(lab))
    root, text = status_of(lab)
    assert (root["state"], root["modified_since_creation"]) == ("fresh", False)
    assert "unchanged since the rollback" in text

    proc = panther("restore", "/note", "--from", "latest", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["from"] == latest
    assert json.loads(proc.stdout)["to"] == "/note"
    assert (mnt / "note").read_text() == "second boot"
    root, text = status_of(lab)
    # Still the root this boot made, but no longer as it was made: both are said.
    assert (root["state"], root["modified_since_creation"]) == ("fresh", True)
    assert int(str(root["ctransid"])) > int(str(root["otransid"]))
    assert "changed since the rollback" in text
    assert "panther diff" in text

    proc = panther("restore", "/note", "--from", "previous", "--lab", str(lab), "--to", "/p")
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "p").read_text() == "first boot"
    proc = panther("restore", "/note", "--from", "0s", "--lab", str(lab), "--to", "/a")
    assert proc.returncode == 0, proc.stderr
    assert (mnt / "a").read_text() == "second boot"  # the newest root at least 0s old

    for word, says in (("1d", "no old root is 1d old or older"), ("yesterday", "no old root")):
        proc = panther("restore", "/note", "--from", word, "--lab", str(lab), "--to", "/x")
        message = one_line_error(proc)
        assert proc.returncode == 2
        assert says in message
        assert latest in message
        assert previous in message
        assert not (mnt / "x").exists()

    reboot(lab)
    root, text = status_of(lab)
    assert (root["state"], root["modified_since_creation"]) == ("fresh", False)
    (mnt / "tmp-file").write_text("any write")
    root, text = status_of(lab)
    assert (root["state"], root["modified_since_creation"]) == ("fresh", True)
    assert "changed since the rollback" in text
    # Read from the disk while the lab is down: the same fact, without a claim about this boot.
    assert panther("lab", "down", str(lab)).returncode == 0
    root, text = status_of(lab)
    assert (root["state"], root["modified_since_creation"]) == ("down", True)
    assert "changed since it was made" in text
    assert panther("lab", "up", str(lab)).returncode == 0

    record = mnt / "persist" / ".pantheros" / "rollback.json"
    record.write_text('{"time": 1}')
    proc = panther("status", "--lab", str(lab))
    assert (
        "the rollback record /persist/.pantheros/rollback.json is not valid: it has no result"
        in (one_line_error(proc))
    )


def test_roots_list_sizes_from_du_on_request_and_from_quotas(lab: Path) -> None:
    mnt = lab / "mnt"
    (mnt / "blob").write_bytes(os.urandom(2 * 1024 * 1024))  # random: compression cannot shrink it
    reboot(lab)
    table = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)
    [row] = table["roots"]
    assert (row["size_bytes"], row["total_bytes"], row["size_from"]) == (None, None, None)
    assert "quotas are off" in table["size_note"]
    text = panther("roots", "list", "--lab", str(lab)).stdout
    assert "note: EXCL and TOTAL are empty: quotas are off" in text
    assert "--size" in text

    table = json.loads(panther("roots", "list", "--json", "--size", "--lab", str(lab)).stdout)
    [row] = table["roots"]
    assert row["size_from"] == "du"
    assert row["total_bytes"] >= 2 * 1024 * 1024
    assert row["size_bytes"] >= 2 * 1024 * 1024  # nothing else shares the blob's extents
    assert table["size_note"] is None
    assert "2.0M" in panther("roots", "list", "--size", "--lab", str(lab)).stdout

    subprocess.run(["btrfs", "quota", "enable", str(mnt)], check=True)
    subprocess.run(["btrfs", "quota", "rescan", "-w", str(mnt)], check=True, capture_output=True)
    table = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)
    [row] = table["roots"]
    assert row["size_from"] == "quotas"
    assert row["total_bytes"] >= 2 * 1024 * 1024
    assert table["size_note"] is None

    # Numbers the kernel marks inconsistent (a qgroup assigned over shared extents with no
    # rescan) are not shown, nor given to retention.
    shared = mnt / "persist" / "shared"
    btrfs.create_subvolume(shared)
    (shared / "data").write_bytes(os.urandom(1024 * 1024))
    btrfs.sync(mnt)
    btrfs.snapshot(shared, mnt / "persist" / "copy", readonly=True)
    btrfs.sync(mnt)
    copy_id = btrfs.subvolume_info(mnt / "persist" / "copy").id
    for argv in (["create", "1/1"], ["assign", "--no-rescan", f"0/{copy_id}", "1/1"]):
        subprocess.run(["btrfs", "qgroup", *argv, str(mnt)], check=True, capture_output=True)
    table = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)
    assert table["roots"][0]["size_from"] is None
    assert "not consistent" in table["size_note"]
    subprocess.run(["btrfs", "quota", "rescan", "-w", str(mnt)], check=True, capture_output=True)
    table = json.loads(panther("roots", "list", "--json", "--lab", str(lab)).stdout)
    assert table["roots"][0]["size_from"] == "quotas"


def test_a_hostile_stray_name_is_shown_escaped(lab: Path) -> None:
    """A stray's name comes from the disk: under a UTF-8 locale a byte that is not UTF-8 must
    not crash roots list or status, nor an escape sequence reach the terminal."""
    from pantheros.machine import Machine

    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        location = os.fsencode(top / machine.manifest.storage.old_roots)
        os.makedirs(location + b"/stray-\xff\x1b[31m")
    utf8 = {"PYTHONIOENCODING": "utf-8"}
    listed = panther("roots", "list", "--lab", str(lab), env=utf8)
    assert listed.returncode == 0, listed.stderr
    assert "stray-\\xff\\x1b[31m " in listed.stdout
    status = panther("status", "--lab", str(lab), env=utf8)
    assert status.returncode == 0, status.stderr
    assert "strays     stray-\\xff\\x1b[31m (not old roots" in status.stdout
    persisted = os.fsencode(lab / "mnt" / "persist") + b"/kept-\xfe\n"
    Path(os.fsdecode(persisted)).write_text("x")
    strays = panther("persist", "stray", "--lab", str(lab), env=utf8)
    assert strays.returncode == 0, strays.stderr
    assert "/persist/kept-\\xfe\\n" in strays.stdout.splitlines()
