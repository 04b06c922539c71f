"""The shared file idioms, on real files: `copy_all` keeps what `cp -a` keeps, `write_json`
replaces a record whole or not at all."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pantheros import fsutil
from pantheros.errors import PantherError

NEEDS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another owner)")


def _tree(base: Path) -> Path:
    """A tree holding every kind of metadata cp -a keeps."""
    src = base / "src"
    (src / "sub").mkdir(parents=True)
    data = src / "sub" / "data"
    data.write_bytes(b"x" * 70000)
    os.link(data, src / "hardlink")
    (src / "link").symlink_to("sub/data")
    os.setxattr(data, "user.panther", b"kept")
    os.chown(data, 1234, 5678)
    os.chown(src / "link", 4321, 8765, follow_symlinks=False)
    os.chmod(src / "sub", 0o2751)
    os.chmod(data, 0o640)
    os.utime(data, ns=(1_000_000_000_123, 2_000_000_000_456))
    os.utime(src / "sub", ns=(3_000_000_000_000, 4_000_000_000_000))
    return src


@NEEDS_ROOT
def test_copy_all_keeps_owner_mode_xattrs_times_links(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    dest = tmp_path / "dest"
    fsutil.copy_all(src, dest)
    for rel in ("", "sub", "sub/data", "hardlink", "link"):
        a, b = os.lstat(src / rel), os.lstat(dest / rel)
        assert (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid), rel
        assert a.st_mtime_ns == b.st_mtime_ns, rel
    assert os.getxattr(dest / "sub" / "data", "user.panther") == b"kept"
    assert os.readlink(dest / "link") == "sub/data"
    assert os.lstat(dest / "hardlink").st_ino == os.lstat(dest / "sub" / "data").st_ino
    assert os.lstat(dest / "hardlink").st_ino != os.lstat(src / "hardlink").st_ino
    assert (dest / "sub" / "data").read_bytes() == b"x" * 70000


def test_copy_all_of_a_missing_source_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(PantherError) as raised:
        fsutil.copy_all(tmp_path / "absent", tmp_path / "dest")
    assert "\n" not in str(raised.value)
    assert str(raised.value).startswith("cp failed:")
    assert not os.path.lexists(tmp_path / "dest")


def test_staging_dir_is_private_and_recognised(tmp_path: Path) -> None:
    dest = tmp_path / "app"
    first, second = fsutil.staging_dir(dest), fsutil.staging_dir(dest)
    assert first != second
    assert first.parent == tmp_path == second.parent
    assert stat.S_IMODE(os.lstat(first).st_mode) == 0o700
    assert fsutil.is_staging_dir(first, dest)
    assert not fsutil.is_staging_dir(first, tmp_path / "other")
    assert not fsutil.is_staging_dir(tmp_path / "elsewhere" / first.name, dest)


def test_write_json_replaces_whole_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old")
    os.chmod(path, 0o600)
    fsutil.write_json(path, {"b": 1, "a": [1, 2]}, sort_keys=True)
    text = path.read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.index('"a"') < text.index('"b"')
    assert text.endswith("}\n")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_write_json_of_what_json_cannot_encode_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    fsutil.write_json(path, {"kept": True})
    with pytest.raises(TypeError):
        fsutil.write_json(path, {"big": "y" * 100000, "bad": object()})
    assert json.loads(path.read_text()) == {"kept": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_replace_file_failing_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "record"
    fsutil.replace_file(path, b"old")

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(PantherError) as raised:
        fsutil.replace_file(path, b"new" * 100000)
    assert str(raised.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record"]


def test_replace_file_killed_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    fsutil.write_json(path, {"kept": True})
    # SIGKILLed with the new content written out, at the fsync before the rename.
    script = f"""
import os, signal
from pathlib import Path
from pantheros import fsutil

os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
fsutil.write_json(Path({str(path)!r}), {{"big": "y" * 1000000}})
"""
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"kept": True}
    leftovers = [p for p in tmp_path.iterdir() if p.name != "record.json"]
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".record.json.")
    assert leftovers[0].name.endswith(".tmp")
    assert os.path.getsize(leftovers[0]) > 1000000  # it had written the new content
    fsutil.write_json(path, {"next": 1})  # the leftover never stands in the way
    assert json.loads(path.read_text()) == {"next": 1}


def test_write_json_flushes_the_file_before_and_the_directory_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def replace(src: str, dst: Path) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    fsutil.write_json(tmp_path / "record.json", [1])
    assert events == ["fsync file", "replace", "fsync dir"]


def test_write_json_does_not_follow_a_planted_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    records = tmp_path / "records"
    records.mkdir()
    for name in ("record.json.tmp", ".record.json.tmp"):
        (records / name).symlink_to(outside)
    fsutil.write_json(records / "record.json", {"a": 1})
    assert outside.read_text() == "untouched"
    assert json.loads((records / "record.json").read_text()) == {"a": 1}


def test_write_json_into_a_missing_directory_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(PantherError) as raised:
        fsutil.write_json(tmp_path / "absent" / "record.json", {})
    assert (
        str(raised.value)
        == f"cannot write {tmp_path}/absent/record.json: No such file or directory"
    )
