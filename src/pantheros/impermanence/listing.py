"""The old roots as `panther roots list` shows them: age, size and retention's verdict on each."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import asdict, dataclass
from typing import Any

from pantheros.impermanence import oldroots, rollback
from pantheros.impermanence.oldroots import OldRoots
from pantheros.machine import Machine


@dataclass(frozen=True)
class RootRow:
    name: str
    id: int
    created: str  # ISO 8601, UTC
    age_seconds: int
    otransid: int
    generation: int
    size_bytes: int | None  # exclusive: what deleting the root frees
    total_bytes: int | None  # everything it refers to, shared or not
    size_from: str | None  # "quotas", "du" or None (unknown; see RootsTable.size_note)
    pinned: bool
    keep: bool
    reason: str


@dataclass(frozen=True)
class RootsTable:
    roots: list[RootRow]  # newest first
    strays: list[oldroots.Stray]
    notes: list[str]
    size_note: str | None  # why the sizes are unknown, when they are

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


NO_SIZE_NOTE = (
    "EXCL and TOTAL are empty: quotas are off or their numbers are not consistent "
    "(btrfs quota enable, btrfs quota rescan); --size measures each root with "
    "`btrfs filesystem du`, which reads every extent and takes time on large roots"
)


def roots_table(machine: Machine, *, measure: bool = False) -> RootsTable:
    """The old roots, newest first, with retention's verdict on each.

    Sizes come from the quota tree when quotas are on (free), else from `btrfs filesystem du`
    only when `measure` is set (D56).
    """
    with machine.top_level(readonly=True) as top:
        old = OldRoots(top, machine.manifest.storage)
        roots, strays = old.scan()
        plan, _ = rollback.gc(top, machine.manifest, dry_run=True) if roots else (None, [])
        measured = {
            r.name: oldroots.measured_sizes(r.path) for r in roots if measure and not r.sizes
        }
    reasons = {d.root.name: (d.keep, d.reason) for d in plan.decisions} if plan else {}
    now = time.time()
    rows = []
    for r in reversed(roots):
        keep, reason = reasons.get(r.name, (True, ""))
        total, exclusive, source = None, None, None
        if r.sizes:
            (total, exclusive), source = r.sizes, "quotas"
        elif r.name in measured:
            (total, exclusive), source = measured[r.name], "du"
        rows.append(
            RootRow(
                name=r.name,
                id=r.info.id,
                created=dt.datetime.fromtimestamp(r.info.otime, dt.UTC).isoformat(),
                age_seconds=round(now - r.info.otime),
                otransid=r.info.otransid,
                generation=r.info.generation,
                size_bytes=exclusive,
                total_bytes=total,
                size_from=source,
                pinned=r.pinned,
                keep=keep,
                reason=reason,
            )
        )
    unknown = any(row.size_from is None for row in rows)
    return RootsTable(
        roots=rows,
        strays=strays,
        notes=plan.notes if plan else [],
        size_note=NO_SIZE_NOTE if unknown else None,
    )
