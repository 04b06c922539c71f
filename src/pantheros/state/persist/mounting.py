"""The bind mounts of persisted paths over their live places, as impermanence makes them at boot."""

from __future__ import annotations

import os

from pantheros import mounttable, ui
from pantheros.errors import PantherError, Refused
from pantheros.fsutil import resolve_inside
from pantheros.machine import Machine
from pantheros.state.persist.failures import one_line
from pantheros.state.persist.hostfile import declared
from pantheros.state.persist.location import Where, where_of
from pantheros.storage import mounts


def is_bind_mounted(where: Where) -> bool:
    if mounttable.mount_at(where.live) is None or not os.path.lexists(where.copy):
        return False
    a, b = os.stat(where.live), os.stat(where.copy)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def bind_mount(machine: Machine, where: Where) -> None:
    """Bind the persistent copy over the live path (recorded, for the lab, with its mounts)."""
    if is_bind_mounted(where):
        return
    if where.copy.is_symlink():
        raise Refused(f"{where.copy} is a symlink: a bind mount would follow it")
    if not os.path.lexists(where.live):
        if where.copy.is_dir():
            where.live.mkdir(parents=True)
        else:
            where.live.parent.mkdir(parents=True, exist_ok=True)
            where.live.touch()
    with mounts.host_namespace():
        mounts.mount(str(where.copy), where.live, ["bind"])
    if machine.lab is not None and (record := machine.lab.record()) is not None:
        record.add_bind(where.live, where.path)


def apply(machine: Machine) -> int:
    """Bind-mount every declared entry that has a persistent copy, as impermanence does at boot.

    An entry that cannot be mounted safely (a symlink on its path, a symlinked copy) is left
    unmounted with a warning: one bad entry never stops the others, nor the boot.
    """
    count = 0
    for entry in declared(machine):
        where = where_of(machine, entry.path)
        try:
            with one_line("bind mount"):
                if not os.path.lexists(where.copy) or is_bind_mounted(where):
                    continue
                if resolve_inside(machine.root, entry.path) != entry.path:
                    raise Refused("a symlink on its path leads elsewhere")
                if resolve_inside(where.persist_root, entry.path) != entry.path:
                    raise Refused("a symlink on the way to its copy")
                bind_mount(machine, where)
                count += 1
        except PantherError as exc:
            ui.warn(f"{entry.path} is not mounted: {exc}")
    return count
