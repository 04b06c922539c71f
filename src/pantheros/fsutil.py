"""Small file helpers shared by diff and persist."""

from __future__ import annotations

import fcntl
import os
import shutil
import struct

FS_IOC_FIEMAP = 0xC020660B
_FIEMAP = struct.Struct("=QQIIII")
_EXTENT = struct.Struct("=QQQ16xI12x")
_FLAG_SYNC = 0x1
_LAST = 0x1
# Extents whose physical address says nothing about the data: compare the bytes instead.
_OPAQUE = 0x2 | 0x4 | 0x100 | 0x200 | 0x400 | 0x800

Path_ = str | bytes | os.PathLike[str]


def extents(path: Path_, batch: int = 256) -> list[tuple[int, int, int]] | None:
    """(logical, physical, length) of every extent (FIEMAP), or None where that says nothing."""
    found: list[tuple[int, int, int]] = []
    start = 0
    with open(path, "rb") as f:
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
    with open(a, "rb") as fa, open(b, "rb") as fb:
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


def remove_path(path: Path_) -> None:
    """Remove a file, a symlink (not its target) or a whole directory tree; absent is fine."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)
