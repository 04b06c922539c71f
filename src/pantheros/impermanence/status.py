"""`panther status`: is the root fresh this boot, changed since, can the blank be trusted, which
old roots exist, how did the rollback go.

Everything is read through the btrfs top level, so a lab that is down is answered too.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pantheros import btrfs
from pantheros.errors import PantherError
from pantheros.impermanence import blank
from pantheros.impermanence.oldroots import OldRoots
from pantheros.impermanence.rollback import boot_id, record_path
from pantheros.machine import Machine


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
    def read(cls, path: Path) -> RollbackRecord | None:
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(
                result=str(data["result"]),
                time=float(data["time"]),
                boot_id=str(data.get("boot_id", "")),
                policy=str(data.get("policy", "")),
                design=str(data.get("design", "")),
                root_id=data.get("root_id"),
                archived=list(data.get("archived", [])),
                pruned=list(data.get("pruned", [])),
                actions=list(data.get("actions", [])),
                notes=list(data.get("notes", [])),
                error=data.get("error"),
            )
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise PantherError(f"cannot read the rollback record {path}: {exc!r}") from None


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
        record = RollbackRecord.read(record_path(top, manifest))
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
