"""Invariant 9: the blank is trusted only while it is read-only and unchanged since it was made.

A subvolume's ctransid is the transaction of the last change to anything in it (data, names,
modes, xattrs), and a snapshot starts with its source's, so `ctransid <= otransid` means nothing
changed since it was made. Clearing the read-only flag alone changes nothing; writing a file
does, and setting the flag again does not undo that. The generation cannot serve: taking a
snapshot of the blank (every boot does) raises it. The boot step applies the same rule in shell.
"""

from __future__ import annotations

from pathlib import Path

from pantheros import btrfs
from pantheros.manifest import Manifest
from pantheros.manifest.models import Design


def unchanged(info: btrfs.SubvolumeInfo) -> bool:
    """Nothing in the subvolume changed since it was made (the rule above)."""
    return info.ctransid <= info.otransid


def problem(top: Path, manifest: Manifest) -> str | None:
    """Why the blank under the top level `top` cannot be trusted, or None when it can."""
    if manifest.impermanence.design is not Design.BLANK_SNAPSHOT:
        return None
    name = manifest.storage.blank_snapshot
    path = top / name
    if not btrfs.is_subvolume(path):
        return f"the blank snapshot {name} is missing"
    info = btrfs.subvolume_info(path)
    if not info.readonly:
        return f"the blank snapshot {name} is writable (it must stay read-only)"
    if not unchanged(info):
        return (
            f"the blank snapshot {name} changed after it was made "
            f"(changed at transid {info.ctransid}, made at {info.otransid})"
        )
    return None
