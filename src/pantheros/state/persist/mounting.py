"""The bind mounts of persisted paths over their live places, as impermanence makes them at boot."""

from __future__ import annotations

import os

from pantheros import files, mounttable, ui
from pantheros.errors import PantherError, Refused
from pantheros.fsutil import resolve_inside
from pantheros.machine import Machine
from pantheros.state.persist.failures import one_line
from pantheros.state.persist.hostfile import declared
from pantheros.state.persist.location import Where, where_of
from pantheros.storage import mounts

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def is_bind_mounted(where: Where) -> bool:
    if mounttable.mount_at(where.live) is None or not os.path.lexists(where.copy):
        return False
    a, b = os.stat(where.live), os.stat(where.copy)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def bind_mount(machine: Machine, where: Where) -> None:
    """Bind the persistent copy over the live path (recorded, for the lab, with its mounts).

    Both ends are opened without a symlink or a mount on the way and mounted by descriptor:
    a process on the machine that swaps either for a symlink after the checks (a user owning
    the copy's directory, say) cannot make the mount follow it out of the machine.
    """
    if is_bind_mounted(where):
        return
    if where.copy.is_symlink():
        raise Refused(f"{where.copy} is a symlink: a bind mount would follow it")
    if not os.path.lexists(where.live):
        is_dir = where.copy.is_dir()
        files.make_directories(where.live if is_dir else where.live.parent, beneath=machine.root)
        if not is_dir:
            with files.open_directory(where.live.parent, beneath=machine.root) as parent:
                os.close(os.open(where.live.name, _NEW_FILE, 0o644, dir_fd=parent))
    with mounts.host_namespace():
        # Opened in the namespace the mount is made in: a mount's source must be in it.
        source = files.open_beneath(where.copy, beneath=where.persist_root, what="the copy")
        try:
            target = files.open_beneath(where.live, beneath=machine.root, what="the live path")
            try:
                mounts.mount(source, target, ["bind"])
            finally:
                os.close(target)
        finally:
            os.close(source)
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
