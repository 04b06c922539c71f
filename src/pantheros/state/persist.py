"""`panther persist`: move live state into persistent storage without losing anything.

add PATH: copy (reflinks where possible, keeping owner, group, mode, timestamps, ACLs, xattrs
and hardlinks) to a staging name in the persistent subvolume, verify the copy against the
source, rename it into place, record the entry, bind-mount it over the live path, and only then
empty the ephemeral original (through the btrfs top level, underneath the mount). A journal in
<persist>/.pantheros/journal records the step reached, so a run killed at any point is finished
by the next one, and until the original is emptied it is untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import btrfs, process, ui
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.fsutil import remove_path, same_bytes, xattrs
from pantheros.machine import Machine
from pantheros.manifest.models import PersistenceEntry, mount_depth
from pantheros.storage import blockdev, mounts

STATE = ".pantheros"
KILL_AFTER_ENV = "PANTHER_PERSIST_KILL_AFTER"  # testing only: SIGKILL after the named step
STEPS = ("staged", "verified", "placed", "recorded", "mounted", "emptied")
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

    path: str  # /var/lib/foo
    live: Path  # the live path (a bind mount once persisted)
    copy: Path  # the persistent copy
    persist_root: Path

    @property
    def key(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:16]

    @property
    def state_dir(self) -> Path:
        return self.persist_root / STATE

    @property
    def journal(self) -> Path:
        return self.state_dir / "journal" / f"{self.key}.json"

    @property
    def staging(self) -> Path:
        return self.state_dir / "staging" / self.key


def locate(machine: Machine, path: str) -> Where:
    if not path.startswith("/"):
        raise UsageError(f"give an absolute path as the machine sees it, not {path!r}")
    path = os.path.normpath(path)
    st = machine.manifest.storage
    persist = machine.manifest.persist
    assert persist is not None
    mounts = [s.mountpoint for s in st.subvolumes] + ([st.esp.mountpoint] if st.esp else [])
    owner = max(
        (m for m in mounts if m == "/" or path == m or path.startswith(m + "/")), key=mount_depth
    )
    if path == "/" or owner != "/":
        raise UsageError(f"{path} is not on the root subvolume: it already survives reboots")
    persist_root = machine.host_path(persist.mountpoint)
    return Where(
        path=path,
        live=machine.host_path(path),
        copy=persist_root / path.lstrip("/"),
        persist_root=persist_root,
    )


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
    if not where.journal.exists():
        return None
    data: dict[str, Any] = json.loads(where.journal.read_text())
    return data


def _save_journal(where: Where, step: str, kind: str) -> None:
    where.journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = where.journal.with_name(where.journal.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"path": where.path, "step": step, "kind": kind}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, where.journal)
    if os.environ.get(KILL_AFTER_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _reached(journal: dict[str, Any] | None, step: str) -> bool:
    return journal is not None and STEPS.index(journal["step"]) >= STEPS.index(step)


def is_bind_mounted(where: Where) -> bool:
    if blockdev.mount_at(where.live) is None:
        return False
    a, b = os.stat(where.live), os.stat(where.copy)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def bind_mount(machine: Machine, where: Where) -> None:
    """Bind the persistent copy over the live path (recorded, for the lab, with its mounts)."""
    if is_bind_mounted(where):
        return
    if not os.path.lexists(where.live):
        if where.copy.is_dir():
            where.live.mkdir(parents=True)
        else:
            where.live.parent.mkdir(parents=True, exist_ok=True)
            where.live.touch()
    blockdev.mount(str(where.copy), where.live, ["bind"])
    if machine.lab is not None:
        state = machine.lab.state()
        if state is not None:
            state.mounts.append({"path": str(where.live), "what": f"bind:{where.path}"})
            state.save()


def _entry_for(path: str, source: Path) -> PersistenceEntry:
    st = os.lstat(source)
    import grp
    import pwd

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


def add(machine: Machine, path: str, host_file: Path | None, *, merge: bool) -> PersistenceEntry:
    """Persist one path; finishes an interrupted earlier run for the same path."""
    mounts.require_root("panther persist add")
    where = locate(machine, path)
    journal = _load_journal(where)
    if journal is None:
        _check_new(machine, where, merge=merge)
    if not _reached(journal, "placed"):
        if not os.path.lexists(where.live):
            raise UsageError(f"{where.path} does not exist")
        kind = "directory" if where.live.is_dir() else "file"
        if not os.path.lexists(where.copy):
            remove_path(where.staging)
            where.staging.parent.mkdir(parents=True, exist_ok=True)
            process.run(
                [
                    "cp",
                    "-a",
                    "--reflink=auto",
                    "--no-target-directory",
                    str(where.live),
                    str(where.staging),
                ],
                check=True,
            )
            _save_journal(where, "staged", kind)
            verify(where.live, where.staging)
            _save_journal(where, "verified", kind)
            _make_parents(where)
            os.rename(where.staging, where.copy)
            btrfs.sync(where.persist_root)
        _save_journal(where, "placed", kind)
        journal = _load_journal(where)
    assert journal is not None
    entry = _entry_for(where.path, where.copy)
    if host_file is not None and not _reached(journal, "recorded"):
        data = read_host_file(host_file)
        key, listing = (
            ("directory", "directories") if entry.kind == "directory" else ("file", "files")
        )
        if all(item[key] != entry.path for item in data[listing]):
            data[listing].append(
                {key: entry.path, "user": entry.user, "group": entry.group, "mode": entry.mode}
            )
            write_host_file(host_file, data)
        _save_journal(where, "recorded", entry.kind)
    bind_mount(machine, where)
    _save_journal(where, "mounted", entry.kind)
    _empty_original(machine, where)
    _save_journal(where, "emptied", entry.kind)
    where.journal.unlink()
    return entry


def _check_new(machine: Machine, where: Where, *, merge: bool) -> None:
    if where.path in declared_paths(machine) and is_bind_mounted(where):
        raise Refused(f"{where.path} is already persistent")
    if not os.path.lexists(where.copy):
        return
    if not merge:
        raise Refused(
            f"{where.copy} already exists: it is never overwritten. Mounting it would hide what is "
            f"now at {where.path}; give --merge to add the live files it lacks, or move one away"
        )
    # --merge: copy what the persistent copy lacks; never overwrite anything in it.
    if where.live.is_dir() and where.copy.is_dir():
        _merge_missing(where.live, where.copy)
    ui.warn(f"merged {where.path} into {where.copy}; existing files there were kept")
    where.journal.parent.mkdir(parents=True, exist_ok=True)
    _save_journal(where, "placed", "directory" if where.copy.is_dir() else "file")


def _merge_missing(source: Path, dest: Path) -> None:
    """Copy into dest what it lacks from source, entry by entry; nothing in dest is replaced."""
    for child in sorted(source.iterdir()):
        target = dest / child.name
        if not os.path.lexists(target):
            argv = ["cp", "-a", "--reflink=auto", "--no-target-directory", str(child), str(target)]
            process.run(argv, check=True)
        elif child.is_dir() and not child.is_symlink() and target.is_dir():
            _merge_missing(child, target)


def _empty_original(machine: Machine, where: Where) -> None:
    """Remove the ephemeral original, under the bind mount, through the top level."""
    st = machine.manifest.storage
    with machine.top_level() as top:
        hidden = top / st.root.name / where.path.lstrip("/")
        if hidden.is_dir() and not hidden.is_symlink():
            # The directory itself is the mount point: empty it, keep it.
            for child in list(hidden.iterdir()):
                remove_path(child)
        # A file stays as its own mount point; the next boot erases it with the root.


def remove(machine: Machine, path: str, host_file: Path | None, *, purge: bool) -> None:
    mounts.require_root("panther persist remove")
    where = locate(machine, path)
    in_manifest = any(e.path == where.path for e in machine.manifest.persistence)
    data = read_host_file(host_file)
    listed = [k for k in ("directories", "files") for i in data[k]
              if i.get("directory", i.get("file")) == where.path]  # fmt: skip
    if not listed and in_manifest:
        raise Refused(
            f"{where.path} is declared in the NixOS configuration: remove it there "
            "(pantheros.impermanence.directories/files)"
        )
    if not listed and not os.path.lexists(where.copy):
        raise UsageError(f"{where.path} is not persistent")
    if is_bind_mounted(where):
        blockdev.unmount(where.live)
        if machine.lab is not None and (state := machine.lab.state()) is not None:
            state.mounts = [m for m in state.mounts if m["path"] != str(where.live)]
            state.save()
    if os.path.lexists(where.copy):
        # Back to ephemeral: the data returns to the live root for the rest of this boot.
        staging = where.live.with_name(f".{where.live.name}.panther-restore")
        remove_path(staging)
        process.run(
            ["cp", "-a", "--reflink=auto", "--no-target-directory", str(where.copy), str(staging)],
            check=True,
        )
        remove_path(where.live)
        os.rename(staging, where.live)
    if listed and host_file is not None:
        for listing in ("directories", "files"):
            data[listing] = [
                i for i in data[listing] if i.get("directory", i.get("file")) != where.path
            ]
        write_host_file(host_file, data)
    if purge and os.path.lexists(where.copy):
        remove_path(where.copy)
        ui.info(f"deleted the persistent copy {where.copy}")
    elif os.path.lexists(where.copy):
        ui.info(f"{where.path} is ephemeral again; its data stays in {where.copy} until --purge")


# Reports


@dataclass(frozen=True)
class EntryState:
    entry: PersistenceEntry
    state: str  # ok | missing data | not mounted | data hidden under the mount
    where: Where


def states(machine: Machine) -> list[EntryState]:
    out = []
    st = machine.manifest.storage
    with machine.top_level(readonly=True) as top:
        for entry in declared(machine):
            where = locate(machine, entry.path)
            if not os.path.lexists(where.copy):
                state = "missing data"
            elif not is_bind_mounted(where):
                state = "not mounted"
            else:
                hidden = top / st.root.name / entry.path.lstrip("/")
                has_data = (
                    hidden.is_dir() and any(hidden.iterdir())
                    if hidden.is_dir()
                    else hidden.exists() and hidden.stat().st_size > 0
                )
                state = "data hidden under the mount" if has_data else "ok"
            out.append(EntryState(entry, state, where))
    return out


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
    """Bind-mount every declared entry that has a persistent copy, as impermanence does at boot."""
    count = 0
    for entry in declared(machine):
        where = locate(machine, entry.path)
        if os.path.lexists(where.copy) and not is_bind_mounted(where):
            bind_mount(machine, where)
            count += 1
    return count
