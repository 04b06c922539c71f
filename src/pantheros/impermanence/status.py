"""`panther status`: is the root fresh this boot, changed since, can the blank be trusted, which
old roots exist, how did the rollback go.

Everything is read through the btrfs top level, so a lab that is down is answered too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pantheros import btrfs, files
from pantheros.impermanence import blank
from pantheros.impermanence.oldroots import OldRoots
from pantheros.impermanence.rollback import boot_id, record_name, record_path
from pantheros.machine import Machine
from pantheros.manifest import Manifest


@dataclass(frozen=True)
class RootReport:
    state: str  # fresh, dirty, untrusted, unknown, down
    why: str
    subvolume_id: int
    created: str  # ISO 8601, UTC
    # ctransid > otransid (D23): something in the root was written after it was made.
    modified_since_creation: bool
    ctransid: int
    otransid: int


@dataclass(frozen=True)
class BlankReport:
    name: str
    trusted: bool
    problem: str | None


@dataclass(frozen=True)
class OldRootsSummary:
    count: int
    pinned: int
    newest: str | None
    oldest: str | None
    strays: list[str]


@dataclass(frozen=True)
class RollbackRecord:
    """The last rollback, as pantheros.impermanence.rollback.write_record keeps it."""

    result: str  # fresh | already-fresh | would-roll-back | dirty | skipped
    time: float
    boot_id: str
    policy: str
    design: str
    root_id: int | None
    archived: list[str]
    pruned: list[str]
    actions: list[str]
    notes: list[str]
    error: str | None

    @classmethod
    def read(cls, top: Path, manifest: Manifest) -> RollbackRecord | None:
        """The record under the top level (reached without a symlink, bounded, checked whole);
        None before the first rollback. A record that is not one is refused in one line."""
        path, name = record_path(top, manifest), record_name(manifest)
        data = files.read_json(path, beneath=top, what="the rollback record", known_as=name)
        if data is None:
            return None
        try:
            return cls.from_json(data)
        except (ValueError, TypeError) as exc:
            raise files.BadRecord(
                f"the rollback record {name} is not valid: {exc}; nothing in it is used"
            ) from None

    @classmethod
    def from_json(cls, data: Any) -> RollbackRecord:
        """The record in a parsed document; ValueError or TypeError naming what is wrong."""
        if not isinstance(data, dict):
            raise TypeError("not a JSON object")
        if "result" not in data or "time" not in data:
            raise ValueError("it has no result or no time")
        if data["result"] not in RESULTS:
            raise ValueError(f"result {data['result']!r} is not one of {', '.join(RESULTS)}")
        stamp = data["time"]
        if type(stamp) not in (int, float) or not 0 <= stamp <= LATEST_TIME:
            raise ValueError(f"time {stamp!r} is not a time panther wrote")
        root_id = data.get("root_id")
        if root_id is not None and (type(root_id) is not int or root_id < 0):
            raise ValueError(f"root_id {root_id!r} is not a subvolume id")
        error = data.get("error")
        if error is not None and not isinstance(error, str):
            raise TypeError(f"error {error!r} is not text")
        return cls(
            result=_text(data, "result"),
            time=float(stamp),
            boot_id=_text(data, "boot_id", ""),
            policy=_text(data, "policy", ""),
            design=_text(data, "design", ""),
            root_id=root_id,
            archived=_texts(data, "archived"),
            pruned=_texts(data, "pruned"),
            actions=_texts(data, "actions"),
            notes=_texts(data, "notes"),
            error=error,
        )


RESULTS = ("fresh", "already-fresh", "would-roll-back", "dirty", "skipped")
# The end of year 9999: a later time is no record panther wrote, and no clock can show it.
LATEST_TIME = 253402300799


def _text(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise TypeError(f"{key} {value!r} is not text")
    return value


def _texts(data: dict[str, Any], key: str) -> list[str]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise TypeError(f"{key} is not a list of text")
    return value


@dataclass(frozen=True)
class StatusReport:
    machine: str
    host: str
    root: RootReport
    blank: BlankReport
    old_roots: OldRootsSummary
    last_rollback: RollbackRecord | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _root_state(
    machine: Machine, record: RollbackRecord | None, distrust: str | None
) -> tuple[str, str]:
    if machine.lab is not None and not machine.lab.is_up():
        return (
            "down",
            f"the lab is down: nothing is mounted (panther lab up {machine.lab.directory})",
        )
    if distrust is not None:
        # A root made from a changed blank carries whatever was planted in it.
        return "untrusted", f"made from a blank that cannot be trusted: {distrust}"
    if record is None:
        return "unknown", "no rollback has been recorded on this machine"
    if record.result == "dirty":
        return (
            "dirty",
            f"the last rollback failed: {record.error}; the previous root was booted",
        )
    if record.boot_id == boot_id() or machine.lab is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.time))
        return "fresh", f"rolled back {when}"
    return "dirty", "no rollback ran this boot"


def collect(machine: Machine) -> StatusReport:
    manifest = machine.manifest
    with machine.top_level(readonly=True) as top:
        record = RollbackRecord.read(top, manifest)
        distrust = blank.problem(top, manifest)
        roots, strays = OldRoots(top, manifest.storage).scan()
        root_info = btrfs.subvolume_info(top / manifest.storage.root.name)
    state, why = _root_state(machine, record, distrust)
    return StatusReport(
        machine=machine.name,
        host=manifest.host,
        root=RootReport(
            state=state,
            why=why,
            subvolume_id=root_info.id,
            created=root_info.created.isoformat(),
            modified_since_creation=not blank.unchanged(root_info),
            ctransid=root_info.ctransid,
            otransid=root_info.otransid,
        ),
        blank=BlankReport(
            name=manifest.storage.blank_snapshot,
            trusted=distrust is None,
            problem=distrust,
        ),
        old_roots=OldRootsSummary(
            count=len(roots),
            pinned=sum(1 for r in roots if r.pinned),
            newest=roots[-1].name if roots else None,
            oldest=roots[0].name if roots else None,
            strays=[s.name for s in strays],
        ),
        last_rollback=record,
    )
