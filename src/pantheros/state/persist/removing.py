"""`persist remove`: a persisted path becomes ephemeral again, its data back on the live root."""

from __future__ import annotations

import os
from pathlib import Path

from pantheros import btrfs, mounttable, ui
from pantheros.errors import Refused, UsageError
from pantheros.fsutil import copy_all, foreign_inside, remove_path, staging_dir
from pantheros.machine import Machine
from pantheros.state.persist import hostfile
from pantheros.state.persist.failures import one_line
from pantheros.state.persist.hostfile import HostFile
from pantheros.state.persist.journal import Journal
from pantheros.state.persist.location import Where, locate, refuse_unsafe_live
from pantheros.state.persist.mounting import is_bind_mounted
from pantheros.storage import mounts


def remove(machine: Machine, path: str, host_file: HostFile | None, *, purge: bool) -> None:
    mounts.require_root("panther persist remove")
    with one_line(f"persist remove {path}"):
        _remove(machine, locate(machine, path), host_file, purge=purge)


def _remove(machine: Machine, where: Where, host_file: HostFile | None, *, purge: bool) -> None:
    persist = machine.manifest.persist
    assert persist is not None
    in_manifest = any(e.path == where.path for e in machine.manifest.persistence)
    data = hostfile.read(host_file)
    listed = hostfile.listed(data, where.path)
    if not listed and in_manifest:
        raise UsageError(
            f"{where.path} is declared in the NixOS configuration: remove it there "
            "(pantheros.impermanence.directories/files)"
        )
    with machine.top_level() as top:
        machine.require_mounted(top, machine.manifest.storage.root)
        machine.require_mounted(top, persist)
        journal = Journal.load(where)
        has_copy = os.path.lexists(where.copy)
        if not listed and not has_copy and journal is None:
            raise UsageError(f"{where.path} is not persistent")
        mounted = is_bind_mounted(where)
        if not mounted and os.path.lexists(where.live):
            refuse_unsafe_live(machine, where)
        for tree in (where.live, where.copy):
            foreign = foreign_inside(tree) if os.path.lexists(tree) else None
            if foreign is not None:
                raise Refused(f"{tree} contains {foreign}, a mount point or another subvolume")
        if mounted:
            with mounts.host_namespace():
                mounts.unmount(where.live)
            # This command's private namespace holds its own copy of the mount.
            if mounttable.mount_at(where.live) is not None:
                mounts.unmount(where.live)
        if machine.lab is not None and (record := machine.lab.record()) is not None:
            # Also when it was not mounted: the lab must not wait for a mount it will not get.
            record.drop_bind(where.live)
        # Under the mount is the emptied original (or, for a file, its stale content): the
        # copy replaces it. A live path that was never covered holds data of its own: kept.
        live_is_ours = mounted or not os.path.lexists(where.live) or _empty_dir(where.live)
        if has_copy and live_is_ours:
            _copy_back(where)
        elif has_copy:
            ui.warn(f"{where.path} was not mounted from {where.copy}: its live data is kept as is")
        if listed and host_file is not None:
            hostfile.remove_entry(host_file, data, where.path)
        if journal is not None:
            journal.clear()
        if purge and has_copy:
            remove_path(where.copy)
            ui.info(f"deleted the persistent copy {where.copy}")
        elif has_copy:
            ui.info(
                f"{where.path} is ephemeral again; its data stays in {where.copy} until --purge"
            )


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _copy_back(where: Where) -> None:
    """Back to ephemeral: the data returns to the live root for the rest of this boot."""
    where.live.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(where.live)
    try:
        staged = staging / where.live.name
        copy_all(where.copy, staged)
        if os.path.lexists(where.live) and where.live.is_dir() and staged.is_dir():
            btrfs.renameat2(staged, where.live, btrfs.RENAME_EXCHANGE)
        else:
            if os.path.lexists(where.live):
                remove_path(where.live)
            os.rename(staged, where.live)
    finally:
        remove_path(staging)
