"""Command-line handlers for rollback, roots, restore and status."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, Refused, UsageError
from pantheros.impermanence import rollback
from pantheros.impermanence.oldroots import OldRoots
from pantheros.machine import Machine
from pantheros.storage import blockdev, mounts

# roots


def _age(seconds: float) -> str:
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def roots_table(machine: Machine) -> dict[str, Any]:
    with machine.top_level(readonly=True) as top:
        old = OldRoots(top, machine.manifest.storage)
        roots, strays = old.scan()
        plan, _ = rollback.gc(top, machine.manifest, dry_run=True) if roots else (None, [])
    reasons = {d.root.name: (d.keep, d.reason) for d in plan.decisions} if plan else {}
    now = time.time()
    rows = []
    for r in reversed(roots):
        keep, reason = reasons.get(r.name, (True, ""))
        rows.append(
            {
                "name": r.name,
                "id": r.info.id,
                "created": dt.datetime.fromtimestamp(r.info.otime, dt.UTC).isoformat(),
                "age_seconds": round(now - r.info.otime),
                "otransid": r.info.otransid,
                "generation": r.info.generation,
                "size_bytes": r.sizes[1] if r.sizes else None,
                "pinned": r.pinned,
                "keep": keep,
                "reason": reason,
            }
        )
    return {
        "roots": rows,
        "strays": [{"name": s.name, "why": s.why} for s in strays],
        "notes": plan.notes if plan else [],
    }


def cmd_roots_list(args: argparse.Namespace) -> int:
    table = roots_table(Machine.select(args.lab))
    if args.json:
        ui.emit_json(table)
        return ExitCode.OK
    if not table["roots"]:
        ui.result("no old roots yet")
    else:
        ui.result(f"{'NAME':32} {'CREATED (UTC)':20} {'AGE':>5} {'GEN':>8} {'SIZE':>9}  KEEP")
    for row in table["roots"]:
        size = f"{row['size_bytes'] / 1024**2:.1f}M" if row["size_bytes"] is not None else "-"
        verdict = ("pinned; " if row["pinned"] else "") + (
            row["reason"] if row["keep"] else f"gc would delete: {row['reason']}"
        )
        ui.result(
            f"{row['name']:32} {row['created'][:19]:20} {_age(row['age_seconds']):>5} "
            f"{row['generation']:>8} {size:>9}  {verdict}"
        )
    for stray in table["strays"]:
        ui.result(f"{stray['name']:32} {stray['why']}")
    for note in table["notes"]:
        ui.result(f"note: {note}")
    return ExitCode.OK


def cmd_roots_pin(args: argparse.Namespace) -> int:
    machine = Machine.select(args.lab)
    pin = args.roots_action == "pin"
    with machine.top_level() as top:
        changed = OldRoots(top, machine.manifest.storage).set_pinned(args.root, pin)
    word = "pinned" if pin else "unpinned"
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
        ui.result(f"{verb} {d.root.name}: {d.reason}")
    for note in plan.notes:
        ui.result(f"note: {note}")
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
    ui.info(f"{root.name} is mounted read-only at {target} (umount {target} when done)")
    return ExitCode.OK


def cmd_restore(args: argparse.Namespace) -> int:
    from pantheros.impermanence import restore

    machine = Machine.select(args.lab)
    if not args.path.startswith("/"):
        raise UsageError(f"give an absolute path as the old root saw it, not {args.path!r}")
    with machine.lock(wait=not args.no_wait), machine.top_level(readonly=True) as top:
        resolved, dest = restore.destination(machine, top, args.to or args.path)
        root = OldRoots(top, machine.manifest.storage).get(args.source)
        restore.restore(root.path, args.path, dest, force=args.force)
    ui.info(f"restored {args.path} from {root.name} to {resolved}")
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    from pantheros.impermanence import status

    report = status.collect(Machine.select(args.lab))
    # A blank that changed is a failure to see, not a detail: it seeds every new root.
    code = ExitCode.OK if report["blank"]["trusted"] else ExitCode.FAILURE
    if code != ExitCode.OK:
        ui.warn(f"the blank cannot be trusted: {report['blank']['problem']}")
    if args.json:
        ui.emit_json(report)
        return code
    root = report["root"]
    paint = {"fresh": "green", "dirty": "red", "untrusted": "red"}.get(root["state"], "yellow")
    ui.result(f"{report['machine']} ({report['host']})")
    ui.result(f"root       {ui.paint(root['state'], paint)}: {root['why']}")
    if not report["blank"]["trusted"]:
        ui.result(f"blank      {ui.paint('NOT TRUSTED', 'red')}: {report['blank']['problem']}")
    olds = report["old_roots"]
    ui.result(
        f"old roots  {olds['count']} ({olds['pinned']} pinned); newest {olds['newest'] or '-'}, "
        f"oldest {olds['oldest'] or '-'}"
    )
    if olds["strays"]:
        ui.result(f"strays     {', '.join(olds['strays'])} (not old roots; left alone)")
    last = report["last_rollback"]
    if last:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last["time"]))
        ui.result(f"last run   {last['result']} at {when} (policy {last['policy']})")
    return code
