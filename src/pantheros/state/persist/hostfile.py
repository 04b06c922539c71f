"""The host's persistence file: the entries `persist add` records, as JSON the NixOS module reads.

The module (pantheros.impermanence.persistenceFile) declares them beside those written in Nix;
`declared` is the union of both, as the next boot will see it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pantheros.errors import UsageError
from pantheros.fsutil import write_json
from pantheros.machine import Machine
from pantheros.manifest.models import PersistenceEntry

VERSION = 1
# Each kind's key in an item, and the listing that holds its items (as in the NixOS options).
KEYS = {"directory": ("directory", "directories"), "file": ("file", "files")}


def host_file_for(machine: Machine, given: str | None) -> Path | None:
    if given:
        return Path(given)
    return machine.lab.persistence_path if machine.lab else None


def read(path: Path | None) -> dict[str, Any]:
    empty: dict[str, Any] = {"version": VERSION, "directories": [], "files": []}
    if path is None or not path.exists():
        return empty
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the persistence file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise UsageError(f"{path}: not a version {VERSION} persistence file")
    data = {**empty, **data}
    for key, listing in KEYS.values():
        items = data[listing]
        if not isinstance(items, list) or not all(_is_item(item, key) for item in items):
            raise UsageError(f'{path}: "{listing}" is not a list of {{"{key}": PATH, ...}} items')
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


def add_entry(host_file: Path, entry: PersistenceEntry) -> None:
    data = read(host_file)
    key, listing = KEYS[entry.kind]
    if all(item[key] != entry.path for item in data[listing]):
        data[listing].append(
            {key: entry.path, "user": entry.user, "group": entry.group, "mode": entry.mode}
        )
        write_json(host_file, data)


def remove_entry(host_file: Path, data: dict[str, Any], path: str) -> None:
    """Write data (as read before) without path's entry."""
    for key, listing in KEYS.values():
        data[listing] = [item for item in data[listing] if item.get(key) != path]
    write_json(host_file, data)


def declared(machine: Machine) -> list[PersistenceEntry]:
    """Entries the manifest declares, and those the persistence file adds."""
    found = {e.path: e for e in machine.manifest.persistence}
    for entry in entries(read(host_file_for(machine, None))):
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
