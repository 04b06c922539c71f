"""Small file helpers shared by diff, persist and restore (records: pantheros.files).

One helper per idiom: `copy_all` copies as `cp -a` does (into a `staging_dir` beside the
destination, so the last step is a rename in one directory).

Paths inside a machine are resolved chroot-style (`resolve_inside`), and deletion goes through
directory file descriptors opened with openat2(RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS): the kernel
refuses to step into another mount or through a symlink, and a change of st_dev (a btrfs
subvolume, another filesystem) stops it too. Nothing is deleted across a mount.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import tempfile
from pathlib import Path

from pantheros import mounttable, process
from pantheros.errors import PantherError, Refused
from pantheros.files import STRICT, open_regular, openat2

FS_IOC_FIEMAP = 0xC020660B
_FIEMAP = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQ16xI12x")
_FLAG_SYNC = 0x1
_LAST = 0x1
# Extents whose physical address says nothing about the data: compare the bytes instead.
_OPAQUE = 0x2 | 0x4 | 0x100 | 0x200 | 0x400 | 0x800

Path_ = str | bytes | os.PathLike[str]
StrPath = str | os.PathLike[str]


def extents(path: Path_, batch: int = 256) -> list[tuple[int, int, int]] | None:
    """(logical, physical, length) of every extent (FIEMAP), or None where that says nothing."""
    found: list[tuple[int, int, int]] = []
    start = 0
    fd = open_regular(path)
    if fd is None:
        return None
    with open(fd, "rb") as f:
        while True:
            buf = bytearray(_FIEMAP.size + batch * _EXTENT.size)
            _FIEMAP.pack_into(buf, 0, start, 2**64 - 1 - start, _FLAG_SYNC, 0, batch, 0)
            try:
                fcntl.ioctl(f.fileno(), FS_IOC_FIEMAP, buf, True)
            except OSError:
                return None
            mapped = _FIEMAP.unpack_from(buf)[3]
            if mapped == 0:
                return found
            for index in range(mapped):
                logical, physical, length, flags = _EXTENT.unpack_from(
                    buf, _FIEMAP.size + index * _EXTENT.size
                )
                if flags & _OPAQUE:
                    return None
                found.append((logical, physical, length))
                if flags & _LAST:
                    return found
            start = found[-1][0] + found[-1][2]


def same_bytes(a: Path_, b: Path_) -> bool:
    """Whether two regular files hold the same data.

    Files that share every extent (a reflink copy) hold the same data by construction, which
    FIEMAP shows without reading them; otherwise they are read in 1 MiB blocks.
    """
    if os.path.getsize(a) == os.path.getsize(b):
        mine = extents(a)
        if mine and mine == extents(b):
            return True
    # Opened as regular files only: one swapped for a FIFO meanwhile differs, it is not waited on.
    fd_a = open_regular(a)
    fd_b = open_regular(b) if fd_a is not None else None
    if fd_a is None or fd_b is None:
        if fd_a is not None:
            os.close(fd_a)
        return False
    with open(fd_a, "rb") as fa, open(fd_b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def xattrs(path: Path_) -> dict[str, bytes]:
    """Extended attributes (ACLs included) of path itself, not of a symlink's target."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    except OSError:
        return {}


MAX_SYMLINKS = 40


def resolve_inside(base: Path, path: str) -> str:
    """The absolute path `path` names inside the tree at `base`, resolved as if base were `/`.

    Symlinks among the parents are followed inside base (an absolute target starts again at
    base); one that climbs above base is refused, never clamped. The last component is not
    followed, so the result names a symlink itself when path ends in one.
    """
    parts = list(Path(os.path.normpath("/" + path)).parts[1:])
    current: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            # normpath removed the caller's own "..": this one came from a symlink.
            if not current:
                raise Refused(f"a symlink in {path!r} points outside {base}")
            current.pop()
            continue
        candidate = base.joinpath(*current, name)
        if parts and candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise Refused(f"{path!r}: too many levels of symlinks")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current.append(name)
    return "/" + "/".join(current)


def mount_point_of(path: StrPath) -> str:
    """The mount point of the mount that holds path (its parent's, when path is a symlink)."""
    parent, name = os.path.split(os.path.abspath(path))
    real = os.path.join(os.path.realpath(parent), name)
    points = [m.mountpoint for m in mounttable.mountinfo()]
    inside = [m for m in points if real == m or real.startswith(m.rstrip("/") + "/")]
    return max(inside, key=len)


def foreign_inside(path: StrPath) -> str | None:
    """Something under path (not path itself) that is a mount point or another filesystem.

    Mount points come from the kernel's mount table (bind mounts of the same filesystem too);
    a btrfs subvolume or anything else with another st_dev is found by walking the tree.
    """
    real = os.path.realpath(path)
    prefix = real.rstrip("/") + "/"
    for entry in mounttable.mountinfo():
        if entry.mountpoint.startswith(prefix):
            return entry.mountpoint
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    device = os.lstat(path).st_dev
    for dirpath, dirnames, _ in os.walk(path):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.lstat(full).st_dev != device:
                return os.path.join(real, os.path.relpath(full, path))
    return None


def _open_child(parent: int, name: str, shown: str) -> int:
    """A directory entry of parent, opened only if it is a directory on the same mount."""
    try:
        return openat2(parent, name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, STRICT)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            raise Refused(f"{shown} is a mount point: nothing is deleted across a mount") from None
        raise PantherError(f"cannot open {shown}: {exc.strerror}") from None


def _clear(fd: int, device: int, shown: str) -> None:
    """Delete everything in the directory open at fd, never leaving device."""
    if os.fstat(fd).st_dev != device:
        raise Refused(f"{shown} is another subvolume or filesystem: it is not deleted")
    for entry in sorted(os.scandir(fd), key=lambda e: e.name):
        child = f"{shown}/{entry.name}"
        try:
            if entry.is_dir(follow_symlinks=False):
                sub = _open_child(fd, entry.name, child)
                try:
                    _clear(sub, device, child)
                finally:
                    os.close(sub)
                os.rmdir(entry.name, dir_fd=fd)
            else:
                os.unlink(entry.name, dir_fd=fd)
        except OSError as exc:
            raise PantherError(f"cannot delete {child}: {exc.strerror}") from None


def open_beneath(base: StrPath, rel: str) -> int:
    """The directory rel under base, reached without a symlink, a mount or `..` on the way."""
    top = os.open(base, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return openat2(top, rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, STRICT)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EXDEV):
            why = "a symlink" if exc.errno == errno.ELOOP else "a mount"
            raise Refused(f"{rel} under {os.fsdecode(base)} passes through {why}") from None
        raise
    finally:
        os.close(top)


def empty_directory(base: StrPath, rel: str) -> None:
    """Delete what is in the directory rel under base, keeping it; absent is fine.

    Stops with an error at a mount point, another subvolume or a symlinked parent.
    """
    try:
        fd = open_beneath(base, rel)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        _clear(fd, os.fstat(fd).st_dev, os.path.join(os.fsdecode(base), rel))
    finally:
        os.close(fd)


def remove_path(path: StrPath) -> None:
    """Remove a file, a symlink (not its target) or a whole directory tree; absent is fine.

    A tree holding a mount point or another subvolume is refused where it is met; what was
    already deleted stays deleted, so callers check with `foreign_inside` first.
    """
    shown = os.fsdecode(path)
    parent_path, name = os.path.split(os.path.abspath(path))
    parent = os.open(parent_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        try:
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=parent)
                return
            fd = _open_child(parent, name, shown)
            try:
                _clear(fd, st.st_dev, shown)
            finally:
                os.close(fd)
            os.rmdir(name, dir_fd=parent)
        except OSError as exc:
            raise PantherError(f"cannot delete {shown}: {exc.strerror}") from None
    finally:
        os.close(parent)


def copy_all(source: StrPath, dest: StrPath) -> None:
    """Copy source (a file or a whole tree) to dest, which does not exist yet, as `cp -a` does.

    Owner, group, mode, timestamps, ACLs, xattrs and hardlinks are kept; reflinks share the
    data where the filesystem can (btrfs), so a copy within one filesystem costs no data.
    """
    argv = ["cp", "-a", "--reflink=auto", "--no-target-directory"]
    process.run([*argv, os.fspath(source), os.fspath(dest)], check=True)


STAGING_MARK = ".panther-"


def staging_dir(dest: Path) -> Path:
    """A new private directory beside dest, to build dest in before one rename puts it in place.

    mkdtemp: nobody can predict or pre-create the name, and the rename stays in one directory.
    """
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGING_MARK}", dir=dest.parent))


def is_staging_dir(path: Path, dest: Path) -> bool:
    """Whether path is a name `staging_dir(dest)` makes (so one of ours, safe to remove)."""
    return path.parent == dest.parent and path.name.startswith(f".{dest.name}{STAGING_MARK}")
