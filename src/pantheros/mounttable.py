"""The kernel's mount table, read from /proc/self/mountinfo (mounting is storage.mounts).

On the bottom floor: the storage layer, fsutil and every domain package read it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pantheros import mountlines


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    parent_id: int
    device: str  # major:minor
    root: str  # path inside the filesystem (for btrfs, /<subvolume path>)
    mountpoint: str
    options: tuple[str, ...]
    fstype: str
    source: str
    super_options: tuple[str, ...]

    @property
    def all_options(self) -> tuple[str, ...]:
        return self.options + self.super_options

    def option(self, name: str) -> str | None:
        for option in self.all_options:
            key, _, value = option.partition("=")
            if key == name:
                return value
        return None


def mountinfo(path: str = mountlines.MOUNTINFO) -> list[MountEntry]:
    return [MountEntry(*fields) for fields in mountlines.read(path)]


def parse_mountinfo(text: str) -> list[MountEntry]:
    return [MountEntry(*fields) for fields in mountlines.parse(text)]


def mount_at(path: str | Path) -> MountEntry | None:
    """The topmost mount whose mount point is exactly path."""
    target = os.path.realpath(path)
    found = [m for m in mountinfo() if m.mountpoint == target]
    return found[-1] if found else None


def mount_containing(
    path: str | Path, entries: list[MountEntry] | None = None
) -> MountEntry | None:
    """The topmost mount whose tree holds path (among entries, once read; else the table now)."""
    target = os.path.realpath(path)
    found = [
        m
        for m in (mountinfo() if entries is None else entries)
        if target == m.mountpoint or target.startswith(m.mountpoint.rstrip("/") + "/")
    ]
    return max(found, key=lambda m: len(m.mountpoint), default=None)
