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
class StatusReport:
    machine: str
    host: str
    root: RootReport
    blank: BlankReport
    old_roots: OldRootsSummary
    # The rollback record as written (pantheros.impermanence.rollback.write_record), passed on
    # whole so that fields a newer boot step adds reach `--json` without a change here.
    last_rollback: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _record(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _root_state(
    machine: Machine, record: dict[str, Any] | None, distrust: str | None
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
    if record["result"] == "dirty":
        return (
            "dirty",
            f"the last rollback failed: {record.get('error')}; the previous root was booted",
        )
    if record.get("boot_id") == boot_id() or machine.lab is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["time"]))
        return "fresh", f"rolled back {when}"
    return "dirty", "no rollback ran this boot"


def collect(machine: Machine) -> StatusReport:
    manifest = machine.manifest
    with machine.top_level(readonly=True) as top:
        record = _record(record_path(top, manifest))
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
