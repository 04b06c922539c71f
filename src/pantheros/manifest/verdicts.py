"""Manifests that passed the schema, remembered so that the next command loading the same one
need not import jsonschema again (40-50 ms, most of a small command's start; D159).

A verdict is an empty file in panther's cache (pantheros.native) named by a hash of everything
that decided it: the document as parsed (canonical JSON: the same objects give the same text),
the schema, this package's code around jsonschema (schema.py), and the jsonschema installed
(where its code is, and its file's identity). Only a pass is remembered; a document that fails
is checked every time, so its error is always jsonschema's. A verdict is trusted only where the
cache may hold programs panther runs as root (native.unsafe_part): anyone who could forge one
there could replace those too. What cannot be read or written is checked the ordinary way.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import cache
from typing import Any

from pantheros import native

KEEP = 256  # verdicts kept; past that, the oldest half goes


def passed(doc: Any, schema: dict[str, Any]) -> bool:
    """Whether this document passed this schema before (a verdict is on record)."""
    where = _directory()
    if where is None:
        return False
    try:
        return os.path.isfile(os.path.join(where, _key(doc, schema)))
    except (TypeError, ValueError):  # not JSON as parsed (NaN...): never remembered
        return False


def record(doc: Any, schema: dict[str, Any]) -> None:
    """Remember that the document passed the schema (best effort: not remembering is safe)."""
    where = _directory(create=True)
    if where is None:
        return
    try:
        name = os.path.join(where, _key(doc, schema))
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        _prune(where)
    except (OSError, TypeError, ValueError):
        return


def _directory(*, create: bool = False) -> str | None:
    where = os.path.join(native.cache_root(), "manifest-verdicts")
    try:
        if create:
            os.makedirs(where, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if not os.path.isdir(where) or native.unsafe_part(where) is not None:
        return None
    return where


def _key(doc: Any, schema: dict[str, Any]) -> str:
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(
        f"{_checker(json.dumps(schema, sort_keys=True))}\0{text}".encode()
    ).hexdigest()


@cache
def _checker(schema_text: str) -> str:
    """What besides the document decides a verdict: the schema, schema.py, jsonschema."""
    parts = [schema_text]
    ours = os.path.join(os.path.dirname(__file__), "schema.py")
    with open(ours, "rb") as f:
        parts.append(hashlib.sha256(f.read()).hexdigest())
    spec = importlib.util.find_spec("jsonschema")  # found, not imported
    origin = spec.origin if spec is not None and spec.origin else ""
    if origin:
        st = os.stat(origin)
        parts.append(f"{origin} {st.st_dev} {st.st_ino} {st.st_size} {st.st_mtime_ns}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _prune(where: str) -> None:
    names = os.listdir(where)
    if len(names) <= KEEP:
        return
    dated = []
    for name in names:
        try:
            dated.append((os.lstat(os.path.join(where, name)).st_mtime_ns, name))
        except OSError:
            continue
    for _, name in sorted(dated)[: len(dated) - KEEP // 2]:
        try:
            os.unlink(os.path.join(where, name))
        except OSError:
            continue
