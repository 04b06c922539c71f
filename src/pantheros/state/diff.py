"""`panther diff`: every change in the live root against its baseline.

Three ways to find candidates, one way to decide:

- tree: btrfs's own metadata (pantheros.state.treediff): the leaves of the root's tree written
  since the root was made from the blank, and the directories that lost names. Used when the
  root is a snapshot of the blank that has not changed since. Cost grows with the changes.
- send: a read-only snapshot of the root and `btrfs send --no-data -p <blank>`; the stream names
  every path that changed (created, written, chmod/chown, xattrs, utimes, links, unlinks,
  renames, including temporary orphan names and renames that appear as link plus unlink). Cost
  grows with the changes, not with the tree.
- walk: both trees walked in full. Used when the baseline is (nearly) empty, when send is not
  available, and as the benchmark's baseline.

Every candidate is then checked with lstat (inode numbers, type, mode, owner, size, times) and
xattrs on both trees, so the report says what is true, not what the stream suggested. Paths are
bytes throughout: btrfs names need not be UTF-8.
"""

from __future__ import annotations

import fnmatch
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from pantheros import btrfs, process, sendstream
from pantheros.errors import PantherError, UsageError
from pantheros.fsutil import same_bytes, xattrs
from pantheros.sendstream import Attr, Cmd
from pantheros.state import treediff


class Kind(StrEnum):
    CREATED = "created"
    DELETED = "deleted"
    MODIFIED = "modified"  # data (or replaced by another file)
    METADATA = "metadata"  # mode, owner, xattrs
    RENAMED = "renamed"
    TIMES = "times"  # only timestamps: hidden unless asked for


@dataclass(frozen=True)
class Change:
    path: bytes  # as the machine sees it, starting with b"/"
    kind: Kind
    type: str  # file, dir, symlink, fifo, socket, chardev, blockdev, subvolume
    size: int = 0
    detail: str = ""
    old_path: bytes | None = None  # for renames
    hardlink: bool = False

    @property
    def display(self) -> str:
        return os.fsdecode(self.path)


def file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISREG, "file"),
        (stat.S_ISDIR, "dir"),
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "chardev"),
        (stat.S_ISBLK, "blockdev"),
    ):
        if test(mode):
            return name
    return "unknown"


def _lstat(path: bytes) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _join(base: bytes, rel: bytes) -> bytes:
    return base + b"/" + rel if rel else base


@dataclass
class Candidates:
    """Paths a stream says changed: in the final namespace, and deletions in the baseline's."""

    touched: dict[bytes, set[str]] = field(default_factory=dict)  # final path -> what happened
    removed: set[bytes] = field(default_factory=set)  # baseline paths that lost their name
    # A send stream (or the trees) name every data change; a walk knows only that something
    # changed. Either way "unsure" on a path asks for its bytes to be compared.
    names_data: bool = False

    def touch(self, path: bytes, what: str) -> None:
        self.touched.setdefault(path, set()).add(what)


_DATA = {Cmd.WRITE, Cmd.UPDATE_EXTENT, Cmd.TRUNCATE, Cmd.CLONE, Cmd.FALLOCATE, Cmd.ENCODED_WRITE}
_META = {
    Cmd.CHMOD: "mode",
    Cmd.CHOWN: "owner",
    Cmd.SET_XATTR: "xattr",
    Cmd.REMOVE_XATTR: "xattr",
    Cmd.FILEATTR: "attr",
}
_CREATE = {Cmd.MKFILE, Cmd.MKDIR, Cmd.MKNOD, Cmd.MKFIFO, Cmd.MKSOCK, Cmd.SYMLINK}


def _is_orphan(path: bytes) -> bool:
    """Send's temporary names: o<ino>-<gen>-<n> at the top of the subvolume."""
    if b"/" in path or not path.startswith(b"o"):
        return False
    parts = path[1:].split(b"-")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


class _Namespace:
    """Follows renames in a stream: current names back to baseline names, and forward."""

    def __init__(self) -> None:
        self.origin: dict[bytes, bytes] = {}  # current path -> baseline path (renamed items)
        self.created: set[bytes] = set()  # current paths of inodes made by the stream

    def original(self, path: bytes) -> bytes:
        """The baseline path of a current path (longest renamed prefix substituted)."""
        head, tail = path, b""
        while head:
            if head in self.origin:
                return self.origin[head] + tail
            cut = head.rfind(b"/")
            if cut < 0:
                break
            head, tail = head[:cut], head[cut:] + tail
        return path


def candidates_from_stream(commands: Iterable[sendstream.Command]) -> Candidates:
    found = Candidates(names_data=True)
    names = _Namespace()
    children: dict[bytes, int] = {}  # current dir path -> number of touched paths below it

    def add(path: bytes, what: str) -> None:
        if path not in found.touched:
            parent = path
            while (cut := parent.rfind(b"/")) > 0:
                parent = parent[:cut]
                children[parent] = children.get(parent, 0) + 1
        found.touch(path, what)

    def move(old: bytes, new: bytes) -> None:
        """Rewrite touched paths at or below old to live below new."""
        if old in found.touched:
            found.touched[new] = found.touched.pop(old) | found.touched.get(new, set())
        if children.get(old):
            prefix = old + b"/"
            for path in [p for p in found.touched if p.startswith(prefix)]:
                found.touched[new + path[len(old) :]] = found.touched.pop(path)

    for command in commands:
        cmd = command.cmd
        path = command.path()
        if cmd in _CREATE:
            names.created.add(path)
            add(path, "created")
        elif cmd == Cmd.RENAME:
            dest = command.path(Attr.PATH_TO)
            if path in names.created:
                names.created.discard(path)
                names.created.add(dest)
            else:
                origin = names.original(path)
                names.origin[dest] = origin
                found.removed.add(origin)
                if not _is_orphan(dest):
                    add(dest, "renamed")
            move(path, dest)
        elif cmd == Cmd.LINK:
            add(path, "linked")
        elif cmd in (Cmd.UNLINK, Cmd.RMDIR):
            if path not in names.created:
                found.removed.add(names.original(path))
            found.touched.pop(path, None)
        elif cmd in _DATA:
            add(path, "data")
        elif cmd in _META:
            add(path, _META[Cmd(cmd)])
        elif cmd == Cmd.UTIMES:
            add(path, "times")
    return found


@dataclass(frozen=True)
class Trees:
    """The two trees compared: the baseline and the live state (or its snapshot)."""

    baseline: bytes
    current: bytes


def _compare(
    trees: Trees,
    rel: bytes,
    new: os.stat_result,
    old: os.stat_result,
    want_times: bool,
    hints: set[str],
    names_data: bool,
) -> Change | None:
    """The change at rel, which exists in both trees (new and old: its lstat in each); None when
    nothing differs."""
    path = b"/" + rel
    kind = file_type(new.st_mode)
    if new.st_ino != old.st_ino or stat.S_IFMT(new.st_mode) != stat.S_IFMT(old.st_mode):
        return Change(path, Kind.MODIFIED, kind, new.st_size, "replaced")
    details = []
    # A directory's size and mtime follow its entries: that is its children's change, not its own.
    sized = kind != "dir" and ("data" in hints or new.st_size != old.st_size)
    if sized or (
        kind == "file"
        and (not names_data or "unsure" in hints)
        and not same_bytes(_join(trees.current, rel), _join(trees.baseline, rel))
    ):
        details.append("data")
    if stat.S_IMODE(new.st_mode) != stat.S_IMODE(old.st_mode):
        details.append(f"mode {stat.S_IMODE(old.st_mode):04o}->{stat.S_IMODE(new.st_mode):04o}")
    if (new.st_uid, new.st_gid) != (old.st_uid, old.st_gid):
        details.append(f"owner {old.st_uid}:{old.st_gid}->{new.st_uid}:{new.st_gid}")
    if xattrs(_join(trees.current, rel)) != xattrs(_join(trees.baseline, rel)):
        details.append("xattrs")
    if kind == "symlink" and os.readlink(_join(trees.current, rel)) != os.readlink(
        _join(trees.baseline, rel)
    ):
        details.append("target")
    if details and (details[0] == "data" or "target" in details):
        return Change(path, Kind.MODIFIED, kind, new.st_size, ", ".join(details))
    if details:
        return Change(path, Kind.METADATA, kind, new.st_size, ", ".join(details))
    if new.st_mtime_ns != old.st_mtime_ns or new.st_ctime_ns != old.st_ctime_ns:
        return Change(path, Kind.TIMES, kind, new.st_size, "times") if want_times else None
    return None


def resolve(trees: Trees, found: Candidates, want_times: bool) -> list[Change]:
    """Decide every candidate against the trees themselves.

    A name gone from the baseline and a new name of the same inode are a rename when that
    inode lost exactly one name and gained exactly one; otherwise (links added and removed)
    each lost name is a deletion and each new one a creation.
    """
    changes: list[Change] = []
    gone: dict[int, list[tuple[bytes, os.stat_result]]] = {}  # baseline inode -> lost names
    missing: set[bytes] = set()  # removed paths the current tree lacks: nothing is below them
    for rel in sorted(found.removed):  # a directory before what was in it
        if rel.rpartition(b"/")[0] in missing or _lstat(_join(trees.current, rel)) is None:
            missing.add(rel)
            old = _lstat(_join(trees.baseline, rel))
            if old is not None:
                gone.setdefault(old.st_ino, []).append((rel, old))
    fresh: dict[int, list[tuple[bytes, os.stat_result, set[str]]]] = {}  # inode -> new names
    for rel, hints in found.touched.items():
        new = _lstat(_join(trees.current, rel))
        if new is None:
            continue
        old = _lstat(_join(trees.baseline, rel))
        if old is None:
            fresh.setdefault(new.st_ino, []).append((rel, new, hints))
            continue
        change = _compare(trees, rel, new, old, want_times, hints, found.names_data)
        if change is not None:
            changes.append(change)
    for inode, names in fresh.items():
        lost = gone.get(inode, [])
        if len(names) == 1 and len(lost) == 1:
            (rel, new, _), (source, _) = names[0], gone.pop(inode)[0]
            detail = f"from {os.fsdecode(b'/' + source)}"
            kind = file_type(new.st_mode)
            changes.append(
                Change(b"/" + rel, Kind.RENAMED, kind, new.st_size, detail, b"/" + source)
            )
            continue
        for rel, new, hints in names:
            kind = file_type(new.st_mode)
            hardlink = kind != "dir" and new.st_nlink > 1 and "created" not in hints
            changes.append(
                Change(
                    b"/" + rel,
                    Kind.CREATED,
                    kind,
                    new.st_size,
                    "hardlink" if hardlink else "",
                    hardlink=hardlink,
                )
            )
    for names_lost in gone.values():
        for rel, old in names_lost:
            changes.append(Change(b"/" + rel, Kind.DELETED, file_type(old.st_mode), old.st_size))
    return _fold_renames(changes)


def _fold_renames(changes: list[Change]) -> list[Change]:
    """A rename implied by its directory's rename (a/x -> b/x when a -> b) is not reported."""
    moved = {c.old_path: c.path for c in changes if c.kind is Kind.RENAMED and c.type == "dir"}

    def implied(change: Change) -> bool:
        old, new = change.old_path or b"", change.path
        while (cut := old.rfind(b"/")) > 0:
            old, tail = old[:cut], old[cut:]
            if not new.endswith(tail):
                return False
            new = new[: -len(tail)]
            if moved.get(old) == new:
                return True
        return False

    return [c for c in changes if c.kind is not Kind.RENAMED or not implied(c)]


def _walk(base: bytes) -> Iterator[tuple[bytes, os.stat_result]]:
    """(relative path, lstat) of everything below base, not crossing into other file systems."""
    stack = [b""]
    dev = os.lstat(base).st_dev
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(_join(base, rel)))
        except OSError:
            continue
        for entry in entries:
            child = _join(rel, entry.name) if rel else entry.name
            st = entry.stat(follow_symlinks=False)
            yield child, st
            if stat.S_ISDIR(st.st_mode) and st.st_dev == dev:
                stack.append(child)


def walk_candidates(trees: Trees) -> Candidates:
    """Candidates from a full walk of both trees (ctime and inode differences)."""
    found = Candidates()
    top_old, top_new = os.lstat(trees.baseline), os.lstat(trees.current)
    if (top_old.st_ctime_ns, top_old.st_mtime_ns) != (top_new.st_ctime_ns, top_new.st_mtime_ns):
        found.touch(b"", "changed")  # the root directory itself
    old_index = dict(_walk(trees.baseline))
    for rel, new in _walk(trees.current):
        old = old_index.pop(rel, None)
        if old is None:
            found.touch(rel, "created")
        elif (old.st_ino, old.st_ctime_ns, old.st_mtime_ns) != (
            new.st_ino,
            new.st_ctime_ns,
            new.st_mtime_ns,
        ):
            found.touch(rel, "changed")
    found.removed.update(old_index)
    return found


def nested_subvolumes(top: Path, root_rel: str) -> list[str]:
    """Top-level-relative paths of subvolumes inside the root (send and snapshots skip them)."""
    prefix = root_rel + "/"
    return [r.path for r in btrfs.list_subvolumes(top) if r.path.startswith(prefix)]


def inside_subvolume(top: Path, root_rel: str, sub_rel: str) -> list[Change]:
    """Everything in a nested subvolume: none of it is in the baseline."""
    base = os.fsencode(top / sub_rel)
    at = os.fsencode(sub_rel[len(root_rel) :])  # "/var/lib/machines/a"
    changes = [Change(at, Kind.CREATED, "subvolume", 0)]
    dev = os.lstat(base).st_dev
    for rel, st in _walk(base):
        if st.st_dev != dev:
            continue  # a subvolume nested in this one: reported on its own, as a subvolume
        changes.append(Change(at + b"/" + rel, Kind.CREATED, file_type(st.st_mode), st.st_size))
    return changes


def tree_since(top: Path, root_rel: str, baseline_rel: str) -> int | None:
    """The transaction in which the root was made from the baseline, when the trees can answer:
    the root is a snapshot of the baseline, and the baseline has not changed since."""
    root = btrfs.subvolume_info(top / root_rel)
    baseline = btrfs.subvolume_info(top / baseline_rel)
    if root.parent_uuid != baseline.uuid or baseline.ctransid > root.otransid:
        return None
    return root.otransid


def tree_candidates(
    top: Path, baseline: Path, snapshot: Path, since: int, helper: Path | None = None
) -> Candidates:
    with btrfs.opened(top) as fd:
        current = treediff.Tree(fd, btrfs.subvolume_info(snapshot).id)
        found = treediff.candidates(
            current, treediff.Tree(fd, btrfs.subvolume_info(baseline).id), since, helper
        )
    return Candidates(touched=found.touched, removed=found.removed, names_data=True)


def send_stream_candidates(baseline: Path, snapshot: Path) -> Candidates:
    argv = ["btrfs", "send", "--quiet", "--no-data", "-p", str(baseline), str(snapshot)]
    with process.stream(argv) as out:
        return candidates_from_stream(sendstream.read(out))


# Filters and the whole diff


@dataclass(frozen=True)
class Ignore:
    pattern: str
    source: str  # "--ignore", or the file the pattern was read from


@dataclass(frozen=True)
class Filter:
    """What is left out: persisted paths, other mount points, NixOS-managed links, ignores."""

    persisted: tuple[bytes, ...] = ()
    mountpoints: tuple[bytes, ...] = ()
    patterns: tuple[Ignore, ...] = ()

    def left_out(self, change: Change) -> str | None:
        """Why the change is left out of the diff; None when it is kept."""
        path = change.path
        for p in self.persisted:
            if path == p or path.startswith(p + b"/"):
                return f"persistent: {os.fsdecode(p)} is declared"
        # Parents of persisted paths are made again at every boot: their creation is no loss.
        if change.type == "dir" and change.kind is not Kind.DELETED:
            for p in self.persisted:
                if p.startswith(path + b"/"):
                    return f"made again at every boot, as the parent of {os.fsdecode(p)}"
        if path in self.mountpoints:
            return "the mount point of another subvolume"
        if path.startswith(b"/nix/"):
            return "under /nix, which Nix manages"
        ignore = self._ignored_by(change.display)
        return None if ignore is None else f"ignored: {ignore.pattern} ({ignore.source})"

    def link_left_out(self, target: bytes) -> str | None:
        """Links NixOS manages point into the store or /etc/static and are rebuilt every boot."""
        if target.startswith((b"/nix/store/", b"/etc/static/")):
            return f"a link NixOS makes again at every boot (to {os.fsdecode(target)})"
        return None

    def _ignored_by(self, display: str) -> Ignore | None:
        candidates = [display]
        parent = display
        while (cut := parent.rfind("/")) > 0:
            parent = parent[:cut]
            candidates.append(parent)
        for ignore in self.patterns:
            if any(fnmatch.fnmatchcase(c, ignore.pattern.rstrip("/")) for c in candidates):
                return ignore
        return None


@dataclass(frozen=True)
class Excluded:
    change: Change
    why: str


@dataclass
class Result:
    method: str
    changes: list[Change]
    excluded: list[Excluded]  # changes the filter left out, and why

    @property
    def hidden(self) -> int:
        return len(self.excluded)


def run(
    top: Path,
    root_rel: str,
    baseline_rel: str | None,
    *,
    method: str,
    want_times: bool,
    keep: Filter,
    helper: Path | None = None,
) -> Result:
    """Diff the root subvolume against its baseline through a temporary read-only snapshot.
    `helper`: the boot step's helper, which reads the changed leaves faster (D157)."""
    if baseline_rel is not None and not btrfs.is_subvolume(top / baseline_rel):
        # Said in the machine's words: top is a private mount nobody else can look at.
        raise PantherError(f"the blank snapshot {baseline_rel} is missing: nothing to diff against")
    remove_stale_snapshots(top)
    snap_rel = f".pantheros-diff-{os.getpid()}"
    snapshot = top / snap_rel
    btrfs.snapshot(top / root_rel, snapshot, readonly=True)
    try:
        if baseline_rel is None:
            empty = top / f".pantheros-diff-empty-{os.getpid()}"
            btrfs.create_subvolume(empty)
            try:
                return _run(top, snapshot, empty, root_rel, "walk", want_times, keep, None, None)
            finally:
                btrfs.delete_subvolume(empty)
        since = tree_since(top, root_rel, baseline_rel)
        if method == "tree" and since is None:
            raise UsageError(
                f"diff --method tree: {root_rel} is not an unchanged snapshot of {baseline_rel} "
                "(use send or walk)"
            )
        chosen = method if method != "auto" else _auto_method(top / baseline_rel, since)
        baseline = top / baseline_rel
        return _run(top, snapshot, baseline, root_rel, chosen, want_times, keep, since, helper)
    finally:
        btrfs.delete_subvolume(snapshot)


_TEMPORARY = re.compile(r"\.pantheros-diff-(?:empty-)?([0-9]+)")


def remove_stale_snapshots(top: Path) -> None:
    """Delete the temporary subvolumes of diffs that were killed (their process is gone).

    Only a subvolume directly in the top level, named as `run` names them, whose process no
    longer runs; the caller holds the machine's lock, so no other diff is making one.
    """
    for entry in os.scandir(top):
        found = _TEMPORARY.fullmatch(entry.name)
        if found is None or _running(int(found.group(1))):
            continue
        path = top / entry.name
        if btrfs.is_subvolume(path) and btrfs.subvolume_info(path).parent_id == btrfs.TOP_LEVEL_ID:
            btrfs.delete_subvolume(path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _auto_method(baseline: Path, since: int | None, enough: int = 100) -> str:
    """The trees when they can answer; else send once the baseline has content (for a nearly
    empty one a walk is cheaper)."""
    if since is not None:
        return "tree"
    for count, _ in enumerate(_walk(os.fsencode(baseline)), 1):
        if count >= enough:
            return "send"
    return "walk"


def _run(
    top: Path,
    snapshot: Path,
    baseline: Path,
    root_rel: str,
    method: str,
    want_times: bool,
    keep: Filter,
    since: int | None,
    helper: Path | None,
) -> Result:
    trees = Trees(baseline=os.fsencode(baseline), current=os.fsencode(snapshot))
    if method == "tree" and since is not None:
        found = tree_candidates(top, baseline, snapshot, since, helper)
    elif method == "send":
        found = send_stream_candidates(baseline, snapshot)
    else:
        found = walk_candidates(trees)
    nested = nested_subvolumes(top, root_rel)
    placeholders = {os.fsencode(n[len(root_rel) + 1 :]) for n in nested}
    for rel in placeholders:
        found.touched.pop(rel, None)
    changes = resolve(trees, found, want_times)
    for sub in nested:
        changes += inside_subvolume(top, root_rel, sub)
    kept = []
    excluded = []
    for change in changes:
        why = None
        if change.type == "symlink" and change.kind is not Kind.DELETED:
            why = keep.link_left_out(os.readlink(trees.current + change.path))
        why = why or keep.left_out(change)
        if why is None:
            kept.append(change)
        else:
            excluded.append(Excluded(change, why))
    kept.sort(key=lambda c: c.path)
    excluded.sort(key=lambda e: e.change.path)
    return Result(method, kept, excluded)
