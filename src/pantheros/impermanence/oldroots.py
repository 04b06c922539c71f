"""The old-roots location: what is in it, what is verifiably an old root, and deleting one.

An entry is an old root only if it is a subvolume whose parent subvolume and parent directory
(btrfs `parent_id` and `dirid`) are exactly the old-roots location. Anything else found there (a
plain directory, a file, a subvolume that is not a child of the location) is reported as a stray
and never touched. Deletion re-verifies the victim and each nested subvolume by id immediately
before deleting, deepest first.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, mounttable, process
from pantheros.errors import PantherError, UsageError
from pantheros.files import BadRecord, read_json, write_json
from pantheros.impermanence.retention import Candidate
from pantheros.manifest.models import Storage

log = logging.getLogger(__name__)

PIN_FILE = ".pantheros-pins.json"


class NotAnOldRoot(PantherError):
    """A deletion target failed verification; nothing was deleted."""


class Mounted(NotAnOldRoot):
    """The old root, or something inside it, is mounted; nothing was deleted."""


@dataclass(frozen=True)
class OldRoot:
    name: str
    path: Path
    info: btrfs.SubvolumeInfo
    pinned: bool
    sizes: tuple[int, int] | None = None  # referenced, exclusive (quotas on)

    def candidate(self) -> Candidate:
        return Candidate(
            name=self.name,
            otransid=self.info.otransid,
            otime=self.info.otime,
            pinned=self.pinned,
            exclusive_bytes=self.sizes[1] if self.sizes else None,
        )


@dataclass(frozen=True)
class Stray:
    name: str
    why: str


def mounted_subvolume(top: Path, rel: str, ids: Collection[int]) -> str | None:
    """Where the subvolume at top/rel, or anything inside it, is mounted; None when nowhere.

    Every btrfs mount of the filesystem under top (mountinfo's device field is the
    filesystem's, the same for all its subvolumes) is compared by subvolume id (`ids`: the
    subvolume's and those nested in it) and by its path inside the filesystem.
    """
    entries = mounttable.mountinfo()
    home = mounttable.mount_containing(top, entries)
    if home is None:
        raise PantherError(f"{top} is not on a mounted file system")
    path = "/" + rel.strip("/")
    for entry in entries:
        if entry.device != home.device or entry.fstype != "btrfs":
            continue
        subvolid = entry.option("subvolid")
        if (subvolid is not None and subvolid.isdigit() and int(subvolid) in ids) or (
            entry.root == path or entry.root.startswith(path + "/")
        ):
            return entry.mountpoint
    return None


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(word: str) -> float | None:
    """Seconds in an age such as 90s, 30m, 2h, 3d, 1w; None when word is not one."""
    found = re.fullmatch(r"([0-9]+)([smhdw])", word)
    return int(found.group(1)) * AGE_UNITS[found.group(2)] if found else None


def age_text(seconds: float) -> str:
    """The largest whole unit, as `roots list` shows an age (parse_age reads it back)."""
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def pick(roots: list[OldRoot], word: str, now: float) -> OldRoot:
    """The old root `restore --from` means; roots are in creation order, oldest first.

    A full name wins; then `latest` (the newest: archived by the last rollback), `previous`
    (the one before it), and an age: the newest root at least that old, by btrfs creation time.
    """
    for root in roots:
        if root.name == word:
            return root
    newest_first = roots[::-1]
    if word in ("latest", "previous"):
        index = 0 if word == "latest" else 1
        if index < len(newest_first):
            return newest_first[index]
        raise UsageError(f"there is no {word} old root: {_existing(newest_first, now)}")
    age = parse_age(word)
    if age is not None:
        for root in newest_first:
            if now - root.info.otime >= age:
                return root
        raise UsageError(f"no old root is {word} old or older: {_existing(newest_first, now)}")
    raise UsageError(
        f"no old root {word!r}: give latest, previous, an age (30m, 2h, 3d) or a name; "
        + _existing(newest_first, now)
    )


def _existing(newest_first: list[OldRoot], now: float, shown: int = 5) -> str:
    if not newest_first:
        return "there are no old roots yet"
    names = [f"{r.name} ({age_text(now - r.info.otime)} old)" for r in newest_first[:shown]]
    more = len(newest_first) - shown
    tail = f" and {more} older (panther roots list)" if more > 0 else ""
    return "old roots, newest first: " + ", ".join(names) + tail


def measured_sizes(path: Path) -> tuple[int, int]:
    """(total, exclusive) bytes of one subvolume by `btrfs filesystem du`, which reads every
    extent of every file in it: seconds on a large root, so only on request (`--size`)."""
    out = process.run(["btrfs", "filesystem", "du", "-s", "--raw", str(path)], check=True)
    last = out.stdout.strip().rsplit("\n", 1)[-1]
    fields = last.split()
    if len(fields) < 3 or not (fields[0].isdigit() and fields[1].isdigit()):
        raise PantherError(f"cannot read the size of {path} from btrfs filesystem du: {last!r}")
    return int(fields[0]), int(fields[1])


def archive_name(info: btrfs.SubvolumeInfo) -> str:
    """Sortable in creation order (otransid first), readable (creation time, UTC)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(info.otime))
    return f"{info.otransid:012d}-{stamp}"


class OldRoots:
    def __init__(self, top: Path, storage: Storage) -> None:
        self.top = top
        self.storage = storage
        self.location = top / storage.old_roots

    def _parent_keys(self) -> tuple[int, int]:
        """(parent subvolume id, parent directory inode) every old root must have."""
        if self.location.is_symlink() or not self.location.is_dir():
            raise PantherError(f"old-roots location {self.location} is not a directory")
        return btrfs.subvolume_info(self.location).id, os.lstat(self.location).st_ino

    def _verified(self, path: Path, keys: tuple[int, int]) -> btrfs.SubvolumeInfo | None:
        if not btrfs.is_subvolume(path):
            return None
        info = btrfs.subvolume_info(path)
        if (info.parent_id, info.dirid) != keys:
            return None
        return info

    def scan(self) -> tuple[list[OldRoot], list[Stray]]:
        """Old roots in creation order (oldest first), and the strays beside them."""
        if not self.location.exists():
            return [], []
        keys = self._parent_keys()
        pins = self.pins()
        sizes = btrfs.qgroup_sizes(self.top)
        roots: list[OldRoot] = []
        strays: list[Stray] = []
        for entry in sorted(os.scandir(self.location), key=lambda e: e.name):
            if entry.name == PIN_FILE or entry.name.startswith(PIN_FILE):
                continue
            path = Path(entry.path)
            info = self._verified(path, keys)
            if info is None:
                is_dir = entry.is_dir(follow_symlinks=False)
                kind = "a plain directory" if is_dir else "not a directory"
                if is_dir and btrfs.is_subvolume(path):
                    kind = "a subvolume that is not a child of the old-roots location"
                strays.append(Stray(entry.name, f"{kind}: not an old root, left alone"))
                continue
            roots.append(
                OldRoot(
                    name=entry.name,
                    path=path,
                    info=info,
                    pinned=str(info.uuid) in pins,
                    sizes=sizes.get(info.id) if sizes else None,
                )
            )
        roots.sort(key=lambda r: r.info.otransid)
        return roots, strays

    def get(self, name: str) -> OldRoot:
        if "/" in name or name in ("", ".", ".."):
            raise UsageError(f"not an old root name: {name!r}")
        for root in self.scan()[0]:
            if root.name == name:
                return root
        raise UsageError(f"no old root named {name!r} in {self.storage.old_roots}")

    # Pins live in a small JSON file beside the old roots, keyed by subvolume UUID, because
    # old roots are read-only subvolumes and cannot carry an xattr.

    def pins(self) -> dict[str, str]:
        """Pinned roots by UUID, read from the top level without a symlink on the way."""
        data = read_json(
            self._pin_path, beneath=self.top, what="the pin file", known_as=self._pin_name
        )
        if data is None:
            return {}
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise BadRecord(
                f"the pin file {self._pin_name} is not valid: not a JSON object of names"
            )
        return dict(data)

    @property
    def _pin_path(self) -> Path:
        return self.location / PIN_FILE

    @property
    def _pin_name(self) -> str:
        """The pin file in messages: its place in the top level, not the private mount's path."""
        return f"{self.storage.old_roots}/{PIN_FILE} (btrfs top level)"

    def set_pinned(self, name: str, pinned: bool) -> bool:
        """Pin or unpin; returns whether anything changed."""
        root = self.get(name)
        pins = self.pins()
        key = str(root.info.uuid)
        if (key in pins) == pinned:
            return False
        if pinned:
            pins[key] = root.name
        else:
            del pins[key]
        write_json(self._pin_path, pins, beneath=self.top, known_as=self._pin_name, sort_keys=True)
        btrfs.sync(self.top)
        return True

    def mounted_at(self, root: OldRoot, nested: Collection[int] = ()) -> str | None:
        """Where root (or a subvolume or directory in it) is mounted, as this process sees it."""
        rel = str(root.path.relative_to(self.top))
        return mounted_subvolume(self.top, rel, {root.info.id, *nested})

    def delete(self, root: OldRoot) -> list[str]:
        """Delete one verified old root and every subvolume nested in it, deepest first."""
        keys = self._parent_keys()
        info = self._verified(root.path, keys)
        if info is None or info.id != root.info.id:
            raise NotAnOldRoot(f"{root.path} is no longer the old root it was; not deleted")
        if root.pinned or str(info.uuid) in self.pins():
            raise NotAnOldRoot(f"{root.name} is pinned; not deleted")
        refs = btrfs.list_subvolumes(self.top)
        children: dict[int, list[btrfs.SubvolumeRef]] = {}
        for ref in refs:
            children.setdefault(ref.parent_id, []).append(ref)
        victim_rel = str(root.path.relative_to(self.top))
        ordered: list[tuple[int, btrfs.SubvolumeRef]] = []

        def walk(parent: int, depth: int) -> None:
            for child in children.get(parent, []):
                if not child.path.startswith(victim_rel + "/"):
                    raise NotAnOldRoot(
                        f"subvolume {child.path} hangs below {victim_rel} but "
                        "lies outside it; nothing deleted"
                    )
                ordered.append((depth, child))
                walk(child.id, depth + 1)

        walk(info.id, 1)
        where = self.mounted_at(root, {ref.id for _, ref in ordered})
        if where is not None:
            raise Mounted(f"{root.name} is mounted at {where}; not deleted")
        # A read-only subvolume cannot lose a nested one: make writable exactly the subvolumes
        # that hold others (each flag change costs a commit, so not the rest).
        holders = {ref.parent_id for _, ref in ordered}
        for path in [root.path] + [self.top / ref.path for _, ref in ordered]:
            sub = btrfs.subvolume_info(path)
            if sub.id in holders and sub.readonly:
                btrfs.set_readonly(path, False)
        deleted = []
        for _, ref in sorted(ordered, key=lambda item: (-item[0], -item[1].id)):
            path = self.top / ref.path
            if not btrfs.is_subvolume(path) or btrfs.subvolume_info(path).id != ref.id:
                raise NotAnOldRoot(f"{path} is not subvolume {ref.id} any more; stopped")
            log.debug("delete nested subvolume %s (id %d)", path, ref.id)
            btrfs.delete_subvolume(path)
            deleted.append(ref.path)
        btrfs.delete_subvolume(root.path)
        deleted.append(victim_rel)
        return deleted
