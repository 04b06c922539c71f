"""What changed in a snapshot of the root since it was made from the blank, from btrfs's metadata.

The root is a snapshot of the blank taken in transaction T (its otransid), and the blank has not
changed since (its ctransid is not above T). Every tree block written since then carries a
generation above T; every other block the two trees share, byte for byte. A tree search that
skips older subtrees (TREE_SEARCH_V2 with min_transid, as `btrfs subvolume find-new` does for
data) reads only the leaves that changed, and in them:

- every inode whose item was rewritten after T (the item's transid): writing, truncating,
  chmod, chown, xattrs, times, links, unlinks and renames all rewrite the inode item, so each
  such inode is a candidate under every name it has in either tree;
- every directory entry added after T (the transid of its DIR_INDEX item).

A deletion leaves no item behind, and a leaf whose every item was deleted disappears from the
tree without a trace in any leaf (only its parent node changes, which the search does not
show). Deletions are found through the directories instead: removing a name rewrites the
directory's inode, and a btrfs directory's size is twice the total length of its names. For
every changed directory the size therefore says how many bytes of names it lost; the names lost
by inodes that still exist are known from their refs (an inode's refs carry its directory
index); only when the size says more was lost are the directory's entries compared with the
blank's, that directory alone. A directory gone with its inode is listed from the blank in full.

Everything found is a candidate only: the caller decides each one on the trees themselves.
"""

from __future__ import annotations

import itertools
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pantheros import btrfs
from pantheros.errors import PantherError

_INODE = struct.Struct("=QQQQQIIIIQQ")  # generation .. flags of struct btrfs_inode_item
_INODE_REF = struct.Struct("=QH")  # index, name length
_INODE_EXTREF = struct.Struct("=QQH")  # parent, index, name length
_DIR_ITEM = struct.Struct("=QBQQHHB")  # location (objectid, type, offset), transid, lengths, type
_U64 = struct.Struct("=Q")
NODATACOW = 1 << 1  # an inode flag: data overwritten in place leaves the extent items as they are
FT_DIR = 2  # struct btrfs_dir_item.type of a directory
DIR_ENTRY_MAX = _DIR_ITEM.size + 255  # a DIR_INDEX item: the struct and a name (at most 255)
U64_MAX = btrfs.U64_MAX
BULK = 128 * 1024  # the scan's search buffer: the kernel faults in all that is left of it per leaf


@dataclass(frozen=True)
class Inode:
    generation: int  # the transaction that made it
    transid: int  # the last one that rewrote its item
    size: int
    nlink: int
    mode: int
    flags: int


def _inode(data: memoryview | bytes | bytearray) -> Inode:
    generation, transid, size, _nbytes, _group, nlink, _uid, _gid, mode, _rdev, flags = (
        _INODE.unpack_from(data)
    )
    return Inode(generation, transid, size, nlink, mode, flags)


@dataclass(frozen=True)
class Entry:
    """One name in a directory: its place (the DIR_INDEX key offset), target and file type."""

    index: int
    child: int  # an inode number, or a subvolume id when `subvolume`
    kind: int  # BTRFS_FT_*
    name: bytes
    subvolume: bool = False


class Tree:
    """One subvolume's tree, read through an open file of its filesystem (CAP_SYS_ADMIN)."""

    def __init__(self, fd: int, tree_id: int) -> None:
        self.fd = fd
        self.id = tree_id
        self._dirs: dict[int, bytes] = {}

    def _items(
        self, first: btrfs.Key, last: btrfs.Key
    ) -> Iterator[tuple[int, int, int, memoryview]]:
        return btrfs.search(self.fd, self.id, first, last)

    def inode(self, number: int) -> tuple[Inode | None, list[tuple[int, int, bytes]]]:
        """The inode item of `number` and its names as (directory, index, name)."""
        item = None
        refs: list[tuple[int, int, bytes]] = []
        last = (number, btrfs.INODE_EXTREF_KEY, U64_MAX)
        for _, item_type, offset, data in self._items((number, btrfs.INODE_ITEM_KEY, 0), last):
            if item_type == btrfs.INODE_ITEM_KEY:
                item = _inode(data)
            elif item_type == btrfs.INODE_REF_KEY:
                refs += _refs(offset, data)
            elif item_type == btrfs.INODE_EXTREF_KEY:
                refs += _extrefs(data)
        return item, refs

    def dir_path(self, directory: int) -> bytes:
        """The path of a directory inode inside the subvolume: b"" or ending in b"/"."""
        if directory not in self._dirs:
            self._dirs[directory] = btrfs.ino_path(self.fd, self.id, directory)
        return self._dirs[directory]

    def entries(self, directory: int, low: int = 0, high: int = U64_MAX) -> list[Entry]:
        """The names in a directory whose index lies in [low, high], in index order."""
        first = (directory, btrfs.DIR_INDEX_KEY, low)
        last = (directory, btrfs.DIR_INDEX_KEY, high)
        return [_entry(offset, data) for _, _, offset, data in self._items(first, last)]

    def last_index(self, directory: int) -> int | None:
        """The largest index of a directory's names (None: it has none)."""
        return btrfs.last_offset(self.fd, self.id, directory, btrfs.DIR_INDEX_KEY)

    def count(self, directory: int, low: int, high: int) -> int:
        """How many names of a directory have an index in [low, high] (each index is one's)."""
        first = (directory, btrfs.DIR_INDEX_KEY, low)
        last = (directory, btrfs.DIR_INDEX_KEY, high)
        return btrfs.count(self.fd, self.id, first, last, DIR_ENTRY_MAX, high - low + 1)

    def extents(self, number: int) -> list[tuple[int, bytes]]:
        """The file extent items of an inode: (file offset, item) in offset order."""
        first = (number, btrfs.EXTENT_DATA_KEY, 0)
        last = (number, btrfs.EXTENT_DATA_KEY, U64_MAX)
        return [(offset, bytes(data)) for _, _, offset, data in self._items(first, last)]


def _refs(directory: int, data: memoryview | bytearray) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos < len(data):
        index, length = _INODE_REF.unpack_from(data, pos)
        pos += _INODE_REF.size
        yield directory, index, bytes(data[pos : pos + length])
        pos += length


def _extrefs(data: memoryview | bytearray) -> Iterator[tuple[int, int, bytes]]:
    pos = 0
    while pos < len(data):
        directory, index, length = _INODE_EXTREF.unpack_from(data, pos)
        pos += _INODE_EXTREF.size
        yield directory, index, bytes(data[pos : pos + length])
        pos += length


def _entry(index: int, data: memoryview | bytearray) -> Entry:
    child, location_type, _, _, _, length, kind = _DIR_ITEM.unpack_from(data)
    name = bytes(data[_DIR_ITEM.size : _DIR_ITEM.size + length])
    return Entry(index, child, kind, name, location_type == btrfs.ROOT_ITEM_KEY)


@dataclass
class Found:
    """Candidates: final paths with what happened, and baseline paths that lost their name."""

    touched: dict[bytes, set[str]] = field(default_factory=dict)
    removed: set[bytes] = field(default_factory=set)

    def touch(self, path: bytes, what: str) -> None:
        self.touched.setdefault(path, set()).add(what)


@dataclass
class Scan:
    """What the leaves written after `since` hold."""

    changed: dict[int, Inode] = field(default_factory=dict)  # inodes rewritten after it
    names: dict[int, list[tuple[int, int, bytes]]] = field(default_factory=dict)  # their refs
    added: dict[int, list[Entry]] = field(default_factory=dict)  # entries made after it
    seen: dict[int, list[int]] = field(default_factory=dict)  # indices in changed directories


def changed_leaves(current: Tree, since: int, helper: Path | None = None) -> Scan:
    """What the leaves written after `since` hold: read by the boot step's helper when given
    (`changed-since`, which walks the items in C), else here, as where it cannot run."""
    if helper is None:
        return _scan(current, since)
    argv = [str(helper), "changed-since", f"/proc/self/fd/{current.fd}", str(current.id)]
    try:
        proc = subprocess.run(
            [*argv, str(since)], capture_output=True, pass_fds=(current.fd,), check=False
        )
    except OSError:
        return _scan(current, since)
    if proc.returncode != 0:
        return _scan(current, since)
    return _read_scan(proc.stdout)


_SCAN_INODE = struct.Struct("=7Q")  # objectid, then the Inode's fields in their order
_SCAN_REF = struct.Struct("=QQQH")  # objectid, directory, index, name length
_SCAN_SEEN = struct.Struct("=QI")  # directory, count
_SCAN_ADDED = struct.Struct("=QQQBBH")  # directory, index, child, type, subvolume, name length


def _read_scan(data: bytes) -> Scan:
    """The helper's `changed-since` records (its header comment) as a Scan."""
    found = Scan()
    pos, end = 0, len(data)
    try:
        while pos < end:
            kind, pos = data[pos], pos + 1
            if kind == ord("I"):
                objectid, *fields = _SCAN_INODE.unpack_from(data, pos)
                pos += _SCAN_INODE.size
                found.changed[objectid] = Inode(*fields)
            elif kind == ord("R"):
                objectid, directory, index, length = _SCAN_REF.unpack_from(data, pos)
                pos += _SCAN_REF.size + length
                name = data[pos - length : pos]
                found.names.setdefault(objectid, []).append((directory, index, name))
            elif kind == ord("S"):
                directory, count = _SCAN_SEEN.unpack_from(data, pos)
                pos += _SCAN_SEEN.size
                found.seen.setdefault(directory, []).extend(
                    struct.unpack_from(f"={count}Q", data, pos)
                )
                pos += 8 * count
            elif kind == ord("A"):
                directory, index, child, ftype, sub, length = _SCAN_ADDED.unpack_from(data, pos)
                pos += _SCAN_ADDED.size + length
                entry = Entry(index, child, ftype, data[pos - length : pos], sub == 1)
                found.added.setdefault(directory, []).append(entry)
            else:
                raise PantherError(f"the helper's changed-since: no record of type {kind}")
    except struct.error:
        raise PantherError("the helper's changed-since output ends inside a record") from None
    if pos != end:
        raise PantherError("the helper's changed-since output ends inside a record")
    return found


def _scan(current: Tree, since: int) -> Scan:
    """One pass over every leaf written after `since`, walked here rather than through
    btrfs.search since most of its items are skipped. An inode's item comes before its refs
    and its directory entries (the key order), so both are kept for changed inodes only."""
    scan = Scan()
    changed, names, added, seen = scan.changed, scan.names, scan.added, scan.seen
    start = (btrfs.FIRST_FREE_OBJECTID, 0, 0)
    last = (btrfs.LAST_FREE_OBJECTID, 255, U64_MAX)
    header = btrfs.SEARCH_HEADER.unpack_from
    u64 = _U64.unpack_from
    inode_item, dir_index = btrfs.INODE_ITEM_KEY, btrfs.DIR_INDEX_KEY
    ref, extref = btrfs.INODE_REF_KEY, btrfs.INODE_EXTREF_KEY
    buf: bytearray | None = None  # every item kept is copied out of it
    while True:
        buf, count = btrfs.search_call(
            current.fd, current.id, start, last, since + 1, BULK, reuse=buf
        )
        if count == 0:
            break
        pos = btrfs.SEARCH_ITEMS
        for _ in range(count):
            _, objectid, offset, item_type, length = header(buf, pos)
            pos += 32
            # An inode item's transid, a DIR_INDEX item's transid: when each was last written.
            if item_type == inode_item:
                if u64(buf, pos + 8)[0] > since:
                    changed[objectid] = _inode(buf[pos : pos + length])
            elif objectid not in changed:
                pass
            elif item_type == dir_index:
                seen.setdefault(objectid, []).append(offset)
                if u64(buf, pos + 17)[0] > since:
                    added.setdefault(objectid, []).append(_entry(offset, buf[pos : pos + length]))
            elif item_type == ref:
                names.setdefault(objectid, []).extend(_refs(offset, buf[pos : pos + length]))
            elif item_type == extref:
                names.setdefault(objectid, []).extend(_extrefs(buf[pos : pos + length]))
            pos += length
        if (objectid, item_type, offset) >= last:
            break
        start = btrfs.after((objectid, item_type, offset))
    return scan


def candidates(current: Tree, baseline: Tree, since: int, helper: Path | None = None) -> Found:
    """Every path that may differ between the trees; `since`: the current tree's otransid;
    `helper`: the boot step's helper, to read the changed leaves with (changed_leaves)."""
    found = Found()
    scan = changed_leaves(current, since, helper)
    old: dict[int, Inode] = {}  # changed inodes the baseline has (the same inode, as it was)
    lost: dict[int, list[tuple[int, bytes]]] = {}  # directory -> (index, name) it lost
    for number, inode in scan.changed.items():
        previous, before = baseline.inode(number) if inode.generation <= since else (None, [])
        if previous is not None and previous.generation == inode.generation:
            old[number] = previous
        else:
            before = []
        if number == btrfs.FIRST_FREE_OBJECTID:
            found.touch(b"", "changed")  # the root directory itself
            continue
        names = scan.names.get(number, [])
        # A file has as many names as links, a directory one: fewer means some sit in a leaf
        # the scan skipped.
        if len(names) != (1 if stat.S_ISDIR(inode.mode) else inode.nlink):
            names = current.inode(number)[1]
        hints = {"changed"} if number in old else {"created"}
        if number in old and stat.S_ISREG(inode.mode):
            hints |= _data(current, baseline, number, inode, old[number])
        earlier = {(directory, name) for directory, _, name in before}
        for directory, _, name in names:
            path = current.dir_path(directory) + name
            for hint in hints if (directory, name) in earlier or number not in old else {"linked"}:
                found.touch(path, hint)
        now = set(names)
        for ref in before:
            if ref not in now:
                directory, index, name = ref
                found.removed.add(baseline.dir_path(directory) + name)
                lost.setdefault(directory, []).append((index, name))
    for number, inode in scan.changed.items():
        if number in old and stat.S_ISDIR(inode.mode):
            gone = _lost_entries(
                current,
                baseline,
                number,
                (inode, old[number]),
                scan,
                lost.get(number, []),
            )
            prefix = baseline.dir_path(number)
            for entry in gone:
                found.removed.add(prefix + entry.name)
                if entry.kind == FT_DIR and not entry.subvolume and entry.child not in old:
                    found.removed.update(_below(baseline, entry.child, prefix + entry.name + b"/"))
    return found


def _data(current: Tree, baseline: Tree, number: int, now: Inode, before: Inode) -> set[str]:
    """ "data" when a regular file's data changed, "unsure" when only its bytes can tell."""
    if now.size != before.size:
        return {"data"}
    if (now.flags | before.flags) & NODATACOW:
        return {"unsure"}  # overwritten in place, its extent items stay as they were
    return {"data"} if current.extents(number) != baseline.extents(number) else set()


def _lost_entries(
    current: Tree,
    baseline: Tree,
    directory: int,
    inodes: tuple[Inode, Inode],
    scan: Scan,
    lost: list[tuple[int, bytes]],
) -> list[Entry]:
    """The names a directory lost that the refs of surviving inodes do not account for.

    A btrfs directory's size is twice the total length of its names (its DIR_ITEM and DIR_INDEX
    items each count a name once). What the size lost, plus what was added, minus what the refs
    of surviving inodes lost, is what went with inodes that are gone (or with a nested
    subvolume). When that is not nothing, the small holes between the indices the scan saw are
    looked up in the blank first (a name deleted from a leaf leaves such a hole); when they do
    not account for all of it, the entries are compared with the blank's by counts over
    windows of indices, so only a window that lost a name is read.
    """
    now, before = inodes
    added = scan.added.get(directory, [])
    shrunk, odd = divmod(before.size - now.size, 2)
    unknown = shrunk + sum(len(e.name) for e in added) - sum(len(name) for _, name in lost)
    if unknown == 0 and not odd:
        return []
    known = {index for index, _ in lost}
    gone: list[Entry] = []
    if unknown > 0 and not odd:
        seen = scan.seen.get(directory, [])
        for low, high in itertools.pairwise(seen):
            if 1 < high - low <= HOLE and current.count(directory, low + 1, high - 1) == 0:
                gone += baseline.entries(directory, low + 1, high - 1)
        if sum(len(e.name) for e in gone if e.index not in known) == unknown:
            return gone
    top = baseline.last_index(directory)
    if top is None:
        return []
    return _lost_in(current, baseline, directory, (0, top), added, sorted(known))


HOLE = 8  # a gap of at most this many indices between two seen ones is looked up directly
WINDOWS = 16  # a range of indices that lost names is split into this many
READ = 32  # a range holding at most this many of the blank's names is read and compared


def _lost_in(
    current: Tree,
    baseline: Tree,
    directory: int,
    bounds: tuple[int, int],
    added: list[Entry],
    lost: list[int],
) -> list[Entry]:
    """The blank's entries with an index within `bounds` that the current tree lacks.

    In a range, the current tree holds the blank's names minus those lost, plus those added
    (their indices are known), so the two counts say how many were lost there. A range that
    lost none is not read.
    """
    low, high = bounds
    step = max(1, -(-(high - low + 1) // WINDOWS))
    gone: list[Entry] = []
    for start in range(low, high + 1, step):
        end = min(start + step - 1, high)
        before = baseline.count(directory, start, end)
        if before == 0:
            continue
        new = [e for e in added if start <= e.index <= end]
        known = sum(1 for i in lost if start <= i <= end)
        unknown = before - current.count(directory, start, end) + len(new) - known
        if unknown == 0:
            continue
        if before <= READ or unknown < 0 or step == 1:
            kept = {(e.index, e.child, e.name) for e in current.entries(directory, start, end)}
            gone += [
                e
                for e in baseline.entries(directory, start, end)
                if (e.index, e.child, e.name) not in kept
            ]
        else:
            gone += _lost_in(current, baseline, directory, (start, end), new, lost)
    return gone


def _below(tree: Tree, directory: int, prefix: bytes) -> Iterator[bytes]:
    """Every path below a directory of the tree (not into nested subvolumes)."""
    for entry in tree.entries(directory):
        yield prefix + entry.name
        if entry.kind == FT_DIR and not entry.subvolume:
            yield from _below(tree, entry.child, prefix + entry.name + b"/")
