"""Where a persisted path is: inside the machine, on this host, and in persistent storage.

Every refusal about the path itself (outside the machine, on another subvolume, a symlink, a
mount inside it) comes from here, before anything changes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from pantheros.errors import Refused, UsageError
from pantheros.fsutil import foreign_inside, mount_point_of, resolve_inside
from pantheros.machine import Machine
from pantheros.manifest.models import RECORD_DIR, Role


@dataclass(frozen=True)
class Where:
    """One persisted path, as the machine sees it and where it is on this host."""

    path: str  # /var/lib/foo, resolved inside the machine
    live: Path  # the live path (a bind mount once persisted)
    copy: Path  # the persistent copy
    persist_root: Path
    given: str = ""  # the path as the user gave it, when a symlink made it differ

    @property
    def journal_file(self) -> Path:
        """Where the journal of an add of this path is kept, among panther's own records."""
        key = hashlib.sha256(self.path.encode()).hexdigest()[:16]
        return self.persist_root / RECORD_DIR / "journal" / f"{key}.json"


def where_of(machine: Machine, path: str) -> Where:
    """Where a path already resolved inside the machine is, live and in persistent storage."""
    persist = machine.manifest.persist
    assert persist is not None
    persist_root = machine.host_path(persist.mountpoint)
    return Where(
        path=path,
        live=machine.host_path(path),
        copy=persist_root / path.lstrip("/"),
        persist_root=persist_root,
    )


def check_text(path: str) -> None:
    """A path is recorded as text in the NixOS configuration: UTF-8, no control characters."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(
            f"{path!r} is not valid UTF-8: it cannot be declared in the NixOS configuration"
        ) from None
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise UsageError(f"{path!r} contains a control character (a newline?): refused")


def locate(machine: Machine, path: str) -> Where:
    """The path to persist, resolved inside the machine, or a refusal that changes nothing.

    A symlink among the parents is followed inside the machine (chroot-style) and the
    resolved path is what is persisted and recorded; one that leads out of the machine, or
    onto another subvolume, is refused.
    """
    if not path.startswith("/"):
        raise UsageError(f"give an absolute path as the machine sees it, not {path!r}")
    check_text(path)
    given = "/" + os.path.normpath(path).lstrip("/")
    if given == "/":
        raise UsageError("/ is the whole root: persist the paths under it that must survive")
    resolved = resolve_inside(machine.root, given)
    check_text(resolved)
    owner = machine.manifest.storage.owner(resolved)
    if owner is None or owner.role is not Role.ROOT:
        where_is = f"the {owner.name} subvolume" if owner else "the ESP"
        via = f" ({given} resolves to it)" if resolved != given else ""
        raise UsageError(f"{resolved}{via} is on {where_is}: it already survives reboots")
    for mountpoint in sorted(machine.manifest.storage.mount_points()):
        if mountpoint.startswith(resolved.rstrip("/") + "/"):
            # By the layout, whatever is on the disk now: bad input, as for a path on /persist.
            raise UsageError(
                f"{resolved} contains {mountpoint}, where another subvolume is mounted: "
                "persist the paths beside it instead"
            )
    where = where_of(machine, resolved)
    if resolve_inside(where.persist_root, resolved) != resolved or where.copy.is_symlink():
        raise Refused(f"{where.copy} has a symlink on its way in persistent storage: refused")
    return Where(where.path, where.live, where.copy, where.persist_root, given)


def refuse_unsafe_live(machine: Machine, where: Where) -> None:
    """What can never be moved: a symlink, a mount point, a tree holding another mount, and
    anything that is not on the root subvolume's own mount (the original is emptied there)."""
    if where.live.is_symlink():
        raise Refused(
            f"{where.path} is a symlink (to {os.readlink(where.live)}): persist what it points "
            "to, not the link"
        )
    holder = mount_point_of(where.live)
    if holder != os.path.realpath(machine.root):
        raise Refused(f"{where.path} is on the mount at {holder}, not on the root subvolume")
    if os.lstat(where.live).st_dev != os.stat(machine.root).st_dev:
        raise Refused(f"{where.path} is on another subvolume or filesystem than the root")
    foreign = foreign_inside(where.live)
    if foreign is not None:
        raise Refused(
            f"{where.path} contains {foreign}, a mount point or another subvolume: "
            "persist the paths beside it instead"
        )
