"""The kernel's mount table, read from /proc/self/mountinfo (mounting is storage.mounts).

On the bottom floor: the storage layer, fsutil and every domain package read it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


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


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mountinfo(path: str = "/proc/self/mountinfo") -> list[MountEntry]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def parse_mountinfo(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        if len(fields) < 6:
            continue
        fstype, source, super_opts = [*right.split(" "), "", "", ""][:3]
        entries.append(
            MountEntry(
                mount_id=int(fields[0]),
                parent_id=int(fields[1]),
                device=fields[2],
                root=_unescape(fields[3]),
                mountpoint=_unescape(fields[4]),
                options=tuple(fields[5].split(",")),
                fstype=fstype,
                source=_unescape(source),
                super_options=tuple(super_opts.split(",")),
            )
        )
    return entries


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
