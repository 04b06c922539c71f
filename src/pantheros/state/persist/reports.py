"""`persist list` and `persist stray`: what is declared persistent, and in what state; what is
in persistent storage that nothing declares."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pantheros.errors import Refused
from pantheros.fsutil import open_beneath, resolve_inside
from pantheros.machine import Machine
from pantheros.manifest.models import RECORD_DIR, PersistenceEntry
from pantheros.state.persist.failures import one_line
from pantheros.state.persist.hostfile import declared
from pantheros.state.persist.location import Where, where_of
from pantheros.state.persist.mounting import is_bind_mounted


@dataclass(frozen=True)
class EntryState:
    entry: PersistenceEntry
    state: str  # ok | missing data | not mounted | data hidden under the mount | machine down
    where: Where


def states(machine: Machine) -> list[EntryState]:
    with one_line("persist list"):
        return _states(machine)


def _states(machine: Machine) -> list[EntryState]:
    out = []
    st = machine.manifest.storage
    persist = machine.manifest.persist
    assert persist is not None
    with machine.top_level(readonly=True) as top:
        up = machine.is_mounted(top, st.root) and machine.is_mounted(top, persist)
        for entry in declared(machine):
            where = where_of(machine, entry.path)
            out.append(EntryState(entry, _state(top, machine, where, up=up), where))
    return out


def _state(top: Path, machine: Machine, where: Where, *, up: bool) -> str:
    persist = machine.manifest.persist
    assert persist is not None
    rel = where.path.lstrip("/")
    if not up:
        return "machine down" if os.path.lexists(top / persist.name / rel) else "missing data"
    if (
        resolve_inside(machine.root, where.path) != where.path
        or resolve_inside(where.persist_root, where.path) != where.path
        or where.copy.is_symlink()
    ):
        return "symlink on the path"
    if not os.path.lexists(where.copy):
        return "missing data"
    if not is_bind_mounted(where):
        return "not mounted"
    if where.copy.is_dir():
        # The original under the mount, seen through the top level; a file's stays until the
        # next boot by design, so only a directory can hide data.
        try:
            fd = open_beneath(top / machine.manifest.storage.root.name, rel)
        except (Refused, OSError):
            return "symlink on the path"
        try:
            if any(True for _ in os.scandir(fd)):
                return "data hidden under the mount"
        finally:
            os.close(fd)
    return "ok"


def strays(machine: Machine) -> list[str]:
    """Top-most paths in persistent storage that no entry declares (and that hold none)."""
    persist = machine.manifest.persist
    assert persist is not None
    base = machine.host_path(persist.mountpoint)
    wanted = [e.path for e in declared(machine)]
    found: list[str] = []

    def visit(directory: Path, machine_path: str) -> None:
        for child in sorted(directory.iterdir()):
            path = f"{machine_path}/{child.name}" if machine_path != "/" else f"/{child.name}"
            if machine_path == "/" and child.name == RECORD_DIR:
                continue
            if any(path == w or path.startswith(w + "/") for w in wanted):
                continue
            # Only a real directory is entered: a symlink is a stray itself, never followed
            # (an absolute one would list the host's directory as the machine's).
            real_dir = child.is_dir() and not child.is_symlink()
            if any(w.startswith(path + "/") for w in wanted) and real_dir:
                visit(child, path)
                continue
            found.append(path)

    if base.is_dir() and not base.is_symlink():
        with one_line("persist stray"):
            visit(base, "/")
    return found
