"""The host's persistence file: the entries `persist add` records, as JSON the NixOS module reads.

The module (pantheros.impermanence.persistenceFile) declares them beside those written in Nix;
`declared` is the union of both, as the next boot will see it. Each entry is held to the rules
the manifest's own persistence entries follow (its schema), so what is read is what the NixOS
module can declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import manifest as manifests
from pantheros.errors import UsageError
from pantheros.files import BadRecord, read_json, write_json
from pantheros.machine import Machine
from pantheros.manifest.models import PersistenceEntry

VERSION = 1
# Each kind's key in an item, and the listing that holds its items (as in the NixOS options).
KEYS = {"directory": ("directory", "directories"), "file": ("file", "files")}


@dataclass(frozen=True)
class HostFile:
    """Where the entries are recorded. beneath: the lab's directory, from which the lab's own
    file is reached without a symlink; None for a file the user named (`--host-file`)."""

    path: Path
    beneath: Path | None

    def __str__(self) -> str:
        return str(self.path)


def host_file_for(machine: Machine, given: str | None) -> HostFile | None:
    if given:
        return HostFile(Path(given), None)
    if machine.lab is None:
        return None
    return HostFile(machine.lab.persistence_path, machine.lab.directory)


def read(host_file: HostFile | None) -> dict[str, Any]:
    empty: dict[str, Any] = {"version": VERSION, "directories": [], "files": []}
    if host_file is None:
        return empty
    path = host_file.path
    data = read_json(path, beneath=host_file.beneath, what="the persistence file")
    if data is None:
        return empty
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise UsageError(f"{path}: not a version {VERSION} persistence file")
    data = {**empty, **data}
    for kind, (key, listing) in KEYS.items():
        items = data[listing]
        if not isinstance(items, list) or not all(_is_item(item, key) for item in items):
            raise UsageError(f'{path}: "{listing}" is not a list of {{"{key}": PATH, ...}} items')
        for index, item in enumerate(items):
            entry = {"path": item[key], "kind": kind} | {k: v for k, v in item.items() if k != key}
            problem = manifests.entry_problem(entry, f"$.{listing}[{index}]", path_key=key)
            if problem is not None:
                raise BadRecord(f"the persistence file {path} is not valid: {problem}")
    return data


def _is_item(item: object, key: str) -> bool:
    return (
        isinstance(item, dict)
        and isinstance(item.get(key), str)
        and all(isinstance(item.get(k, ""), str) for k in ("user", "group", "mode"))
    )


def entries(data: dict[str, Any]) -> list[PersistenceEntry]:
    return [
        PersistenceEntry.with_defaults(item[key], kind, item)
        for kind, (key, listing) in KEYS.items()
        for item in data[listing]
    ]


def listed(data: dict[str, Any], path: str) -> bool:
    return any(item.get(key) == path for key, listing in KEYS.values() for item in data[listing])


def add_entry(host_file: HostFile, entry: PersistenceEntry) -> None:
    data = read(host_file)
    key, listing = KEYS[entry.kind]
    if all(item[key] != entry.path for item in data[listing]):
        data[listing].append(
            {key: entry.path, "user": entry.user, "group": entry.group, "mode": entry.mode}
        )
        write_json(host_file.path, data, beneath=host_file.beneath)


def remove_entry(host_file: HostFile, data: dict[str, Any], path: str) -> None:
    """Write data (as read before) without path's entry."""
    for key, listing in KEYS.values():
        data[listing] = [item for item in data[listing] if item.get(key) != path]
    write_json(host_file.path, data, beneath=host_file.beneath)


def declared(machine: Machine) -> list[PersistenceEntry]:
    """Entries the manifest declares, and those the persistence file adds (each held to the
    manifest's rules for this machine's layout: on the rolled-back root, no mount point in it)."""
    found = {e.path: e for e in machine.manifest.persistence}
    host_file = host_file_for(machine, None)
    for entry in entries(read(host_file)):
        problem = machine.manifest.storage.not_persistable(entry.path)
        if problem is not None:
            raise BadRecord(
                f"the persistence file {host_file} is not valid: {entry.path} {problem}"
            )
        found.setdefault(entry.path, entry)
    return sorted(found.values(), key=lambda e: e.path)


def declared_paths(machine: Machine) -> list[str]:
    return [e.path for e in declared(machine)]


def nix_lines(entry: PersistenceEntry) -> str:
    key, option = KEYS[entry.kind]
    return (
        f'pantheros.impermanence.{option} = [ {{ {key} = "{entry.path}"; user = "{entry.user}"; '
        f'group = "{entry.group}"; mode = "{entry.mode}"; }} ];'
    )
