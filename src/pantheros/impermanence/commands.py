"""Command-line handlers for rollback, roots, restore, status and lab reboot."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pantheros import btrfs, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, Refused, UsageError
from pantheros.impermanence import restore, rollback, status
from pantheros.impermanence.oldroots import OldRoots
from pantheros.lab import Lab
from pantheros.machine import Machine
from pantheros.manifest.models import FailPolicy
from pantheros.storage import blockdev, layout


def add_lab_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", metavar="DIR", help="act on the lab machine in DIR, not this host")


def default_device(manifest: manifests.Manifest) -> str:
    luks = manifest.storage.luks
    if luks:
        return f"/dev/mapper/{luks.name}"
    return f"/dev/disk/by-label/{manifest.storage.btrfs_label}"


@contextmanager
def _rollback_top(args: argparse.Namespace, manifest: manifests.Manifest) -> Iterator[Path]:
    if args.top:
        top = Path(args.top)
        if not btrfs.is_subvolume(top) or btrfs.subvolume_info(top).id != btrfs.TOP_LEVEL_ID:
            raise UsageError(f"{top} is not the top level (subvolid=5) of a btrfs filesystem")
        yield top
        return
    if args.lab:
        lab_machine = Machine.select(args.lab)
        if lab_machine.lab and lab_machine.lab.is_up() and not args.dry_run:
            raise Refused(
                "the lab is up: `panther lab reboot` unmounts it, rolls back and mounts it again"
            )
        with lab_machine.top_level(readonly=args.dry_run) as top:
            yield top
        return
    layout.require_root("panther rollback")
    device = args.device or default_device(manifest)
    if not blockdev.is_block_device(device):
        raise UsageError(f"{device} is not a block device (give --device)")
    with layout.top_level_mount(device, readonly=args.dry_run) as top:
        yield top


def run_rollback(
    top: Path, manifest: manifests.Manifest, *, dry_run: bool, gc: bool
) -> tuple[rollback.Outcome, int]:
    """Roll back and apply the fail policy; the exit code is the policy's verdict."""
    try:
        outcome = rollback.Rollback(top, manifest, dry_run=dry_run).run()
        code = ExitCode.OK
    except PantherError as exc:
        outcome = rollback.Outcome(result="dirty", error=str(exc))
        policy = manifest.impermanence.fail_policy
        code = ExitCode.FAILURE if policy is FailPolicy.FAIL_CLOSED else ExitCode.BOOT_DIRTY
        ui.warn(f"rollback failed: {exc}")
        ui.warn(
            "fail-closed: the boot stops here"
            if policy is FailPolicy.FAIL_CLOSED
            else "boot-dirty: booting the previous root; `panther status` will say so"
        )
    if gc and not dry_run and outcome.result != "dirty":
        plan, deleted = rollback.gc(top, manifest, dry_run=False)
        outcome.pruned += deleted
        outcome.notes += plan.notes
    if not dry_run:
        try:
            rollback.write_record(rollback.record_path(top, manifest), manifest, outcome)
        except OSError as exc:
            # Loud, but the root itself is what it is: the exit code stays the rollback's own.
            ui.warn(f"could not record the rollback result: {exc}")
    return outcome, code


def _print_outcome(outcome: rollback.Outcome) -> None:
    for action in outcome.actions:
        ui.result(f"  {action}")
    for note in outcome.notes:
        ui.result(f"  note: {note}")
    if outcome.pruned:
        ui.result(f"  pruned: {', '.join(outcome.pruned)}")
    words = {
        "fresh": "the root is fresh"
        + (f"; previous root kept as {outcome.archived[-1]}" if outcome.archived else ""),
        "already-fresh": "the root is already fresh: nothing to do",
        "would-roll-back": "dry run: nothing was changed",
        "dirty": f"the root was NOT rolled back: {outcome.error}",
    }
    ui.result(words[outcome.result])


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.lab:
        manifest = Machine.select(args.lab).manifest
    else:
        manifest = manifests.load(args.manifest or manifests.HOST_MANIFEST)
    with _rollback_top(args, manifest) as top:
        outcome, code = run_rollback(top, manifest, dry_run=args.dry_run, gc=args.gc)
    if args.json:
        ui.emit_json(outcome.__dict__)
    else:
        _print_outcome(outcome)
    return code


def cmd_lab_reboot(args: argparse.Namespace) -> int:
    from pantheros.lab import default_dir

    lab = Lab(Path(args.dir).resolve() if args.dir else default_dir())
    machine = Machine.select(str(lab.directory))
    state = lab.state()
    if state is None:
        raise UsageError(f"the lab at {lab.directory} is down (panther lab up)")
    ui.progress("shutting down: unmounting the lab tree")
    layout.unmount_tree(str(lab.mnt), keep_device=True)
    ui.progress("initrd: panther rollback (as the boot runs it)")
    with machine.top_level() as top:
        outcome, code = run_rollback(top, machine.manifest, dry_run=False, gc=False)
    _print_outcome(outcome)
    ui.progress("booting: mounting the lab tree")
    layout.mount_tree(machine.manifest, str(lab.manifest_path), str(lab.image), str(lab.mnt), None)
    if code == ExitCode.OK:
        ui.progress("after boot: panther roots gc")
        with machine.top_level() as top:
            plan, deleted = rollback.gc(top, machine.manifest, dry_run=False)
        for note in plan.notes:
            ui.result(f"  note: {note}")
        if deleted:
            ui.result(f"  pruned: {', '.join(deleted)}")
    return code


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
    with machine.top_level(readonly=args.dry_run) as top:
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
        blockdev.mount(device, target, ["ro", f"subvol={subvol}"], fstype="btrfs")
    ui.info(f"{root.name} is mounted read-only at {target} (umount {target} when done)")
    return ExitCode.OK


def cmd_restore(args: argparse.Namespace) -> int:
    machine = Machine.select(args.lab)
    dest = machine.host_path(args.to or args.path)
    with machine.top_level(readonly=True) as top:
        root = OldRoots(top, machine.manifest.storage).get(args.source)
        restore.restore(root.path, args.path, dest, force=args.force)
    ui.info(f"restored {args.path} from {root.name} to {args.to or args.path}")
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    report = status.collect(Machine.select(args.lab))
    if args.json:
        ui.emit_json(report)
        return ExitCode.OK
    root = report["root"]
    paint = {"fresh": "green", "dirty": "red"}.get(root["state"], "yellow")
    ui.result(f"{report['machine']} ({report['host']})")
    ui.result(f"root       {ui.paint(root['state'], paint)}: {root['why']}")
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
    return ExitCode.OK


def register(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rollback", help="archive the root and start a fresh one (the boot step)")
    p.add_argument("--manifest", "-m", metavar="M", help=f"default: {manifests.HOST_MANIFEST}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", metavar="DEV", help="btrfs device (default from the manifest)")
    where.add_argument("--top", metavar="DIR", help="an already mounted top level (subvolid=5)")
    add_lab_arg_to(where)
    p.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    p.add_argument("--gc", action="store_true", help="apply retention afterwards")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("roots", help="list, pin, prune and mount old roots")
    rsub = p.add_subparsers(dest="roots_action", metavar="ACTION", parser_class=parser_class)
    rsub.required = True
    q = rsub.add_parser("list", help="old roots with age, size and why each is kept")
    q.add_argument("--json", action="store_true")
    add_lab_arg(q)
    q.set_defaults(func=cmd_roots_list)
    for action, text in (("pin", "never prune ROOT"), ("unpin", "let retention decide again")):
        q = rsub.add_parser(action, help=text)
        q.add_argument("root", metavar="ROOT")
        add_lab_arg(q)
        q.set_defaults(func=cmd_roots_pin)
    q = rsub.add_parser("gc", help="apply the retention policy, explaining each decision")
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--json", action="store_true")
    add_lab_arg(q)
    q.set_defaults(func=cmd_roots_gc)
    q = rsub.add_parser("mount", help="mount ROOT read-only at DIR")
    q.add_argument("root", metavar="ROOT")
    q.add_argument("directory", metavar="DIR")
    add_lab_arg(q)
    q.set_defaults(func=cmd_roots_mount)

    p = sub.add_parser("restore", help="copy a file or tree back from an old root")
    p.add_argument("path", metavar="PATH", help="as the machine sees it, e.g. /etc/hosts")
    p.add_argument("--from", dest="source", required=True, metavar="ROOT", help="old root name")
    p.add_argument("--to", metavar="DEST", help="where to put it (default: PATH)")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    add_lab_arg(p)
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("status", help="root freshness, old roots, last rollback")
    p.add_argument("--json", action="store_true")
    add_lab_arg(p)
    p.set_defaults(func=cmd_status)


def add_lab_arg_to(group: Any) -> None:
    group.add_argument("--lab", metavar="DIR", help="act on the lab machine in DIR")
