"""Invariant 9: the blank is trusted only while it is read-only and unchanged since it was made.

A snapshot's generation equals its creation transid (otransid) until something in its tree
changes; clearing the read-only flag alone does not change it, writing a file does, and setting
the flag again does not undo that. So "read-only and generation == otransid" means: nothing was
written into the blank since it was made. The boot step applies the same rule in shell.
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
    if info.generation != info.otransid:
        return (
            f"the blank snapshot {name} changed after it was made "
            f"(generation {info.generation}, made at transid {info.otransid})"
        )
    return None
