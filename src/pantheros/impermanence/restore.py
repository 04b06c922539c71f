"""`panther restore`: bring a file or tree back from an old root.

The source path is resolved inside the old root as if it were `/`, and the destination inside
the machine the same way: a symlink on the way is followed within that tree, and one that would
climb out of it is refused. The copy keeps owner, mode, timestamps, xattrs and ACLs (`cp -a`,
which also keeps hardlinks and copies symlinks as symlinks), goes to a private directory made
with mkdtemp beside the destination and is renamed into place (a directory is swapped with
RENAME_EXCHANGE), so a failed copy never leaves half a file at the destination, and the
staging directory is removed whatever happens.
"""

from __future__ import annotations

import os
from pathlib import Path

from pantheros import btrfs, mounttable
from pantheros.errors import CommandFailed, PantherError, Refused, UsageError
from pantheros.fsutil import copy_all, foreign_inside, remove_path, resolve_inside, staging_dir
from pantheros.impermanence.oldroots import OldRoot, OldRoots
from pantheros.machine import Machine
from pantheros.storage import mounts


def destination(machine: Machine, top: Path, path: str) -> tuple[str, Path]:
    """Where `--to` points inside the machine (resolved chroot-style), checked before any change.

    Refused: `/`, a mount point, a tree holding a mount or another subvolume, and a place whose
    subvolume is not the one mounted there (writing into the directory underneath is lost).
    """
    if not path.startswith("/"):
        raise UsageError(f"give an absolute path as the machine sees it, not {path!r}")
    resolved = resolve_inside(machine.root, path)
    if resolved == "/":
        raise Refused("the destination is the machine's /: restore into a path below it")
    dest = machine.host_path(resolved)
    if mounttable.mount_at(dest) is not None:
        raise Refused(f"{resolved} is a mount point: restore into a path below it")
    foreign = foreign_inside(dest) if os.path.lexists(dest) else None
    if foreign is not None:
        raise Refused(f"{resolved} contains {foreign}, a mount point or another subvolume")
    owner = machine.manifest.storage.owner(resolved)
    if owner is not None:
        machine.require_mounted(top, owner)
    return resolved, dest


def restore(source_root: Path, path: str, dest: Path, *, force: bool, shown: str) -> Path:
    """Copy path from the old root mounted at source_root to dest; returns dest.

    shown: dest as the machine sees it, the name every message uses (dest is where it is on
    this host, and the copy is made in a private directory beside it)."""
    source = source_root / resolve_inside(source_root, path).lstrip("/")
    if not os.path.lexists(source):
        raise UsageError(f"{path} does not exist in the old root {source_root.name}")
    if os.path.lexists(dest) and not force:
        raise Refused(f"{shown} exists; give --force to replace it, or --to another place")
    if not dest.parent.is_dir():
        raise UsageError(f"{os.path.dirname(shown)} does not exist in the machine")
    staging = staging_dir(dest)
    try:
        staged = staging / dest.name
        try:
            copy_all(source, staged)
        except CommandFailed as exc:
            # cp names the host's paths, the staging directory among them: say only why.
            why = exc.stderr.strip().splitlines()[-1].rsplit(": ", 1)[-1] if exc.stderr else ""
            raise PantherError(
                f"cannot copy {path} from {source_root.name} to {shown}: {why or 'cp failed'}",
                exit_code=exc.exit_code,
            ) from None
        if os.path.lexists(dest):
            # Swapped in one step; what it replaces ends up in staging and goes with it.
            btrfs.renameat2(staged, dest, btrfs.RENAME_EXCHANGE)
        else:
            btrfs.renameat2(staged, dest, btrfs.RENAME_NOREPLACE)
    finally:
        remove_path(staging)
    return dest


def mount_old_root(machine: Machine, name: str, target: Path, *, wait: bool = True) -> OldRoot:
    """Mount the old root called name read-only at target (`roots mount`), under the machine's
    lock, so gc cannot delete it between the look and the mount.

    Mounted by subvolume id, never by name: a name read from the disk could carry mount
    options of its own (`x,subvol=persist,rw`). What the kernel then shows mounted at target
    is checked to be that subvolume, read-only; anything else is unmounted and refused.
    """
    if not target.is_dir():
        raise UsageError(f"{target} is not a directory")
    if mounttable.mount_at(target) is not None:
        raise Refused(f"something is already mounted at {target}")
    with machine.lock(wait=wait):
        with machine.top_level(readonly=True) as top:
            root = OldRoots(top, machine.manifest.storage).get(name)
        with machine.device() as device:
            mounts.mount(device, target, ["ro", f"subvolid={root.info.id}"], fstype="btrfs")
        entry = mounttable.mount_at(target)
        if (
            entry is None
            or entry.option("subvolid") != str(root.info.id)
            or "ro" not in entry.options
        ):
            if entry is not None:
                mounts.unmount(target)
            raise PantherError(f"{target} did not get subvolume {root.info.id} read-only")
    return root
