"""Invariant 9: the blank is trusted only while it is read-only and unchanged since it was made.

A subvolume's ctransid is the transaction of the last change to its contents. A snapshot inherits
its source's ctransid, so a blank nobody wrote to has ctransid <= otransid (its creation); writing
a file moves ctransid past otransid, and setting the read-only flag again does not undo that.
Toggling the flag alone does not move it. The root item's generation is no witness: every
snapshot taken *of* the blank (each rollback) bumps the blank's generation without a change in
it. So "read-only and ctransid <= otransid" means: nothing was written into the blank since it
was made. The boot step applies the same rule in shell.
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
