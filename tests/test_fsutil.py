"""The shared file idioms, on real files: `copy_all` keeps what `cp -a` keeps (records:
tests/test_files.py)."""

from __future__ import annotations

import os
import stat
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
