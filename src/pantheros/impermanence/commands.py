"""Command-line handlers for rollback, roots, restore and status."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, Refused, UsageError
from pantheros.impermanence import oldroots, rollback, status
from pantheros.impermanence.oldroots import OldRoots
from pantheros.machine import Machine
from pantheros.storage import blockdev, mounts

# roots


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


def _mib(size: int | None) -> str:
    return f"{size / 1024**2:.1f}M" if size is not None else ""


def cmd_roots_list(args: argparse.Namespace) -> int:
    table = roots_table(Machine.select(args.lab), measure=args.size)
    if args.json:
        ui.emit_json(table.as_json())
        return ExitCode.OK
    if not table.roots:
        ui.result("no old roots yet")
    else:
        ui.result(
            f"{'NAME':32} {'CREATED (UTC)':20} {'AGE':>5} {'GEN':>8} {'EXCL':>9} {'TOTAL':>9}  KEEP"
        )
    for row in table.roots:
        verdict = ("pinned; " if row.pinned else "") + (
            row.reason if row.keep else f"gc would delete: {row.reason}"
        )
        age = oldroots.age_text(row.age_seconds)
        ui.result(
            f"{ui.printable(row.name):32} {row.created[:19]:20} {age:>5} "
            f"{row.generation:>8} {_mib(row.size_bytes):>9} {_mib(row.total_bytes):>9}  {verdict}"
        )
    for stray in table.strays:
        ui.result(f"{ui.printable(stray.name):32} {stray.why}")
    if table.roots and table.size_note:
        ui.result(f"note: {table.size_note}")
    for note in table.notes:
        ui.result(f"note: {note}")
    return ExitCode.OK


def cmd_roots_pin(args: argparse.Namespace) -> int:
    machine = Machine.select(args.lab)
    pin = args.roots_action == "pin"
    with machine.top_level() as top:
        changed = OldRoots(top, machine.manifest.storage).set_pinned(args.root, pin)
    word = "pinned" if pin else "unpinned"
    if args.json:
        ui.emit_json({"root": args.root, "pinned": pin, "changed": changed})
        return ExitCode.OK
    ui.info(f"{args.root} {word}" if changed else f"{args.root} was already {word}")
    return ExitCode.OK


def cmd_roots_gc(args: argparse.Namespace) -> int:
    machine = Machine.select(args.lab)
    with machine.lock(wait=not args.no_wait), machine.top_level(readonly=args.dry_run) as top:
        plan, deleted = rollback.gc(top, machine.manifest, dry_run=args.dry_run)
    if args.json:
        ui.emit_json(
            {
                "dry_run": args.dry_run,
                "decisions": [
                    {"name": d.root.name, "keep": d.keep, "reason": d.reason}
                    for d in plan.decisions
                ],
                "deleted": deleted,
                "notes": plan.notes,
            }
        )
        return ExitCode.OK
    for d in plan.decisions:
        verb = "keep  " if d.keep else ("would delete" if args.dry_run else "delete")
        ui.result(f"{verb} {ui.printable(d.root.name)}: {ui.printable(d.reason)}")
    for note in plan.notes:
        ui.result(f"note: {ui.printable(note)}")
    if not plan.decisions:
        ui.result("no old roots")
    return ExitCode.OK


def cmd_roots_mount(args: argparse.Namespace) -> int:
    machine = Machine.select(args.lab)
    target = Path(args.directory)
    if not target.is_dir():
        raise UsageError(f"{target} is not a directory")
    if blockdev.mount_at(target) is not None:
        raise Refused(f"something is already mounted at {target}")
    with machine.top_level(readonly=True) as top:
        root = OldRoots(top, machine.manifest.storage).get(args.root)
        subvol = f"{machine.manifest.storage.old_roots}/{root.name}"
    with machine.device() as device:
        mounts.mount(device, target, ["ro", f"subvol={subvol}"], fstype="btrfs")
    if args.json:
        ui.emit_json({"root": root.name, "mountpoint": str(target), "readonly": True})
        return ExitCode.OK
    ui.info(f"{root.name} is mounted read-only at {target} (umount {target} when done)")
    return ExitCode.OK


def cmd_restore(args: argparse.Namespace) -> int:
    from pantheros.impermanence import restore

    machine = Machine.select(args.lab)
    if not args.path.startswith("/"):
        raise UsageError(f"give an absolute path as the old root saw it, not {args.path!r}")
    with machine.lock(wait=not args.no_wait), machine.top_level(readonly=True) as top:
        resolved, dest = restore.destination(machine, top, args.to or args.path)
        roots, _ = OldRoots(top, machine.manifest.storage).scan()
        root = oldroots.pick(roots, args.source, time.time())
        restore.restore(root.path, args.path, dest, force=args.force)
    if args.json:
        ui.emit_json(
            {
                "path": args.path,
                "from": root.name,
                "created": root.info.created.isoformat(),
                "to": resolved,
            }
        )
        return ExitCode.OK
    ui.info(f"restored {args.path} from {root.name} to {resolved}")
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    report = status.collect(Machine.select(args.lab))
    # A blank that changed is a failure to see, not a detail: it seeds every new root.
    code = ExitCode.OK if report.blank.trusted else ExitCode.FAILURE
    if code != ExitCode.OK:
        ui.warn(f"the blank cannot be trusted: {report.blank.problem}")
    if args.json:
        ui.emit_json(report.as_json())
        return code
    root = report.root
    paint = {"fresh": "green", "dirty": "red", "untrusted": "red"}.get(root.state, "yellow")
    ui.result(f"{report.machine} ({report.host})")
    ui.result(f"root       {ui.paint(root.state, paint)}: {root.why}")
    since = _since_made(root)
    if since:
        ui.result(f"           {since}")
    if not report.blank.trusted:
        ui.result(f"blank      {ui.paint('NOT TRUSTED', 'red')}: {report.blank.problem}")
    olds = report.old_roots
    ui.result(
        f"old roots  {olds.count} ({olds.pinned} pinned); "
        f"newest {ui.printable(olds.newest or '-')}, oldest {ui.printable(olds.oldest or '-')}"
    )
    if olds.strays:
        shown = ", ".join(ui.printable(name) for name in olds.strays)
        ui.result(f"strays     {shown} (not old roots; left alone)")
    last = report.last_rollback
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last.time))
        ui.result(f"last run   {last.result} at {when} (policy {last.policy})")
    return code


def _since_made(root: status.RootReport) -> str:
    """Whether anything was written to the root since it was made (D23, D57); "" when that
    says nothing new (a dirty or untrusted root is not this boot's own anyway).

    Said as a fact, not a fault: a booted system writes to its root at once (activation fills
    /etc, services write /var), so on a running host it is changed within seconds.
    """
    written = (
        f"the root was written after it was made (btrfs transid {root.ctransid} > "
        f"{root.otransid}), as a running system does; "
        "`panther diff` shows what the next boot would erase"
    )
    if root.state == "fresh":
        if not root.modified_since_creation:
            return "unchanged since the rollback: nothing was written to the root since it was made"
        return f"changed since the rollback: {written}"
    if root.state in ("down", "unknown") and root.modified_since_creation:
        return f"changed since it was made: {written}"
    return ""
