"""`panther persist` on a lab machine: nothing is lost, whatever happens when."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pantheros.state.persist import KILL_AFTER_ENV, STEPS
from tests.helpers import one_line_error, panther

pytestmark = pytest.mark.root


def make_state(root: Path) -> Path:
    """An application's state with the metadata that must survive the move."""
    app = root / "var" / "lib" / "app"
    (app / "sub").mkdir(parents=True)
    (app / "db").write_bytes(os.urandom(100_000))
    (app / "sub" / "conf").write_text("x = 1\n")
    os.chown(app / "db", 1234, 5678)
    os.chmod(app / "db", 0o600)
    os.utime(app / "sub" / "conf", (1_500_000_000, 1_500_000_000))
    os.setxattr(app / "db", "user.kind", b"database")
    subprocess.run(["setfacl", "-m", "u:4321:r", str(app / "sub" / "conf")], check=True)
    os.link(app / "db", app / "db.hardlink")
    (app / "current").symlink_to("db")
    return app


def snapshot_of(tree: Path) -> dict[str, tuple[object, ...]]:
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            link = os.readlink(path) if path.is_symlink() else None
            xattrs = sorted(os.listxattr(path, follow_symlinks=False))
            out[str(path.relative_to(tree))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                                                st.st_nlink, data, link, xattrs)  # fmt: skip
    return out


def test_add_moves_state_keeps_metadata_and_survives_reboot(lab: Path) -> None:
    app = make_state(lab / "mnt")
    before = snapshot_of(app)
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    copy = lab / "mnt" / "persist" / "var" / "lib" / "app"
    assert snapshot_of(copy) == before
    assert snapshot_of(app) == before  # the bind mount shows the copy at the live path
    assert os.stat(app).st_ino == os.stat(copy).st_ino
    recorded = json.loads((lab / "persistence.json").read_text())
    assert recorded["directories"][0]["directory"] == "/var/lib/app"
    listing = json.loads(panther("persist", "list", "--json", "--lab", str(lab)).stdout)
    assert next(e for e in listing if e["path"] == "/var/lib/app")["state"] == "ok"

    assert panther("lab", "reboot", str(lab)).returncode == 0
    assert snapshot_of(app) == before
    diff = json.loads(panther("diff", "--json", "--lab", str(lab)).stdout)
    assert not [c for c in diff["changes"] if c["path"].startswith("/var/lib/app")]


def test_add_records_in_the_given_host_file(lab: Path, workdir: Path) -> None:
    make_state(lab / "mnt")
    (lab / "mnt" / "etc").mkdir(exist_ok=True)
    (lab / "mnt" / "etc" / "adjtime").write_text("0.0 0 0.0\n")
    host_file = workdir / "host.json"
    proc = panther(
        "persist", "add", "/etc/adjtime", "--lab", str(lab), "--host-file", str(host_file)
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(host_file.read_text())["files"][0]["file"] == "/etc/adjtime"


@pytest.mark.scenario("diff-and-persist: Killed at any step")
@pytest.mark.parametrize("step", STEPS)
def test_killed_at_any_step_the_source_is_intact_and_a_rerun_completes(
    lab: Path, step: str
) -> None:
    app = make_state(lab / "mnt")
    before = snapshot_of(app)
    killed = panther("persist", "add", "/var/lib/app", "--lab", str(lab),
                     env={KILL_AFTER_ENV: step})  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    copy = lab / "mnt" / "persist" / "var" / "lib" / "app"
    if STEPS.index(step) < STEPS.index("mounted"):
        assert snapshot_of(app) == before, "the source is untouched until the copy is mounted"
    else:
        assert snapshot_of(copy) == before, "once mounted, the verified copy holds everything"
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert snapshot_of(app) == before
    assert snapshot_of(copy) == before
    assert not list((lab / "mnt" / "persist" / ".pantheros" / "journal").iterdir())
    assert panther("lab", "reboot", str(lab)).returncode == 0
    assert snapshot_of(app) == before


def test_an_existing_copy_is_never_overwritten_and_merge_adds(lab: Path) -> None:
    root = lab / "mnt"
    app = make_state(root)
    copy = root / "persist" / "var" / "lib" / "app"
    copy.mkdir(parents=True)
    (copy / "db").write_text("the persistent one")
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 5
    assert "is never overwritten" in one_line_error(proc)
    assert (copy / "db").read_text() == "the persistent one"
    assert (app / "db").stat().st_size == 100_000
    proc = panther("persist", "add", "/var/lib/app", "--merge", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert (copy / "db").read_text() == "the persistent one"
    assert (copy / "sub" / "conf").read_text() == "x = 1\n"
    assert (app / "sub" / "conf").read_text() == "x = 1\n"


def test_remove_stray_and_bad_input(lab: Path) -> None:
    root = lab / "mnt"
    make_state(root)
    assert panther("persist", "add", "/var/lib/app", "--lab", str(lab)).returncode == 0
    (root / "persist" / "leftover").mkdir()
    strays = json.loads(panther("persist", "stray", "--json", "--lab", str(lab)).stdout)
    assert strays == ["/persist/leftover"]  # as the machine sees it

    proc = panther("persist", "remove", "/var/lib/app", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    assert (root / "var" / "lib" / "app" / "sub" / "conf").read_text() == "x = 1\n"
    assert (root / "persist" / "var" / "lib" / "app" / "db").exists()  # kept until --purge
    assert json.loads((lab / "persistence.json").read_text())["directories"] == []
    proc = panther("persist", "remove", "/var/lib/nixos", "--lab", str(lab))
    assert "declared in the NixOS configuration" in one_line_error(proc)

    assert "on the persist subvolume: it already survives" in one_line_error(
        panther("persist", "add", "/persist/x", "--lab", str(lab))
    )
    assert "does not exist" in one_line_error(
        panther("persist", "add", "/var/lib/none", "--lab", str(lab))
    )
    assert "absolute path" in one_line_error(panther("persist", "add", "rel", "--lab", str(lab)))
