"""`panther persist`: move live state into persistent storage without losing anything.

add PATH: copy (reflinks where possible, keeping owner, group, mode, timestamps, ACLs, xattrs
and hardlinks) to a staging name in the persistent subvolume, verify the copy against the
source, rename it into place, record the entry, bind-mount it over the live path, and only then
empty the ephemeral original (through the btrfs top level, underneath the mount). A journal in
<persist>/.pantheros/journal records the step reached, so a run killed at any point is finished
by the next one, and until the original is emptied it is untouched.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import signal
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import btrfs, process, ui
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.fsutil import (
    empty_directory,
    foreign_inside,
    mount_point_of,
    open_beneath,
    remove_path,
    resolve_inside,
    same_bytes,
    xattrs,
)
from pantheros.machine import Machine
from pantheros.manifest.models import PersistenceEntry, Role
from pantheros.storage import blockdev, mounts

STATE = ".pantheros"
KILL_AFTER_ENV = "PANTHER_PERSIST_KILL_AFTER"  # testing only: SIGKILL after the named step
STEPS = ("started", "staged", "verified", "placed", "recorded", "mounted", "emptied")
HOST_FILE_VERSION = 1


class VerifyFailed(PantherError):
    pass


# The host's persistence data file (JSON that the NixOS module reads)


def host_file_for(machine: Machine, given: str | None) -> Path | None:
    if given:
        return Path(given)
    return machine.lab.directory / "persistence.json" if machine.lab else None


def read_host_file(path: Path | None) -> dict[str, Any]:
    empty: dict[str, Any] = {"version": HOST_FILE_VERSION, "directories": [], "files": []}
    if path is None or not path.exists():
        return empty
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the persistence file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != HOST_FILE_VERSION:
        raise UsageError(f"{path}: not a version {HOST_FILE_VERSION} persistence file")
    return {**empty, **data}


def write_host_file(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def file_entries(data: dict[str, Any]) -> list[PersistenceEntry]:
    out = []
    for kind, key in (("directory", "directory"), ("file", "file")):
        for item in data[f"{kind}s" if kind == "file" else "directories"]:
            out.append(
                PersistenceEntry(
                    path=item[key],
                    kind=kind,
                    user=item.get("user", "root"),
                    group=item.get("group", "root"),
                    mode=item.get("mode", "0755" if kind == "directory" else "0644"),
                )
            )
    return out


def declared(machine: Machine, host_file: Path | None = None) -> list[PersistenceEntry]:
    """Entries the manifest declares, and those the persistence file adds."""
    entries = {e.path: e for e in machine.manifest.persistence}
    for entry in file_entries(read_host_file(host_file or host_file_for(machine, None))):
        entries.setdefault(entry.path, entry)
    return sorted(entries.values(), key=lambda e: e.path)


def declared_paths(machine: Machine) -> list[str]:
    return [e.path for e in declared(machine)]


def nix_lines(entry: PersistenceEntry) -> str:
    key = "directory" if entry.kind == "directory" else "file"
    option = "directories" if entry.kind == "directory" else "files"
    return (
        f'pantheros.impermanence.{option} = [ {{ {key} = "{entry.path}"; user = "{entry.user}"; '
        f'group = "{entry.group}"; mode = "{entry.mode}"; }} ];'
    )


# Paths


@dataclass(frozen=True)
class Where:
    """One persisted path, as the machine sees it and where it is on this host."""

    path: str  # /var/lib/foo, resolved inside the machine
    live: Path  # the live path (a bind mount once persisted)
    copy: Path  # the persistent copy
    persist_root: Path
    given: str = ""  # the path as the user gave it, when a symlink made it differ

    @property
    def key(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:16]

    @property
    def state_dir(self) -> Path:
        return self.persist_root / STATE

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal" / f"{self.key}.json"


def _where(machine: Machine, path: str) -> Where:
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
    owner = machine.owner(resolved)
    if owner is None or owner.role is not Role.ROOT:
        where_is = f"the {owner.name} subvolume" if owner else "the ESP"
        via = f" ({given} resolves to it)" if resolved != given else ""
        raise UsageError(f"{resolved}{via} is on {where_is}: it already survives reboots")
    st = machine.manifest.storage
    inner = [s.mountpoint for s in st.subvolumes] + ([st.esp.mountpoint] if st.esp else [])
    for mountpoint in sorted(inner):
        if mountpoint.startswith(resolved.rstrip("/") + "/"):
            raise Refused(
                f"{resolved} contains {mountpoint}, where another subvolume is mounted: "
                "persist the paths beside it instead"
            )
    where = _where(machine, resolved)
    if resolve_inside(where.persist_root, resolved) != resolved or where.copy.is_symlink():
        raise Refused(f"{where.copy} has a symlink on its way in persistent storage: refused")
    return Where(where.path, where.live, where.copy, where.persist_root, given)


# Copy and verify


def _walk(base: Path) -> Iterator[tuple[str, os.stat_result]]:
    yield "", os.lstat(base)
    if not stat.S_ISDIR(os.lstat(base).st_mode):
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, base), os.lstat(full)


def verify(source: Path, copy: Path) -> None:
    """The copy equals the source: entries, types, owners, modes, times, xattrs, data, links."""
    theirs = dict(_walk(copy))
    inodes: dict[int, str] = {}
    for rel, st in _walk(source):
        other = theirs.pop(rel, None)
        where = rel or "."
        if other is None:
            raise VerifyFailed(f"{where} is missing from the copy")
        if (st.st_mode, st.st_uid, st.st_gid) != (other.st_mode, other.st_uid, other.st_gid):
            raise VerifyFailed(f"{where}: owner or mode differ in the copy")
        if not stat.S_ISDIR(st.st_mode) and st.st_mtime_ns != other.st_mtime_ns:
            raise VerifyFailed(f"{where}: modification time differs in the copy")
        src, dst = source / rel, copy / rel
        if xattrs(src) != xattrs(dst):
            raise VerifyFailed(f"{where}: xattrs or ACLs differ in the copy")
        if stat.S_ISLNK(st.st_mode) and os.readlink(src) != os.readlink(dst):
            raise VerifyFailed(f"{where}: symlink target differs in the copy")
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                # Hardlinked names in the source share one inode in the copy too.
                first = inodes.setdefault(st.st_ino, rel)
                if first != rel and os.lstat(copy / first).st_ino != other.st_ino:
                    raise VerifyFailed(f"{where}: hardlink to {first} not kept in the copy")
            if st.st_size != other.st_size or not same_bytes(src, dst):
                raise VerifyFailed(f"{where}: data differs in the copy")
    if theirs:
        raise VerifyFailed(f"the copy has entries the source lacks: {sorted(theirs)[:3]}")


def _make_parents(where: Where) -> None:
    """Create the copy's missing parent directories with the live parents' owner and mode."""
    missing = []
    parent = where.copy.parent
    live_parent = where.live.parent
    while not parent.exists():
        missing.append((parent, live_parent))
        parent, live_parent = parent.parent, live_parent.parent
    for made, model in reversed(missing):
        made.mkdir()
        st = os.lstat(model)
        os.chown(made, st.st_uid, st.st_gid)
        os.chmod(made, stat.S_IMODE(st.st_mode))


# The journal


def _load_journal(where: Where) -> dict[str, Any] | None:
    try:
        data = json.loads(where.journal.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the journal {where.journal}: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("path") != where.path
        or data.get("step") not in STEPS
    ):
        raise UsageError(f"{where.journal} is not a journal of {where.path}: move it away")
    return data


def _write_journal(where: Where, journal: dict[str, Any]) -> None:
    where.journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.journal.with_name(where.journal.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(journal, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, where.journal)


def _step(where: Where, journal: dict[str, Any], step: str) -> None:
    journal["step"] = step
    _write_journal(where, journal)
    if os.environ.get(KILL_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _reached(journal: dict[str, Any] | None, step: str) -> bool:
    return journal is not None and STEPS.index(journal["step"]) >= STEPS.index(step)


def _clear_journal(where: Where, journal: dict[str, Any] | None) -> None:
    if journal is not None:
        _discard_staging(where, journal)
    with contextlib.suppress(FileNotFoundError):
        where.journal.unlink()


# Staging: a private directory (mkdtemp) beside the destination, so the final step is a rename
# within one directory, and nobody can predict or pre-create the name.


def _staging_dir(dest: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.panther-", dir=dest.parent))


def _discard_staging(where: Where, journal: dict[str, Any]) -> None:
    """Remove the staging directory a killed run recorded (only one of ours, by its name)."""
    staging = journal.get("staging")
    if staging is None:
        return
    path = Path(staging)
    if path.parent != where.copy.parent or not path.name.startswith(f".{where.copy.name}.panther-"):
        raise UsageError(f"{where.journal} names a staging directory that is not ours: {path}")
    remove_path(path)
    journal["staging"] = None
    _write_journal(where, journal)


def _copy_verified(where: Where, journal: dict[str, Any], *, steps: bool) -> Path:
    """A verified copy of the live path in a new staging directory; returns the copy."""
    _discard_staging(where, journal)
    staging = _staging_dir(where.copy)
    journal["staging"] = str(staging)
    _write_journal(where, journal)
    try:
        staged = staging / where.copy.name
        process.run(
            ["cp", "-a", "--reflink=auto", "--no-target-directory", str(where.live), str(staged)],
            check=True,
        )
        if steps:
            _step(where, journal, "staged")
        verify(where.live, staged)
        if steps:
            _step(where, journal, "verified")
        return staged
    except BaseException:
        remove_path(staging)
        raise


def is_bind_mounted(where: Where) -> bool:
    if blockdev.mount_at(where.live) is None or not os.path.lexists(where.copy):
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


def _entry_for(path: str, source: Path) -> PersistenceEntry:
    st = os.lstat(source)

    def name(lookup: Any, number: int) -> str:
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


def _refuse_unsafe_live(machine: Machine, where: Where) -> None:
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


def add(machine: Machine, path: str, host_file: Path | None, *, merge: bool) -> PersistenceEntry:
    """Persist one path; finishes an interrupted earlier run for the same path."""
    mounts.require_root("panther persist add")
    where = locate(machine, path)
    persist = machine.manifest.persist
    assert persist is not None
    with machine.top_level() as top:
        machine.require_mounted(top, machine.manifest.storage.root)
        machine.require_mounted(top, persist)
        boot = str(btrfs.subvolume_info(machine.root).uuid)
        journal = _load_journal(where)
        if journal is not None and _stale(where, journal):
            ui.warn(f"{where.path}: the journal of an earlier add names no copy; starting again")
            _clear_journal(where, journal)
            journal = None
        if journal is None:
            journal = _start(machine, where, boot, merge=merge)
        if not _reached(journal, "placed"):
            _place(machine, where, journal)
        else:
            _catch_up(machine, where, journal, boot, merge=merge)
        entry = _entry_for(where.path, where.copy)
        if host_file is not None and not _reached(journal, "recorded"):
            _record(host_file, entry)
            _step(where, journal, "recorded")
        bind_mount(machine, where)
        _step(where, journal, "mounted")
        if entry.kind == "directory":
            # Underneath the mount, through the top level: only the ephemeral original goes.
            # A file stays as its own mount point; the next boot erases it with the root.
            root = machine.manifest.storage.root.name
            empty_directory(top / root, where.path.lstrip("/"))
        _step(where, journal, "emptied")
        _clear_journal(where, journal)
    if where.given != where.path:
        ui.info(f"{where.given} resolves to {where.path} inside {machine.name}: persisted that")
    return entry


def _stale(where: Where, journal: dict[str, Any]) -> bool:
    """A journal past `placed` whose copy is gone (deleted by hand, or an old --purge)."""
    return (
        _reached(journal, "placed")
        and not os.path.lexists(where.copy)
        and not is_bind_mounted(where)
    )


def _start(machine: Machine, where: Where, boot: str, *, merge: bool) -> dict[str, Any]:
    """Check a new add (every refusal comes before anything changes) and start its journal."""
    if where.path in declared_paths(machine) and is_bind_mounted(where):
        raise Refused(f"{where.path} is already persistent")
    if not os.path.lexists(where.live):
        raise UsageError(f"{where.path} does not exist")
    _refuse_unsafe_live(machine, where)
    exists = os.path.lexists(where.copy)
    if exists and not merge:
        raise Refused(
            f"{where.copy} already exists: it is never overwritten. Mounting it would hide what is "
            f"now at {where.path}; give --merge to add the live files it lacks, or move one away"
        )
    if exists and where.live.is_dir() != (where.copy.is_dir() and not where.copy.is_symlink()):
        raise Refused(f"{where.copy} and {where.path} are not the same kind: nothing to merge")
    journal = {"path": where.path, "step": "started", "boot": boot, "merge": exists,
               "staging": None}  # fmt: skip
    _step(where, journal, "started")
    return journal


def _place(machine: Machine, where: Where, journal: dict[str, Any]) -> None:
    """Copy, verify and rename into place (or, for --merge, add what the copy lacks)."""
    if not os.path.lexists(where.live):
        raise UsageError(f"{where.path} does not exist")
    _refuse_unsafe_live(machine, where)
    if journal["merge"]:
        if where.live.is_dir():
            _merge_missing(where.live, where.copy)
        ui.warn(f"merged {where.path} into {where.copy}; existing files there were kept")
    else:
        _make_parents(where)
        staged = _copy_verified(where, journal, steps=True)
        btrfs.renameat2(staged, where.copy, btrfs.RENAME_NOREPLACE)
        _discard_staging(where, journal)
    btrfs.sync(where.persist_root)
    _step(where, journal, "placed")


def _catch_up(
    machine: Machine, where: Where, journal: dict[str, Any], boot: str, *, merge: bool
) -> None:
    """A resumed add: make sure no change made since the killed run is thrown away.

    Until the copy is mounted, the live original is the truth: whatever changed is copied
    again. Once it was mounted (or the machine rebooted, or this is a merge), the copy is the
    truth and the live path is only merged into it.
    """
    _discard_staging(where, journal)
    if is_bind_mounted(where):
        return
    if not os.path.lexists(where.live) or (where.live.is_dir() and not any(where.live.iterdir())):
        return
    _refuse_unsafe_live(machine, where)
    copy_is_truth = journal["merge"] or journal.get("boot") != boot or _reached(journal, "mounted")
    try:
        verify(where.live, where.copy)
        return
    except VerifyFailed as exc:
        difference = str(exc)
    if not copy_is_truth:
        ui.info(f"{where.path} changed since the interrupted add ({difference}): copying again")
        staged = _copy_verified(where, journal, steps=False)
        btrfs.renameat2(staged, where.copy, btrfs.RENAME_EXCHANGE)
        _discard_staging(where, journal)  # it now holds the outdated copy
        btrfs.sync(where.persist_root)
    elif merge or journal["merge"]:
        if where.live.is_dir():
            _merge_missing(where.live, where.copy)
        ui.warn(f"merged {where.path} into {where.copy}; existing files there were kept")
    else:
        raise Refused(
            f"{where.path} differs from its persistent copy {where.copy} ({difference}) since "
            "an interrupted add; the copy is kept: give --merge to add the live files it lacks"
        )


def _record(host_file: Path, entry: PersistenceEntry) -> None:
    data = read_host_file(host_file)
    key, listing = ("directory", "directories") if entry.kind == "directory" else ("file", "files")
    if all(item[key] != entry.path for item in data[listing]):
        data[listing].append(
            {key: entry.path, "user": entry.user, "group": entry.group, "mode": entry.mode}
        )
        write_host_file(host_file, data)


def _merge_missing(source: Path, dest: Path) -> None:
    """Copy into dest what it lacks from source, entry by entry; nothing in dest is replaced."""
    for child in sorted(source.iterdir()):
        target = dest / child.name
        if not os.path.lexists(target):
            argv = ["cp", "-a", "--reflink=auto", "--no-target-directory", str(child), str(target)]
            process.run(argv, check=True)
        elif child.is_dir() and not child.is_symlink() and target.is_dir():
            _merge_missing(child, target)


def remove(machine: Machine, path: str, host_file: Path | None, *, purge: bool) -> None:
    mounts.require_root("panther persist remove")
    where = locate(machine, path)
    persist = machine.manifest.persist
    assert persist is not None
    in_manifest = any(e.path == where.path for e in machine.manifest.persistence)
    data = read_host_file(host_file)
    listed = [k for k in ("directories", "files") for i in data[k]
              if i.get("directory", i.get("file")) == where.path]  # fmt: skip
    if not listed and in_manifest:
        raise Refused(
            f"{where.path} is declared in the NixOS configuration: remove it there "
            "(pantheros.impermanence.directories/files)"
        )
    with machine.top_level() as top:
        machine.require_mounted(top, machine.manifest.storage.root)
        machine.require_mounted(top, persist)
        journal = _load_journal(where)
        has_copy = os.path.lexists(where.copy)
        if not listed and not has_copy and journal is None:
            raise UsageError(f"{where.path} is not persistent")
        mounted = is_bind_mounted(where)
        if not mounted and os.path.lexists(where.live):
            _refuse_unsafe_live(machine, where)
        for tree in (where.live, where.copy):
            foreign = foreign_inside(tree) if os.path.lexists(tree) else None
            if foreign is not None:
                raise Refused(f"{tree} contains {foreign}, a mount point or another subvolume")
        if mounted:
            with mounts.host_namespace():
                mounts.unmount(where.live)
            # This command's private namespace holds its own copy of the mount.
            if blockdev.mount_at(where.live) is not None:
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
            for listing in ("directories", "files"):
                data[listing] = [
                    i for i in data[listing] if i.get("directory", i.get("file")) != where.path
                ]
            write_host_file(host_file, data)
        _clear_journal(where, journal)
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
    staging = _staging_dir(where.live)
    try:
        staged = staging / where.live.name
        process.run(
            ["cp", "-a", "--reflink=auto", "--no-target-directory", str(where.copy), str(staged)],
            check=True,
        )
        if os.path.lexists(where.live) and where.live.is_dir() and staged.is_dir():
            btrfs.renameat2(staged, where.live, btrfs.RENAME_EXCHANGE)
        else:
            if os.path.lexists(where.live):
                remove_path(where.live)
            os.rename(staged, where.live)
    finally:
        remove_path(staging)


# Reports


@dataclass(frozen=True)
class EntryState:
    entry: PersistenceEntry
    state: str  # ok | missing data | not mounted | data hidden under the mount | machine down
    where: Where


def states(machine: Machine) -> list[EntryState]:
    out = []
    st = machine.manifest.storage
    persist = machine.manifest.persist
    assert persist is not None
    with machine.top_level(readonly=True) as top:
        up = machine.is_mounted(top, st.root) and machine.is_mounted(top, persist)
        for entry in declared(machine):
            where = _where(machine, entry.path)
            out.append(EntryState(entry, _state(top, machine, where, up=up), where))
    return out


def _state(top: Path, machine: Machine, where: Where, *, up: bool) -> str:
    persist = machine.manifest.persist
    assert persist is not None
    rel = where.path.lstrip("/")
    if not up:
        return "machine down" if os.path.lexists(top / persist.name / rel) else "missing data"
    if resolve_inside(machine.root, where.path) != where.path or where.copy.is_symlink():
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
            if machine_path == "/" and child.name == STATE:
                continue
            if any(path == w or path.startswith(w + "/") for w in wanted):
                continue
            if any(w.startswith(path + "/") for w in wanted) and child.is_dir():
                visit(child, path)
                continue
            found.append(path)

    if base.is_dir():
        visit(base, "/")
    return found


def apply(machine: Machine) -> int:
    """Bind-mount every declared entry that has a persistent copy, as impermanence does at boot.

    An entry that cannot be mounted safely (a symlink on its path, a symlinked copy) is left
    unmounted with a warning: one bad entry never stops the others, nor the boot.
    """
    count = 0
    for entry in declared(machine):
        where = _where(machine, entry.path)
        try:
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
