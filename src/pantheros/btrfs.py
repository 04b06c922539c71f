"""btrfs through its ioctls, with the standard library alone.

The Python bindings are compiled and bound to a btrfs-progs version (D8); parsing the text of
`btrfs subvolume show` would tie panther to one version too. The kernel's ioctl ABI is stable,
so subvolume info, listing, snapshot, delete and sync are done here directly
(numbers from <linux/btrfs.h>; asm-generic ioctl encoding: x86_64, aarch64, riscv64).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from pantheros.errors import PantherError

IOC_SNAP_CREATE_V2 = 0x50009417
IOC_SUBVOL_CREATE_V2 = 0x50009418
IOC_SNAP_DESTROY = 0x5000940F
IOC_SYNC = 0x9408
IOC_SUBVOL_GETFLAGS = 0x80089419
IOC_SUBVOL_SETFLAGS = 0x4008941A
IOC_GET_SUBVOL_INFO = 0x81F8943C
IOC_TREE_SEARCH = 0xD0009411
IOC_TREE_SEARCH_V2 = 0xC0709411
IOC_INO_LOOKUP = 0xD0009412

SUBVOL_RDONLY = 1 << 1  # in SUBVOL_GETFLAGS/SETFLAGS
ROOT_SUBVOL_RDONLY = 1 << 0  # in the root item flags that GET_SUBVOL_INFO returns
FIRST_FREE_OBJECTID = 256  # inode number of every subvolume's root directory
TOP_LEVEL_ID = 5
ROOT_TREE_ID = 1
ROOT_BACKREF_KEY = 144
# Item types of a subvolume's tree (the key's type field), from <linux/btrfs_tree.h>.
INODE_ITEM_KEY = 1
INODE_REF_KEY = 12
INODE_EXTREF_KEY = 13
XATTR_ITEM_KEY = 24
DIR_ITEM_KEY = 84
DIR_INDEX_KEY = 96
EXTENT_DATA_KEY = 108
ROOT_ITEM_KEY = 132
LAST_FREE_OBJECTID = 2**64 - 256  # inode numbers lie between FIRST_FREE and this
QUOTA_TREE_ID = 8
QGROUP_STATUS_KEY = 240
QGROUP_INFO_KEY = 242
# In the qgroup status item's flags: the numbers are being recounted, or are known to be wrong.
QGROUP_STATUS_RESCAN = 1 << 1
QGROUP_STATUS_INCONSISTENT = 1 << 2
U64_MAX = 2**64 - 1

_VOL_ARGS_V2 = struct.Struct("=qQQ32x4040s")  # fd, transid, flags, unused, name
_SUBVOL_INFO = struct.Struct("=Q256sQQQQ16s16s16sQQQQ" + "QI4x" * 4 + "64x")
_SEARCH_KEY = struct.Struct("=QQQQQQQIIII32x")
SEARCH_HEADER = struct.Struct("=QQQII")
_ROOT_REF = struct.Struct("=QQH")
_SEARCH_ARGS_SIZE = 4096
SEARCH_ITEMS = _SEARCH_KEY.size + 8  # the key, then buf_size, then the items
_INO_LOOKUP = struct.Struct("=QQ4080s")

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


class BtrfsError(PantherError):
    def __init__(self, operation: str, path: str | Path, err: int) -> None:
        super().__init__(f"btrfs {operation} {path}: {os.strerror(err)}")
        self.operation = operation
        self.path = str(path)
        self.errno = err


class NoSpace(BtrfsError):
    """ENOSPC: the caller may prune old roots and retry."""


def _raise(operation: str, path: str | Path, exc: OSError) -> BtrfsError:
    err = exc.errno or errno.EIO
    cls = NoSpace if err in (errno.ENOSPC, errno.EDQUOT) else BtrfsError
    return cls(operation, path, err)


@dataclass(frozen=True)
class SubvolumeInfo:
    id: int
    name: str
    parent_id: int
    dirid: int
    generation: int
    flags: int
    uuid: UUID
    parent_uuid: UUID | None
    received_uuid: UUID | None
    ctransid: int
    otransid: int
    ctime: float
    otime: float

    @property
    def readonly(self) -> bool:
        return bool(self.flags & ROOT_SUBVOL_RDONLY)

    @property
    def created(self) -> datetime:
        return datetime.fromtimestamp(self.otime, UTC)


@contextmanager
def opened(path: str | Path, flags: int = os.O_RDONLY | os.O_DIRECTORY) -> Iterator[int]:
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        yield fd
    finally:
        os.close(fd)


def _uuid_or_none(raw: bytes) -> UUID | None:
    return None if raw == bytes(16) else UUID(bytes=raw)


def is_btrfs(path: str | Path) -> bool:
    """True when path is on btrfs (probed with an ioctl only btrfs answers)."""
    try:
        with opened(path) as fd:
            buf = bytearray(_SUBVOL_INFO.size)
            fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf, True)
    except OSError:
        return False
    return True


def is_subvolume(path: str | Path) -> bool:
    """A real subvolume root: a directory (not a symlink) with inode 256 on btrfs."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_ino == FIRST_FREE_OBJECTID and is_btrfs(path)


def subvolume_info(path: str | Path) -> SubvolumeInfo:
    """Info of the subvolume that contains path (its root directory if path is one)."""
    buf = bytearray(_SUBVOL_INFO.size)
    try:
        with opened(path) as fd:
            fcntl.ioctl(fd, IOC_GET_SUBVOL_INFO, buf, True)
    except OSError as exc:
        raise _raise("subvolume info", path, exc) from None
    f = _SUBVOL_INFO.unpack(buf)
    (treeid, name, parent_id, dirid, generation, flags, uid, puid, ruid) = f[:9]
    ctransid, otransid = f[9], f[10]
    ctime = f[13] + f[14] / 1e9
    otime = f[15] + f[16] / 1e9
    return SubvolumeInfo(
        id=treeid,
        name=name.rstrip(b"\0").decode("utf-8", "surrogateescape"),
        parent_id=parent_id,
        dirid=dirid,
        generation=generation,
        flags=flags,
        uuid=UUID(bytes=uid),
        parent_uuid=_uuid_or_none(puid),
        received_uuid=_uuid_or_none(ruid),
        ctransid=ctransid,
        otransid=otransid,
        ctime=ctime,
        otime=otime,
    )


def _vol_args(name: str, *, fd: int = 0, flags: int = 0) -> bytearray:
    raw = os.fsencode(name)
    if b"/" in raw or not raw or raw in (b".", b".."):
        raise ValueError(f"not a plain name: {name!r}")
    return bytearray(_VOL_ARGS_V2.pack(fd, 0, flags, raw))


def create_subvolume(path: str | Path) -> None:
    path = Path(path)
    try:
        with opened(path.parent) as dfd:
            fcntl.ioctl(dfd, IOC_SUBVOL_CREATE_V2, _vol_args(path.name))
    except OSError as exc:
        raise _raise("subvolume create", path, exc) from None


def snapshot(source: str | Path, dest: str | Path, *, readonly: bool = False) -> None:
    """Snapshot subvolume `source` to the new path `dest` (which must not exist)."""
    dest = Path(dest)
    try:
        with opened(source) as sfd, opened(dest.parent) as dfd:
            args = _vol_args(dest.name, fd=sfd, flags=SUBVOL_RDONLY if readonly else 0)
            fcntl.ioctl(dfd, IOC_SNAP_CREATE_V2, args)
    except OSError as exc:
        raise _raise("snapshot", dest, exc) from None


def delete_subvolume(path: str | Path) -> None:
    """Delete one subvolume (it must hold no nested subvolume; the kernel refuses otherwise)."""
    path = Path(path)
    args = bytearray(4096)
    raw = os.fsencode(path.name)
    args[8 : 8 + len(raw)] = raw
    try:
        with opened(path.parent) as dfd:
            fcntl.ioctl(dfd, IOC_SNAP_DESTROY, args)
    except OSError as exc:
        raise _raise("subvolume delete", path, exc) from None


def set_readonly(path: str | Path, readonly: bool) -> None:
    try:
        with opened(path) as fd:
            buf = bytearray(8)
            fcntl.ioctl(fd, IOC_SUBVOL_GETFLAGS, buf, True)
            (flags,) = struct.unpack("=Q", buf)
            flags = (flags | SUBVOL_RDONLY) if readonly else (flags & ~SUBVOL_RDONLY)
            fcntl.ioctl(fd, IOC_SUBVOL_SETFLAGS, struct.pack("=Q", flags))
    except OSError as exc:
        raise _raise("set read-only", path, exc) from None


def sync(path: str | Path) -> None:
    """Commit the current transaction: renames and deletions become durable."""
    try:
        with opened(path) as fd:
            fcntl.ioctl(fd, IOC_SYNC, 0)
    except OSError as exc:
        raise _raise("sync", path, exc) from None


@dataclass(frozen=True)
class SubvolumeRef:
    """One subvolume as the root tree records it: where it hangs and under which name."""

    id: int
    parent_id: int
    dirid: int
    name: str
    path: str  # relative to the top level


def _tree_search(
    fd: int, tree: int, item_type: int, min_obj: int = 0, max_obj: int = U64_MAX
) -> Iterator[tuple[int, int, bytes]]:
    """(objectid, offset, item data) of every item of one type in a tree (TREE_SEARCH)."""
    min_type, min_off = item_type, 0
    while True:
        args = bytearray(_SEARCH_ARGS_SIZE)
        args[: _SEARCH_KEY.size] = _SEARCH_KEY.pack(
            tree, min_obj, max_obj, min_off, U64_MAX, 0, U64_MAX, min_type, item_type, 4096, 0
        )
        fcntl.ioctl(fd, IOC_TREE_SEARCH, args, True)
        count = _SEARCH_KEY.unpack_from(args)[9]
        if count == 0:
            return
        pos = _SEARCH_KEY.size
        for _ in range(count):
            _transid, objectid, offset, found_type, length = SEARCH_HEADER.unpack_from(args, pos)
            pos += SEARCH_HEADER.size
            if found_type == item_type:
                yield objectid, offset, bytes(args[pos : pos + length])
            pos += length
            min_obj, min_type, min_off = objectid, found_type, offset
        # Continue after the last key returned, in (objectid, type, offset) order.
        if min_off < U64_MAX:
            min_off += 1
        else:
            min_type, min_off = min_type + 1, 0
        if min_type > item_type:
            if min_obj == max_obj:
                return
            min_obj, min_type, min_off = min_obj + 1, item_type, 0


Key = tuple[int, int, int]  # (objectid, type, offset): the order of every btrfs tree


def search_call(
    fd: int,
    tree: int,
    start: Key,
    last: Key,
    min_transid: int,
    buffer_size: int,
    most: int = 2**32 - 1,
    reuse: bytearray | None = None,
) -> tuple[bytearray, int]:
    """One TREE_SEARCH_V2 call: the buffer and how many items it holds, from SEARCH_ITEMS on,
    each a SEARCH_HEADER (leaf generation, objectid, offset, type, length) and its data.

    Keys compare as whole (objectid, type, offset) tuples with the bounds, so every type of the
    objectids strictly between them is read. With `min_transid`, only leaves written in that
    transaction or later are read: the kernel skips every older subtree, which is how `btrfs
    subvolume find-new` finds new data. At most `most` items are returned. `reuse`: a buffer
    of a previous call to fill again (when nothing of it is kept), which spares the kernel
    the faulting in of fresh pages.
    """
    while True:
        if reuse is not None and len(reuse) >= SEARCH_ITEMS + buffer_size:
            args = reuse
        else:
            args = bytearray(SEARCH_ITEMS + buffer_size)
        _SEARCH_KEY.pack_into(
            args, 0, tree, start[0], last[0], start[2], last[2], min_transid, U64_MAX,
            start[1], last[1], most, 0,
        )  # fmt: skip
        struct.pack_into("=Q", args, _SEARCH_KEY.size, buffer_size)
        try:
            fcntl.ioctl(fd, IOC_TREE_SEARCH_V2, args, True)
        except OSError as exc:
            if exc.errno != errno.EOVERFLOW:
                raise
            # The first item is larger than the buffer: the kernel says how large it must be.
            (buffer_size,) = struct.unpack_from("=Q", args, _SEARCH_KEY.size)
            continue
        return args, _SEARCH_KEY.unpack_from(args)[9]


def after(key: Key) -> Key:
    objectid, item_type, offset = key
    if offset < U64_MAX:
        return objectid, item_type, offset + 1
    if item_type < 255:
        return objectid, item_type + 1, 0
    return objectid + 1, 0, 0


def search(
    fd: int,
    tree: int,
    first: Key,
    last: Key,
    *,
    min_transid: int = 0,
    types: frozenset[int] | None = None,
    buffer_size: int = 16 * 1024,
) -> Iterator[tuple[int, int, int, memoryview]]:
    """(objectid, type, offset, item data) of the items from `first` to `last`, in key order.

    `types` keeps only the items of those types (the kernel reads them all); see _search_call.
    Each call has its own buffer, so an item's memoryview stays valid.
    """
    start = first
    unpack = SEARCH_HEADER.unpack_from
    while True:
        args, count = search_call(fd, tree, start, last, min_transid, buffer_size)
        if count == 0:
            return
        view = memoryview(args)
        pos = SEARCH_ITEMS
        for _ in range(count):
            _generation, objectid, offset, item_type, length = unpack(args, pos)
            pos += 32
            if types is None or item_type in types:
                yield objectid, item_type, offset, view[pos : pos + length]
            pos += length
        if (objectid, item_type, offset) >= last:
            return
        start = after((objectid, item_type, offset))


def count(fd: int, tree: int, first: Key, last: Key, size: int, likely: int = 4096) -> int:
    """How many items there are from `first` to `last`, none with more than `size` bytes of
    data. The buffer holds one more than `likely` of them (at most 4096); a full one is
    continued after its last item."""
    capacity = min(likely, 4096) + 1
    found = 0
    while True:
        args, got = search_call(fd, tree, first, last, 0, capacity * (SEARCH_HEADER.size + size))
        found += got
        if got < capacity:  # the buffer had room for more: the range is done
            return found
        pos = SEARCH_ITEMS
        for _ in range(got):
            _generation, objectid, offset, item_type, length = SEARCH_HEADER.unpack_from(args, pos)
            pos += SEARCH_HEADER.size + length
        if (objectid, item_type, offset) >= last:
            return found
        first = after((objectid, item_type, offset))


def last_offset(fd: int, tree: int, objectid: int, item_type: int) -> int | None:
    """The largest key offset among the items (objectid, item_type, *), None if there are none.

    The search only goes forward: a doubling then halving of one-item probes."""

    def any_from(low: int) -> bool:
        return (
            search_call(
                fd, tree, (objectid, item_type, low), (objectid, item_type, U64_MAX), 0, 4096, 1
            )[1]
            > 0
        )

    if not any_from(0):
        return None
    low, step = 0, 1  # an item at >= low exists
    while low + step <= U64_MAX and any_from(low + step):
        low, step = low + step, step * 2
    high = min(low + step, U64_MAX + 1)  # none at >= high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if any_from(middle) else (low, middle)
    return low


def _root_backrefs(fd: int) -> Iterator[tuple[int, int, int, str]]:
    """(id, parent_id, dirid, name) of every subvolume, from the root tree's ROOT_BACKREF items."""
    for objectid, offset, data in _tree_search(
        fd, ROOT_TREE_ID, ROOT_BACKREF_KEY, FIRST_FREE_OBJECTID, U64_MAX - 255
    ):
        dirid, _seq, name_len = _ROOT_REF.unpack_from(data)
        name = os.fsdecode(data[_ROOT_REF.size : _ROOT_REF.size + name_len])
        yield objectid, offset, dirid, name


def qgroup_sizes(top: str | Path) -> dict[int, tuple[int, int]] | None:
    """Subvolume id -> (referenced, exclusive) bytes of level-0 qgroups; None if quotas are off
    or their numbers cannot be trusted (a rescan under way, or marked inconsistent: retention
    would free space by sizes that are wrong)."""
    sizes: dict[int, tuple[int, int]] = {}
    try:
        with opened(top) as fd:
            for _obj, _off, data in _tree_search(fd, QUOTA_TREE_ID, QGROUP_STATUS_KEY, 0, 0):
                _version, _gen, flags = struct.unpack_from("=QQQ", data)
                if flags & (QGROUP_STATUS_RESCAN | QGROUP_STATUS_INCONSISTENT):
                    return None
            for _obj, offset, data in _tree_search(fd, QUOTA_TREE_ID, QGROUP_INFO_KEY, 0, 0):
                _gen, rfer, _rc, excl, _ec = struct.unpack_from("=QQQQQ", data)
                sizes[offset] = (rfer, excl)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise _raise("qgroup sizes", top, exc) from None
    return sizes


def ino_path(fd: int, tree: int, inode: int) -> bytes:
    """Path of directory `inode` inside subvolume `tree`: b"" for its root, else ending in b"/".

    INO_LOOKUP (CAP_SYS_ADMIN); `fd` is any open file of the same filesystem.
    """
    if inode == FIRST_FREE_OBJECTID:
        return b""
    args = bytearray(_INO_LOOKUP.pack(tree, inode, b""))
    fcntl.ioctl(fd, IOC_INO_LOOKUP, args, True)
    # The kernel builds the path from the end of the buffer: keep what precedes the first NUL.
    path: bytes = _INO_LOOKUP.unpack(args)[2].split(b"\0", 1)[0]
    return path


def list_subvolumes(top: str | Path) -> list[SubvolumeRef]:
    """Every subvolume of the filesystem mounted (any subvolume) at `top`, with top-level paths.

    Needs CAP_SYS_ADMIN (tree search). Subvolumes being deleted have no backref and are absent.
    """
    try:
        with opened(top) as fd:
            refs = {sid: (parent, dirid, name) for sid, parent, dirid, name in _root_backrefs(fd)}
            paths: dict[int, str] = {TOP_LEVEL_ID: ""}

            def path_of(sid: int) -> str:
                if sid not in paths:
                    parent, dirid, name = refs[sid]
                    base = path_of(parent)
                    prefix = base + "/" if base else ""
                    paths[sid] = prefix + os.fsdecode(ino_path(fd, parent, dirid)) + name
                return paths[sid]

            return sorted(
                (
                    SubvolumeRef(sid, parent, dirid, name, path_of(sid))
                    for sid, (parent, dirid, name) in refs.items()
                ),
                key=lambda r: r.id,
            )
    except OSError as exc:
        raise _raise("subvolume list", top, exc) from None


_libc = ctypes.CDLL(None, use_errno=True)
_AT_FDCWD = -100


def renameat2(old: str | Path, new: str | Path, flags: int) -> None:
    """rename(2) with RENAME_EXCHANGE (atomic swap) or RENAME_NOREPLACE (never clobber)."""
    result = _libc.renameat2(_AT_FDCWD, os.fsencode(old), _AT_FDCWD, os.fsencode(new), flags)
    if result != 0:
        err = ctypes.get_errno()
        raise _raise("rename", f"{old} -> {new}", OSError(err, os.strerror(err)))
