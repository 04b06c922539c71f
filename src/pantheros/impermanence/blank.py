"""Invariant 9: the blank is trusted only while it is read-only, unchanged since it was made, and
the very subvolume recorded as the blank (D80).

A subvolume's ctransid is the transaction of the last change to anything in it (data, names,
modes, xattrs), and a snapshot starts with its source's, so `ctransid <= otransid` means nothing
changed since it was made. Clearing the read-only flag alone changes nothing; writing a file
does, and setting the flag again does not undo that. The generation cannot serve: taking a
snapshot of the blank (every boot does) raises it. Any new read-only snapshot passes those two
rules, so the blank's identity (UUID and creation transaction) is recorded when the disk is laid
out (pantheros.storage.blankrecord), and only `panther blank bless` changes the record, after
showing what differs. The boot step applies the same rules in shell.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pantheros import btrfs
from pantheros.manifest import Manifest
from pantheros.manifest.models import Design
from pantheros.storage import blankrecord
from pantheros.storage.blankrecord import BlankIdentity

BLESS_HINT = "`panther blank bless` shows the blank and records it if you mean it"


def unchanged(info: btrfs.SubvolumeInfo) -> bool:
    """Nothing in the subvolume changed since it was made (the rule above)."""
    return info.ctransid <= info.otransid


def _own_problem(name: str, path: Path) -> tuple[str | None, btrfs.SubvolumeInfo | None]:
    """What is wrong with the subvolume itself (missing, writable, changed), and its facts."""
    if not btrfs.is_subvolume(path):
        return f"the blank snapshot {name} is missing", None
    info = btrfs.subvolume_info(path)
    if not info.readonly:
        return f"the blank snapshot {name} is writable (it must stay read-only)", info
    if not unchanged(info):
        return (
            f"the blank snapshot {name} changed after it was made "
            f"(changed at transid {info.ctransid}, made at {info.otransid})"
        ), info
    return None, info


def identity_problem(top: Path, name: str, info: btrfs.SubvolumeInfo) -> str | None:
    """Why the subvolume `info` at top/name is not the blank recorded, or None when it is."""
    try:
        recorded = blankrecord.read(top)
    except blankrecord.RecordProblem as exc:
        return f"{exc}: {BLESS_HINT}"
    if recorded is None:
        return (
            f"the blank snapshot {name} has no identity record ({blankrecord.RECORD} at the "
            f"top level): {BLESS_HINT}"
        )
    if recorded.matches(name, info):
        return None
    return (
        f"the blank snapshot {name} is not the one recorded (it is uuid {info.uuid} made at "
        f"transid {info.otransid}; the record names {recorded.name}, uuid {recorded.uuid}, made "
        f"at transid {recorded.otransid}): {BLESS_HINT}"
    )


def problem(top: Path, manifest: Manifest) -> str | None:
    """Why the blank under the top level `top` cannot be trusted, or None when it can."""
    if manifest.impermanence.design is not Design.BLANK_SNAPSHOT:
        return None
    name = manifest.storage.blank_snapshot
    own, info = _own_problem(name, top / name)
    if own is not None or info is None:
        return own
    return identity_problem(top, name, info)


# --- panther blank bless ---------------------------------------------------------------------


@dataclass(frozen=True)
class Examination:
    """The blank as it is against the record: what `panther blank bless` shows first."""

    name: str
    current: BlankIdentity | None  # None: the blank is missing
    recorded: BlankIdentity | None
    record_problem: str | None  # the record is there but unreadable
    refusal: str | None  # why this blank cannot be recorded (missing, writable, changed)
    differences: list[str]  # which recorded facts differ
    recorded_now_at: str | None  # where the recorded subvolume is now, if it still exists
    content_against: str  # what the content was compared with
    content: list[tuple[str, bytes, str]] = field(default_factory=list)  # (mark, path, detail)

    @property
    def matches(self) -> bool:
        return (
            self.current is not None
            and self.recorded is not None
            and (self.current.name, self.current.uuid, self.current.otransid)
            == (self.recorded.name, self.recorded.uuid, self.recorded.otransid)
        )


def examine(top: Path, manifest: Manifest, why: str) -> Examination:
    """Compare the blank with its record and, where the recorded subvolume still exists, their
    contents (else everything the blank holds)."""
    name = manifest.storage.blank_snapshot
    path = top / name
    own, info = _own_problem(name, path)
    current = BlankIdentity.of(name, info, why) if info is not None else None
    record_problem = None
    try:
        recorded = blankrecord.read(top)
    except blankrecord.RecordProblem as exc:
        recorded, record_problem = None, str(exc)
    differences = []
    if recorded is not None and current is not None:
        for what, old, new in (
            ("name", recorded.name, current.name),
            ("uuid", recorded.uuid, current.uuid),
            ("made at transid", str(recorded.otransid), str(current.otransid)),
            ("subvolume id", str(recorded.id), str(current.id)),
        ):
            if old != new:
                differences.append(f"{what}: {old} -> {new}")
    before = _recorded_subvolume(top, recorded) if recorded is not None else None
    if current is None:
        return Examination(name, None, recorded, record_problem, own, differences, None, "")
    if before is not None and before != name:
        content = tree_changes(top / before, path)
        against = f"the recorded blank, now at {before}"
    elif before == name:
        content, against = [], "the recorded blank (the same subvolume)"
    else:
        content, against = tree_changes(None, path), "nothing (the recorded blank is gone)"
    return Examination(
        name, current, recorded, record_problem, own, differences, before, against, content
    )


def _recorded_subvolume(top: Path, recorded: BlankIdentity) -> str | None:
    """Where the recorded blank is now (found by id, checked by UUID), or None when gone."""
    for ref in btrfs.list_subvolumes(top):
        if ref.id == recorded.id:
            info = btrfs.subvolume_info(top / ref.path)
            return ref.path if str(info.uuid) == recorded.uuid else None
    return None


def bless(top: Path, seen: Examination) -> None:
    """Record the examined blank as the blank (the caller showed `seen` and was told yes)."""
    assert seen.current is not None
    assert seen.refusal is None
    blankrecord.write(top, seen.current)


def _facts(path: bytes) -> dict[bytes, os.stat_result]:
    """Every entry below path (relative, with a leading slash), not following symlinks."""
    found: dict[bytes, os.stat_result] = {}
    for directory, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            found[full[len(path) :]] = os.lstat(full)
    return found


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "special file"


def _open_file(path: bytes) -> int:
    """A regular file, opened without following a link or waiting on a FIFO put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{os.fsdecode(path)} is no longer a regular file")
    return fd


def _same_content(a: bytes, b: bytes) -> bool:
    with os.fdopen(_open_file(a), "rb") as fa, os.fdopen(_open_file(b), "rb") as fb:
        while True:
            one, two = fa.read(1 << 20), fb.read(1 << 20)
            if one != two:
                return False
            if not one:
                return True


def _changed(a: os.stat_result, b: os.stat_result, old: bytes, new: bytes) -> list[str]:
    """What differs between two entries of the same path (old and new: their full paths)."""
    what = []
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return [f"{_kind(a.st_mode)} -> {_kind(b.st_mode)}"]
    if stat.S_IMODE(a.st_mode) != stat.S_IMODE(b.st_mode):
        what.append(f"mode {stat.S_IMODE(a.st_mode):04o} -> {stat.S_IMODE(b.st_mode):04o}")
    if (a.st_uid, a.st_gid) != (b.st_uid, b.st_gid):
        what.append(f"owner {a.st_uid}:{a.st_gid} -> {b.st_uid}:{b.st_gid}")
    if stat.S_ISLNK(a.st_mode) and os.readlink(old) != os.readlink(new):
        what.append("link target")
    if stat.S_ISREG(a.st_mode) and (a.st_size != b.st_size or not _same_content(old, new)):
        what.append("content")
    return what


def tree_changes(old: Path | None, new: Path) -> list[tuple[str, bytes, str]]:
    """How the tree new differs from old (None: an empty tree): ("+", path, what) added,
    ("-", ...) gone, ("~", ...) changed (type, mode, owner, size, content, link target)."""
    old_b = os.fsencode(old) if old is not None else b""
    new_b = os.fsencode(new)
    before = _facts(old_b) if old is not None else {}
    after = _facts(new_b)
    changes: list[tuple[str, bytes, str]] = []
    for rel in sorted(before.keys() | after.keys()):
        a, b = before.get(rel), after.get(rel)
        if a is None and b is not None:
            changes.append(("+", rel, f"{_kind(b.st_mode)}, mode {stat.S_IMODE(b.st_mode):04o}"))
        elif a is not None and b is None:
            changes.append(("-", rel, ""))
        elif a is not None and b is not None:
            what = _changed(a, b, old_b + rel, new_b + rel)
            if what:
                changes.append(("~", rel, ", ".join(what)))
    return changes
