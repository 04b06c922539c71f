"""`panther rollback`, `roots`, `restore` and `status`: options, then what each prints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, ui
from pantheros.errors import ExitCode, Refused, UsageError
from pantheros.impermanence import oldroots, rollback, stage2, status
from pantheros.impermanence.bootstep import Outcome
from pantheros.impermanence.listing import roots_table
from pantheros.impermanence.oldroots import OldRoots
from pantheros.machine import Machine, host_lock, lab_is_down
from pantheros.storage import blockdev, mounts

# rollback


@dataclass(frozen=True)
class Rollback:
    manifest: str | None
    device: str | None
    top: str | None
    lab: str | None
    dry_run: bool
    gc: bool
    finish: bool
    report: str
    json: bool

    def __post_init__(self) -> None:
        if self.finish and (self.top or self.lab or self.device or self.dry_run or self.gc):
            raise UsageError("--finish reads this boot's report; it takes only --report and -m")

    @property
    def instead(self) -> str:
        """The options that name another machine, offered when this one is not PantherOS."""
        return "--manifest M" if self.finish else "--manifest M or --lab DIR"


def cmd_rollback(machine: Machine, opts: Rollback) -> int:
    if opts.finish:
        cmdline = Path("/proc/cmdline").read_text(encoding="utf-8")
        outcome, code = stage2.finish(machine, Path(opts.report), cmdline)
    else:
        with _rollback_top(machine, opts) as top:
            outcome, code = stage2.run_rollback(
                top, machine.manifest, dry_run=opts.dry_run, gc=opts.gc
            )
    show_outcome(outcome, json=opts.json)
    return code


@contextmanager
def _rollback_top(machine: Machine, opts: Rollback) -> Iterator[Path]:
    if opts.top:
        top = Path(opts.top)
        if not btrfs.is_subvolume(top) or btrfs.subvolume_info(top).id != btrfs.TOP_LEVEL_ID:
            raise UsageError(f"{top} is not the top level (subvolid=5) of a btrfs filesystem")
        yield top
        return
    if machine.lab is not None:
        if machine.lab.is_up() and not opts.dry_run:
            raise Refused(
                "the lab is up: `panther lab reboot` unmounts it, rolls back and mounts it again"
            )
        with machine.lock(), machine.top_level(readonly=opts.dry_run) as top:
            yield top
        return
    mounts.require_root("panther rollback")
    device = opts.device or stage2.default_device(machine.manifest)
    if not blockdev.is_block_device(device):
        raise UsageError(f"{device} is not a block device (give --device)")
    with host_lock(), mounts.top_level_mount(device, readonly=opts.dry_run) as top:
        yield top


def show_outcome(outcome: Outcome, *, json: bool) -> None:
    """The boot step's outcome (`rollback`, `lab reboot`): as JSON, or a line per fact."""
    if json:
        ui.emit_json(outcome.__dict__)
        return
    # Names from the disk (old roots) and the step's words: escaped, one line each.
    for action in outcome.actions:
        ui.result(f"  {ui.printable(action)}")
    for note in outcome.notes:
        ui.result(f"  note: {ui.printable(note)}")
    if outcome.pruned:
        ui.result(f"  pruned: {ui.printable(', '.join(outcome.pruned))}")
    kept = ui.printable(outcome.archived[-1]) if outcome.archived else ""
    words = {
        "fresh": "the root is fresh" + (f"; previous root kept as {kept}" if kept else ""),
        "already-fresh": "the root is already fresh: nothing to do",
        "would-roll-back": "dry run: nothing was changed",
        "dirty": f"the root was NOT rolled back: {ui.printable(str(outcome.error))}",
        "skipped": "the rollback was skipped at this boot",
    }
    ui.result(words[outcome.result])


# roots


def _mib(size: int | None) -> str:
    return f"{size / 1024**2:.1f}M" if size is not None else ""


@dataclass(frozen=True)
class RootsList:
    json: bool
    size: bool


def cmd_roots_list(machine: Machine, opts: RootsList) -> int:
    table = roots_table(machine, measure=opts.size)
    if opts.json:
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
        ui.result(f"note: {ui.printable(note)}")
    return ExitCode.OK


@dataclass(frozen=True)
class RootsPin:
    root: str
    json: bool
    no_wait: bool


def cmd_roots_pin(machine: Machine, opts: RootsPin) -> int:
    return _set_pinned(machine, opts, pin=True)


def cmd_roots_unpin(machine: Machine, opts: RootsPin) -> int:
    return _set_pinned(machine, opts, pin=False)


def _set_pinned(machine: Machine, opts: RootsPin, *, pin: bool) -> int:
    with machine.lock(wait=not opts.no_wait), machine.top_level() as top:
        changed = OldRoots(top, machine.manifest.storage).set_pinned(opts.root, pin)
    word = "pinned" if pin else "unpinned"
    if opts.json:
        ui.emit_json({"root": opts.root, "pinned": pin, "changed": changed})
        return ExitCode.OK
    ui.info(f"{opts.root} {word}" if changed else f"{opts.root} was already {word}")
    return ExitCode.OK


@dataclass(frozen=True)
class RootsGc:
    dry_run: bool
    json: bool
    no_wait: bool


def cmd_roots_gc(machine: Machine, opts: RootsGc) -> int:
    with machine.lock(wait=not opts.no_wait), machine.top_level(readonly=opts.dry_run) as top:
        plan, deleted = rollback.gc(top, machine.manifest, dry_run=opts.dry_run)
    if opts.json:
        ui.emit_json(
            {
                "dry_run": opts.dry_run,
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
        verb = "keep  " if d.keep else ("would delete" if opts.dry_run else "delete")
        ui.result(f"{verb} {ui.printable(d.root.name)}: {ui.printable(d.reason)}")
    for note in plan.notes:
        ui.result(f"note: {ui.printable(note)}")
    if not plan.decisions:
        ui.result("no old roots")
    return ExitCode.OK


@dataclass(frozen=True)
class RootsMount:
    root: str
    directory: str
    json: bool
    no_wait: bool


def cmd_roots_mount(machine: Machine, opts: RootsMount) -> int:
    if machine.lab is not None and machine.lab.loop() is None:
        # Its image would stay attached under the mount, with no record to take it down by.
        raise lab_is_down(machine.lab)
    from pantheros.impermanence import restore

    target = Path(opts.directory)
    root = restore.mount_old_root(machine, opts.root, target, wait=not opts.no_wait)
    if opts.json:
        ui.emit_json({"root": root.name, "mountpoint": str(target), "readonly": True})
        return ExitCode.OK
    ui.info(f"{root.name} is mounted read-only at {target} (umount {target} when done)")
    return ExitCode.OK


# restore


@dataclass(frozen=True)
class Restore:
    path: str
    source: str
    to: str | None
    force: bool
    json: bool
    no_wait: bool


def cmd_restore(machine: Machine, opts: Restore) -> int:
    from pantheros.impermanence import restore

    if not opts.path.startswith("/"):
        raise UsageError(f"give an absolute path as the old root saw it, not {opts.path!r}")
    with machine.lock(wait=not opts.no_wait), machine.top_level(readonly=True) as top:
        resolved, dest = restore.destination(machine, top, opts.to or opts.path)
        roots, _ = OldRoots(top, machine.manifest.storage).scan()
        root = oldroots.pick(roots, opts.source, time.time())
        restore.restore(root.path, opts.path, dest, force=opts.force, shown=resolved)
    if opts.json:
        ui.emit_json(
            {
                "path": opts.path,
                "from": root.name,
                "created": root.info.created.isoformat(),
                "to": resolved,
            }
        )
        return ExitCode.OK
    ui.info(f"restored {opts.path} from {root.name} to {resolved}")
    return ExitCode.OK


# status


@dataclass(frozen=True)
class Status:
    json: bool


def cmd_status(machine: Machine, opts: Status) -> int:
    report = status.collect(machine)
    # A blank that changed is a failure to see, not a detail: it seeds every new root.
    code = ExitCode.OK if report.blank.trusted else ExitCode.FAILURE
    if code != ExitCode.OK:
        ui.warn(f"the blank cannot be trusted: {report.blank.problem}")
    if opts.json:
        ui.emit_json(report.as_json())
        return code
    root = report.root
    paint = {"fresh": "green", "dirty": "red", "untrusted": "red"}.get(root.state, "yellow")
    ui.result(f"{report.machine} ({report.host})")
    ui.result(f"root       {ui.paint(root.state, paint)}: {ui.printable(root.why)}")
    since = _since_made(root)
    if since:
        ui.result(f"           {since}")
    if not report.blank.trusted:
        problem = ui.printable(report.blank.problem or "")
        ui.result(f"blank      {ui.paint('NOT TRUSTED', 'red')}: {problem}")
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
        ui.result(f"last run   {last.result} at {when} (policy {ui.printable(last.policy)})")
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
