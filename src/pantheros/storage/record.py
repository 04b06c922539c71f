"""The mount record: what `panther disk mount` (and the lab) mounted at a directory, so that
unmounting undoes exactly that.

One JSON file per directory under the state directory. The record is a hint, never trusted
alone: the loop device it names is used only while the kernel says the image backs it, and a
mount counts as ours only if its source is our device. It is also checked as a whole before any
of it is used (D52): a file that is not a valid record is refused in one line, and a record in
the format of panther before version 2 (`"what": "<subvolume>" | "esp" | "bind:/path"`) is read,
checked the same way, and written in today's format when it is next saved.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pantheros import files, locking
from pantheros.errors import PantherError
from pantheros.storage import blockdev
from pantheros.storage.mounts import state_dir

FORMAT_VERSION = 2


class MountKind(enum.StrEnum):
    SUBVOLUME = "subvolume"
    ESP = "esp"
    BIND = "bind"


@dataclass(frozen=True)
class RecordedMount:
    """One mount panther made: at path (on this host), of what.

    of: for a subvolume its name; for a bind mount the persistent path as the machine sees it
    (`/var/lib/app`); None for the EFI system partition.
    """

    path: str
    kind: MountKind
    of: str | None

    def describe(self) -> str:
        """What is mounted, in words: `subvolume root`, `EFI system partition`, ..."""
        match self.kind:
            case MountKind.SUBVOLUME:
                return f"subvolume {self.of}"
            case MountKind.ESP:
                return "EFI system partition"
            case MountKind.BIND:
                return f"bind mount of persistent {self.of}"

    def as_json(self) -> dict[str, str | None]:
        return {"path": self.path, "kind": self.kind.value, "of": self.of}


class RecordError(PantherError):
    """A record file that is not a record panther wrote: nothing in it is used."""


def lock(directory: Path) -> contextlib.AbstractContextManager[None]:
    """One `disk mount` or `disk unmount` at a time per directory (a lab's commands hold the
    lab's lock around theirs as well)."""
    path = state_dir() / "locks" / f"mounts-{record_file(directory).stem}.lock"
    return locking.exclusive(path, what=f"the mounts at {directory}")


def record_file(directory: Path) -> Path:
    key = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return state_dir() / "mounts" / f"{key}.json"


@dataclass
class MountRecord:
    """What was mounted at directory, from target (through loop and the LUKS mapping luks)."""

    directory: str
    target: str
    manifest: str
    loop: str | None = None
    luks: str | None = None
    mounts: list[RecordedMount] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path) -> Self | None:
        """The record for directory, None when there is none; RecordError when it is not valid."""
        path = record_file(directory)
        # Under the state directory, without a symlink: one planted there is refused.
        data = files.read_bytes(path, beneath=state_dir(), what="the mount record")
        if data is None:
            return None
        try:
            return cls._parse(files.parse_json(data), directory)
        except (ValueError, TypeError) as exc:
            raise RecordError(
                f"the mount record {path} is not valid ({exc}); nothing in it is trusted: "
                f"undo what is mounted under {directory} (findmnt -R {directory}), "
                "then delete the file"
            ) from None

    @classmethod
    def _parse(cls, data: Any, directory: Path) -> Self:
        """The record in data; one in the format before version 2 is read as well (saved, it
        is written in today's format)."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        version = data.pop("version", None)
        # `2.0 == 2` and `True == 1`: compared by type too, as panther writes an int.
        if version is not None and (type(version) is not int or version != FORMAT_VERSION):
            raise ValueError(f"format version {version!r}, this panther reads {FORMAT_VERSION}")
        expected = {"directory", "target", "manifest", "loop", "luks", "mounts"}
        if set(data) != expected:
            raise ValueError(f"keys {sorted(data)}, expected {sorted(expected)}")
        if data["directory"] != str(directory):
            raise ValueError(f"it is the record of {data['directory']!r}")
        for key in ("target", "manifest"):
            _require(isinstance(data[key], str), f"{key} is not a string")
        _require(
            data["loop"] is None or re.fullmatch(r"/dev/loop[0-9]+", str(data["loop"])),
            f"loop {data['loop']!r} is not a loop device",
        )
        _require(
            data["luks"] is None or re.fullmatch(r"[A-Za-z0-9_.+-]+", str(data["luks"])),
            f"luks {data['luks']!r} is not a mapping name",
        )
        _require(isinstance(data["mounts"], list), "mounts is not a list")
        mounts = [_mount(entry, directory, old_format=version is None) for entry in data["mounts"]]
        paths = [m.path for m in mounts]
        # `add` keeps one mount a path: two would keep `lab status` from ever seeing it up.
        _require(len(set(paths)) == len(paths), "a path is recorded twice")
        return cls(
            directory=data["directory"],
            target=data["target"],
            manifest=data["manifest"],
            loop=data["loop"],
            luks=data["luks"],
            mounts=mounts,
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "directory": self.directory,
            "target": self.target,
            "manifest": self.manifest,
            "loop": self.loop,
            "luks": self.luks,
            "mounts": [m.as_json() for m in self.mounts],
        }

    def save(self) -> None:
        files.write_json(record_file(Path(self.directory)), self.as_json(), beneath=state_dir())

    def forget(self) -> None:
        files.remove_file(record_file(Path(self.directory)), beneath=state_dir())

    def at(self, path: str) -> RecordedMount | None:
        return next((m for m in self.mounts if m.path == path), None)

    def add(self, mount: RecordedMount) -> None:
        """Record mount (saved at once); a path already recorded keeps its first record."""
        if self.at(mount.path) is None:
            self.mounts.append(mount)
            self.save()

    def add_bind(self, path: str | Path, of: str) -> None:
        """Record a bind mount at path of the persistent path `of` (as the machine sees it)."""
        self.add(RecordedMount(str(path), MountKind.BIND, of))

    def drop_bind(self, path: str | Path) -> None:
        """Forget the bind mount at path (saved at once); other kinds of mount are kept."""
        kept = [m for m in self.mounts if not (m.path == str(path) and m.kind is MountKind.BIND)]
        if len(kept) != len(self.mounts):
            self.mounts = kept
            self.save()

    def devices(self) -> set[str] | None:
        """Our devices (disk, partitions, LUKS mapping), or None if the loop is not ours now."""
        if self.loop is None:
            return blockdev.stack(self.target) if blockdev.is_block_device(self.target) else set()
        if not blockdev.loop_is_backed_by(self.loop, self.target):
            return None
        return blockdev.stack(self.loop)


def _require(condition: object, reason: str) -> None:
    if not condition:
        raise ValueError(reason)


def _inside(path: str, directory: Path) -> bool:
    inside = path == str(directory) or path.startswith(f"{directory}/")
    # No `..` climbing out; no NUL, which no path on this host can hold.
    return inside and os.path.normpath(path) == path and "\0" not in path


def _mount(entry: Any, directory: Path, *, old_format: bool) -> RecordedMount:
    if not isinstance(entry, dict):
        raise TypeError(f"mount {entry!r} is not a JSON object")
    path = entry.get("path")
    if not isinstance(path, str) or not _inside(path, directory):
        raise ValueError(f"mount path {path!r} is not inside {directory}")
    if old_format:
        # Before version 2 one string said it all: a subvolume's name, "esp" or "bind:/path".
        _require(set(entry) == {"path", "what"}, f"mount {entry!r} has unknown keys")
        what = entry["what"]
        _require(isinstance(what, str) and what, f"mount {path}: what {what!r} is not a name")
        if what == "esp":
            return RecordedMount(path, MountKind.ESP, None)
        if what.startswith("bind:"):
            return _checked(RecordedMount(path, MountKind.BIND, what.removeprefix("bind:")))
        return _checked(RecordedMount(path, MountKind.SUBVOLUME, what))
    _require(set(entry) == {"path", "kind", "of"}, f"mount {entry!r} has unknown keys")
    return _checked(RecordedMount(path, MountKind(entry["kind"]), entry["of"]))


def _checked(mount: RecordedMount) -> RecordedMount:
    if mount.kind is MountKind.ESP:
        _require(mount.of is None, f"mount {mount.path}: an ESP is of nothing, not {mount.of!r}")
    elif mount.kind is MountKind.BIND:
        _require(
            isinstance(mount.of, str) and mount.of.startswith("/"),
            f"mount {mount.path}: a bind mount of {mount.of!r}, not an absolute path",
        )
    else:
        _require(
            isinstance(mount.of, str) and mount.of and not mount.of.startswith("/"),
            f"mount {mount.path}: subvolume {mount.of!r} is not a subvolume name",
        )
    return mount
