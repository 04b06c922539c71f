"""`persist add`: copy, verify, place, record, mount, and only then empty the original.

The journal records each step reached; a run killed at any point is finished by the next one,
and until the original is emptied it is untouched.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pantheros import btrfs, ui
from pantheros.errors import Refused, UsageError
from pantheros.fsutil import empty_directory
from pantheros.machine import Machine
from pantheros.manifest.models import PersistenceEntry
from pantheros.state.persist import hostfile
from pantheros.state.persist.copying import copy_verified, make_parents, merge_missing, verify
from pantheros.state.persist.failures import VerifyFailed, one_line
from pantheros.state.persist.hostfile import HostFile
from pantheros.state.persist.journal import Journal
from pantheros.state.persist.location import Where, locate, refuse_unsafe_live
from pantheros.state.persist.mounting import bind_mount, is_bind_mounted
from pantheros.storage import mounts


def add(
    machine: Machine, path: str, host_file: HostFile | None, *, merge: bool
) -> PersistenceEntry:
    """Persist one path; finishes an interrupted earlier run for the same path."""
    mounts.require_root("panther persist add")
    with one_line(f"persist add {path}"):
        return _add(machine, locate(machine, path), host_file, merge=merge)


def _add(
    machine: Machine, where: Where, host_file: HostFile | None, *, merge: bool
) -> PersistenceEntry:
    persist = machine.manifest.persist
    assert persist is not None
    with machine.top_level() as top:
        machine.require_mounted(top, machine.manifest.storage.root)
        machine.require_mounted(top, persist)
        boot = str(btrfs.subvolume_info(machine.root).uuid)
        journal = Journal.load(where)
        if journal is not None and _stale(where, journal):
            ui.warn(f"{where.path}: the journal of an earlier add names no copy; starting again")
            journal.clear()
            journal = None
        if journal is None:
            journal = _start(machine, where, boot, merge=merge)
        if not journal.reached("placed"):
            _place(machine, where, journal)
        else:
            _catch_up(machine, where, journal, boot, merge=merge)
        entry = _entry_for(where.path, where.copy)
        if host_file is not None and not journal.reached("recorded"):
            hostfile.add_entry(host_file, entry)
            journal.advance("recorded")
        bind_mount(machine, where)
        journal.advance("mounted")
        if entry.kind == "directory":
            # Underneath the mount, through the top level: only the ephemeral original goes.
            # A file stays as its own mount point; the next boot erases it with the root.
            root = machine.manifest.storage.root.name
            empty_directory(top / root, where.path.lstrip("/"))
        journal.advance("emptied")
        journal.clear()
    if where.given != where.path:
        ui.info(f"{where.given} resolves to {where.path} inside {machine.name}: persisted that")
    return entry


def _stale(where: Where, journal: Journal) -> bool:
    """A journal past `placed` whose copy is gone (deleted by hand, or an old --purge)."""
    return (
        journal.reached("placed") and not os.path.lexists(where.copy) and not is_bind_mounted(where)
    )


def _start(machine: Machine, where: Where, boot: str, *, merge: bool) -> Journal:
    """Check a new add (every refusal comes before anything changes) and start its journal."""
    if where.path in hostfile.declared_paths(machine) and is_bind_mounted(where):
        raise UsageError(f"{where.path} is already persistent")
    if not os.path.lexists(where.live):
        raise UsageError(f"{where.path} does not exist")
    refuse_unsafe_live(machine, where)
    exists = os.path.lexists(where.copy)
    if exists and not merge:
        raise Refused(
            f"{where.copy} already exists: it is never overwritten. Mounting it would hide what is "
            f"now at {where.path}; give --merge to add the live files it lacks, or move one away"
        )
    if exists and where.live.is_dir() != (where.copy.is_dir() and not where.copy.is_symlink()):
        raise Refused(f"{where.copy} and {where.path} are not the same kind: nothing to merge")
    return Journal.start(where, boot, merge=exists)


def _place(machine: Machine, where: Where, journal: Journal) -> None:
    """Copy, verify and rename into place (or, for --merge, add what the copy lacks)."""
    if not os.path.lexists(where.live):
        raise UsageError(f"{where.path} does not exist")
    refuse_unsafe_live(machine, where)
    if journal.merge:
        if where.live.is_dir():
            merge_missing(where.live, where.copy)
        ui.warn(f"merged {where.path} into {where.copy}; existing files there were kept")
    else:
        make_parents(where)
        staged = copy_verified(where, journal, steps=True)
        btrfs.renameat2(staged, where.copy, btrfs.RENAME_NOREPLACE)
        journal.discard_staging()
    btrfs.sync(where.persist_root)
    journal.advance("placed")


def _catch_up(machine: Machine, where: Where, journal: Journal, boot: str, *, merge: bool) -> None:
    """A resumed add: make sure no change made since the killed run is thrown away.

    Until the copy is mounted, the live original is the truth: whatever changed is copied
    again. Once it was mounted (or the machine rebooted, or this is a merge), the copy is the
    truth and the live path is only merged into it.
    """
    journal.discard_staging()
    if is_bind_mounted(where):
        return
    if not os.path.lexists(where.live) or (where.live.is_dir() and not any(where.live.iterdir())):
        return
    refuse_unsafe_live(machine, where)
    copy_is_truth = journal.merge or journal.boot != boot or journal.reached("mounted")
    try:
        verify(where.live, where.copy)
        return
    except VerifyFailed as exc:
        difference = str(exc)
    if not copy_is_truth:
        ui.info(f"{where.path} changed since the interrupted add ({difference}): copying again")
        staged = copy_verified(where, journal, steps=False)
        btrfs.renameat2(staged, where.copy, btrfs.RENAME_EXCHANGE)
        journal.discard_staging()  # it now holds the outdated copy
        btrfs.sync(where.persist_root)
    elif merge or journal.merge:
        if where.live.is_dir():
            merge_missing(where.live, where.copy)
        ui.warn(f"merged {where.path} into {where.copy}; existing files there were kept")
    else:
        raise Refused(
            f"{where.path} differs from its persistent copy {where.copy} ({difference}) since "
            "an interrupted add; the copy is kept: give --merge to add the live files it lacks"
        )


def _entry_for(path: str, source: Path) -> PersistenceEntry:
    st = os.lstat(source)

    def name(lookup: Callable[[int], Any], number: int) -> str:
        try:
            return str(lookup(number)[0])
        except KeyError:
            return str(number)

    return PersistenceEntry(
        path=path,
        kind="directory" if stat.S_ISDIR(st.st_mode) else "file",
        user=name(pwd.getpwuid, st.st_uid),
        group=name(grp.getgrgid, st.st_gid),
        mode=f"{stat.S_IMODE(st.st_mode):04o}",
    )
