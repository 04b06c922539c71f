"""Invariant 9: the blank is trusted only while it is read-only and unchanged since it was made.

A subvolume's ctransid is the transaction of the last change to anything in its tree (data,
names, owner, mode, xattrs). A snapshot inherits its source's ctransid, which is at most the
snapshot's creation transid (otransid); any write after creation moves ctransid past otransid.
The generation is no such marker: every snapshot taken of the blank (one per boot) moves it.
Clearing and setting the read-only flag move neither. So "read-only and ctransid <= otransid"
means: nothing was written into the blank since it was made. The boot step applies the same
rule in shell.
"""

from __future__ import annotations

from pathlib import Path

from pantheros import btrfs
from pantheros.manifest import Manifest
from pantheros.manifest.models import Design


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
    if info.ctransid > info.otransid:
        return (
            f"the blank snapshot {name} changed after it was made "
            f"(last changed at transid {info.ctransid}, made at transid {info.otransid})"
        )
    return None
