"""The manifest: the JSON contract between the NixOS modules and the panther toolkit.

`load()` validates a document against the schema shipped in `pantheros/data`, then checks what
a schema cannot say (one root, unique names and mount points, ...). Every rejection carries the
JSON path and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pantheros
from pantheros import files
from pantheros.errors import ManifestError, UsageError
from pantheros.manifest import verdicts
from pantheros.manifest.models import Manifest, Role, build, owning_mount
from pantheros.manifest.schema import child_path, first_violation, show

__all__ = [
    "HOST_MANIFEST",
    "Manifest",
    "bundled",
    "bundled_names",
    "entry_problem",
    "load",
    "load_document",
    "resolve",
]

HOST_MANIFEST = Path(pantheros.HOST_MANIFEST)
DATA = Path(__file__).resolve().parent.parent / "data"
SUPPORTED_VERSION = 1


@cache
def schema() -> dict[str, Any]:
    text = (DATA / "manifest.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def bundled_names() -> list[str]:
    return sorted(p.stem for p in (DATA / "manifests").glob("*.json"))


def bundled_path(name: str) -> Path:
    return DATA / "manifests" / f"{name}.json"


def bundled(name: str) -> Manifest:
    """One of the example manifests shipped with panther: lab, workstation, server."""
    if name not in bundled_names():
        raise ManifestError(name, "$", f"no bundled manifest named {name!r}")
    return load(bundled_path(name))


def resolve(given: str | Path) -> Path:
    """The manifest a user names: a file, else (when there is no such file) a bundled one."""
    if not os.path.lexists(given) and str(given) in bundled_names():
        return bundled_path(str(given))
    return Path(given)


def load(given: str | Path, *, beneath: Path | None = None) -> Manifest:
    """The manifest in a file, or the bundled one of that name when there is no such file;
    read as every file panther reads is (pantheros.files: a regular file, bounded; beneath: a
    lab's own, reached without a symlink)."""
    path = resolve(given)
    source = str(path)
    try:
        data = files.read_bytes(path, beneath=beneath, what="the manifest")
    except files.Unreadable as exc:
        raise ManifestError(source, "$", exc.reason) from None
    if data is None:
        names = ", ".join(bundled_names())
        raise UsageError(f"{source}: no such manifest file (nor a bundled one: {names})")
    return loads(data, source)


def loads(text: str | bytes, source: str = "<manifest>") -> Manifest:
    """A manifest from its JSON text (source names it in errors)."""
    try:
        doc = files.parse_json(text)
    except ValueError as exc:  # deep nesting, a huge integer, NaN, Infinity, not UTF-8
        raise ManifestError(source, "$", str(exc)) from None
    return load_document(doc, source)


def load_document(doc: Any, source: str = "<manifest>") -> Manifest:
    if isinstance(doc, dict) and "version" in doc and doc["version"] != SUPPORTED_VERSION:
        raise ManifestError(
            source,
            "$.version",
            f"unsupported manifest version {show(doc['version'])} (this panther reads version "
            f"{SUPPORTED_VERSION})",
        )
    if not verdicts.passed(doc, schema()):
        violation = first_violation(doc, schema())
        if violation is not None:
            raise ManifestError(source, violation.path, violation.reason)
        verdicts.record(doc, schema())
    _check_text(doc, "$", source)
    _check_semantics(doc, source)
    return build(doc, source)


def entry_problem(entry: Any, path: str, *, path_key: str = "path") -> str | None:
    """Why entry is not a persistence entry as the manifest's schema has it (path, kind,
    user, group, mode: a normalised absolute path, a mode of 0 to 07777), or None.
    path_key: what the entry's path is called where it came from (`directory`, `file`)."""
    violation = first_violation(entry, schema(), definition="persistenceEntry", base=path)
    if violation is None:
        return None
    field = violation.path.rsplit(".", 1)[-1]
    said = _ENTRY_RULES.get(field) if violation.path != path else None
    where = violation.path.removesuffix(".path") + f".{path_key}"
    if field != "path":
        where = violation.path
    if said is not None:
        return f"{where}: {show(entry[field])} is not {said}"
    return f"{where}: {violation.reason}"


# The rules of a persistence entry's fields in words (the schema's patterns say the same).
_ENTRY_RULES = {
    "path": "an absolute, normalised path (no empty, '.' or '..' part, no control character)",
    "mode": "a mode: 0 to 07777 in octal, such as 0755",
    "user": "a user name",
    "group": "a group name",
}


def _check_text(value: Any, path: str, source: str) -> None:
    """Every string must be real Unicode: a lone surrogate cannot become a path or a line.

    Runs after the schema, which bounds the document's depth.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ManifestError(
                source, path, "contains a lone surrogate (not Unicode text)"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, path, source)
            _check_text(item, child_path(path, key), source)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, child_path(path, index), source)


def _check_semantics(doc: dict[str, Any], source: str) -> None:
    """Rules that JSON Schema cannot express."""
    storage = doc["storage"]
    subvolumes = storage["subvolumes"]

    def fail(path: str, reason: str) -> None:
        raise ManifestError(source, path, reason)

    names: dict[str, int] = {}
    mountpoints: dict[str, int] = {}
    for index, sub in enumerate(subvolumes):
        where = f"$.storage.subvolumes[{index}]"
        if sub["name"] in names:
            fail(f"{where}.name", f"duplicate subvolume name {sub['name']!r}")
        if sub["mountpoint"] in mountpoints:
            fail(f"{where}.mountpoint", f"mount point {sub['mountpoint']!r} used twice")
        names[sub["name"]] = index
        mountpoints[sub["mountpoint"]] = index
    for role in (Role.ROOT, Role.PERSIST):
        found = [i for i, s in enumerate(subvolumes) if s["role"] == role.value]
        if len(found) != 1:
            fail("$.storage.subvolumes", f"needs exactly one subvolume with role {role.value!r}")
    root_index = next(i for i, s in enumerate(subvolumes) if s["role"] == "root")
    if subvolumes[root_index]["mountpoint"] != "/":
        fail(f"$.storage.subvolumes[{root_index}].mountpoint", "the root subvolume mounts at '/'")
    for key in ("blank_snapshot", "old_roots"):
        value = storage[key]
        for name in names:
            if _overlap(value, name):
                fail(f"$.storage.{key}", f"{value!r} overlaps subvolume {name!r}")
    if _overlap(storage["blank_snapshot"], storage["old_roots"]):
        # gc deletes what lies in the old-roots location; a blank inside it would be deleted.
        fail(
            "$.storage.blank_snapshot",
            f"{storage['blank_snapshot']!r} overlaps the old-roots location "
            f"{storage['old_roots']!r}",
        )
    esp = storage.get("esp")
    if esp is not None and esp["mountpoint"] in mountpoints:
        fail("$.storage.esp.mountpoint", f"{esp['mountpoint']!r} is also a subvolume mount point")
    seen: set[str] = set()
    for index, entry in enumerate(doc["persistence"]):
        path = entry["path"]
        where = f"$.persistence[{index}].path"
        if path in seen:
            fail(where, f"{path!r} declared twice")
        seen.add(path)
        if path == "/":
            fail(where, "cannot persist '/'")
        points = [s["mountpoint"] for s in subvolumes] + ([esp["mountpoint"]] if esp else [])
        owner = owning_mount(path, [s["mountpoint"] for s in subvolumes])
        if owner != "/":
            fail(where, f"{path!r} lies on the {owner!r} subvolume, which is not rolled back")
        inner = [m for m in points if m.startswith(path + "/")]
        if inner:
            fail(where, f"{path!r} holds the mount point {inner[0]!r}: persist what is beside it")

    _check_first_boot(doc, subvolumes, fail)


def _check_first_boot(
    doc: dict[str, Any], subvolumes: list[dict[str, Any]], fail: Callable[[str, str], None]
) -> None:
    """First-boot state is made on the persistent subvolume, below its mount point, once."""
    first_boot = doc.get("first_boot")
    if first_boot is None:
        return
    persist = next(s["mountpoint"] for s in subvolumes if s["role"] == Role.PERSIST.value)
    points = [s["mountpoint"] for s in subvolumes]
    seen: set[str] = set()
    for kind in ("directories", "files"):
        for index, entry in enumerate(first_boot[kind]):
            path = entry["path"]
            where = f"$.first_boot.{kind}[{index}].path"
            if path in seen:
                fail(where, f"{path!r} declared twice")
            seen.add(path)
            if path == persist or owning_mount(path, points) != persist:
                fail(where, f"{path!r} is not below {persist!r}, the persistent subvolume")


def _overlap(a: str, b: str) -> bool:
    """Whether one of two names relative to the top level is, or lies inside, the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
