"""The old-roots location: what is in it, what is verifiably an old root, and deleting one.

An entry is an old root only if it is a subvolume whose parent subvolume and parent directory
(btrfs `parent_id` and `dirid`) are exactly the old-roots location, found there without crossing
a mount. Anything else found there (a plain directory, a file, a subvolume that is not a child
of the location) is reported as a stray and never touched. The boot step's helper decides what is
an old root and what is pinned, and does every deletion: it re-verifies the victim by id just
before, refuses a pinned one or one mounted (or holding a mount) in any mount namespace, and
deletes nested subvolumes deepest first (D81).
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, process, ui
from pantheros.errors import PantherError, UsageError
from pantheros.files import write_json
from pantheros.impermanence import bootstep
from pantheros.impermanence.retention import Candidate
from pantheros.manifest.models import Storage
from pantheros.storage import keyvalue

PIN_FILE = ".pantheros-pins.json"
KEPT = 6  # the helper's exit code when it kept an old root it was asked to delete


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


class OldRoots:
    """The old roots of one top level. What is an old root, what is pinned, what is mounted and
    every deletion are the boot step's helper's (pantheros-btrfs): one implementation for the
    boot step and for panther."""

    def __init__(self, top: Path, storage: Storage) -> None:
        self.top = top
        self.storage = storage
        self.location = top / storage.old_roots

    def _helper(self, command: str, *args: str) -> list[str]:
        """The helper's output lines for COMMAND TOP OLD_ROOTS ARGS; PantherError on failure."""
        proc = bootstep.helper(command, self.top, self.storage.old_roots, *args)
        if proc.returncode not in (0, KEPT):
            detail = proc.stderr.strip().splitlines()
            why = detail[-1].removeprefix("pantheros-btrfs: ") if detail else "failed"
            raise PantherError(f"old roots in {self.storage.old_roots}: {why}")
        return [line for line in proc.stdout.split("\n") if line]

    def scan(self) -> tuple[list[OldRoot], list[Stray]]:
        """Old roots in creation order (oldest first), and the strays beside them."""
        if not os.path.lexists(self.location):
            return [], []
        if self.location.is_symlink() or not self.location.is_dir():
            raise PantherError(f"old-roots location {self.location} is not a directory")
        listed: dict[str, tuple[int, bool]] = {}
        for line in self._helper("old-roots"):
            sid, _otransid, _ro, pinned, name = line.split(" ", 4)
            listed[keyvalue.unescape(name)] = (int(sid), pinned == "1")
        sizes = btrfs.qgroup_sizes(self.top)
        roots: list[OldRoot] = []
        strays: list[Stray] = []
        for entry in sorted(os.scandir(self.location), key=lambda e: e.name):
            if entry.name == PIN_FILE and not entry.is_dir(follow_symlinks=False):
                continue
            path = Path(entry.path)
            found = listed.get(entry.name)
            info = btrfs.subvolume_info(path) if found is not None else None
            if found is None or info is None or info.id != found[0]:
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
                    pinned=found[1],
                    sizes=sizes.get(info.id) if sizes else None,
                )
            )
        roots.sort(key=lambda r: (r.info.otransid, r.info.id))
        return roots, strays

    def get(self, name: str) -> OldRoot:
        if "/" in name or name in ("", ".", ".."):
            raise UsageError(f"not an old root name: {name!r}")
        for root in self.scan()[0]:
            if root.name == name:
                return root
        raise UsageError(f"no old root named {name!r} in {self.storage.old_roots}")

    # Pins live in a small JSON file beside the old roots, keyed by subvolume UUID, because
    # old roots are read-only subvolumes and cannot carry an xattr. The helper is its reader.

    def pins(self) -> set[str]:
        """The UUIDs the pin file names."""
        if not os.path.lexists(self.location):
            return set()
        return {keyvalue.unescape(line) for line in self._helper("pins")}

    def set_pinned(self, name: str, pinned: bool) -> bool:
        """Pin or unpin; returns whether anything changed."""
        roots, _ = self.scan()
        root = self.get(name)
        pins = self.pins()
        key = str(root.info.uuid)
        if (key in pins) == pinned:
            return False
        if pinned:
            pins.add(key)
        else:
            pins.discard(key)
        # The names are for a reader of the file; only the keys count.
        names = {str(r.info.uuid): r.name for r in roots}
        write_json(
            self.location / PIN_FILE,
            {k: names.get(k, "") for k in sorted(pins)},
            beneath=self.top,
            known_as=f"{self.storage.old_roots}/{PIN_FILE} (btrfs top level)",
            sort_keys=True,
        )
        btrfs.sync(self.top)
        return True

    def mounted(self, roots: Collection[OldRoot]) -> dict[str, str]:
        """Old root name -> where it (or something in it) is mounted, in any mount namespace,
        for each of roots (from scan) that is."""
        by_id = {r.info.id: r.name for r in roots}
        found = {}
        for line in self._helper("mounted-old-roots"):
            sid, where = line.split(" ", 1)
            if int(sid) in by_id:
                found[by_id[int(sid)]] = keyvalue.unescape(where)
        return found

    def delete(self, roots: Collection[OldRoot]) -> tuple[list[str], list[str]]:
        """Delete old roots with everything nested in them, when each is still an old root of
        this location, unpinned and mounted nowhere (the helper checks, just before). Returns
        the deleted paths (below the top level, nested ones first) and a note per root kept."""
        if not roots:
            return [], []
        names = {r.info.id: r.name for r in roots}
        proc = bootstep.helper(
            "delete-old-roots", self.top, self.storage.old_roots, *(str(i) for i in names)
        )
        deleted: list[str] = []
        kept: list[str] = []
        nested: list[str] = []
        for line in (line for line in proc.stdout.split("\n") if line):
            what, sid, rest = line.split(" ", 2)
            name = names.get(int(sid), sid)
            if what == "deleted-nested":
                nested.append(keyvalue.unescape(rest))
            elif what == "deleted":
                deleted += [f"{self.storage.old_roots}/{name}/{n}" for n in nested]
                deleted.append(f"{self.storage.old_roots}/{name}")
                nested = []
            else:
                kept.append(f"{ui.printable(name)} was kept: {keyvalue.unescape(rest)}")
                nested = []
        if proc.returncode not in (0, KEPT):
            detail = proc.stderr.strip().splitlines()
            why = detail[-1].removeprefix("pantheros-btrfs: ") if detail else "failed"
            raise PantherError(f"deleting old roots stopped: {why}")
        return deleted, kept
