"""`panther rollback`: run the boot step, record its result, and the stage-2 `--finish`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pantheros import btrfs, fsutil, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, Refused, UsageError
from pantheros.impermanence import bootstep, rollback
from pantheros.impermanence.bootstep import Outcome
from pantheros.machine import Machine
from pantheros.manifest.models import FailPolicy
from pantheros.storage import blockdev, mounts

LOGIN_WARNING = "login-warning"


def default_device(manifest: manifests.Manifest) -> str:
    luks = manifest.storage.luks
    if luks:
        return luks.mapper_path
    return f"/dev/disk/by-label/{manifest.storage.btrfs_label}"


def _policy_code(manifest: manifests.Manifest) -> ExitCode:
    if manifest.impermanence.fail_policy is FailPolicy.FAIL_CLOSED:
        return ExitCode.FAILURE
    return ExitCode.BOOT_DIRTY


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
        with lab_machine.lock(), lab_machine.top_level(readonly=args.dry_run) as top:
            yield top
        return
    mounts.require_root("panther rollback")
    device = args.device or default_device(manifest)
    if not blockdev.is_block_device(device):
        raise UsageError(f"{device} is not a block device (give --device)")
    with mounts.top_level_mount(device, readonly=args.dry_run) as top:
        yield top


def run_rollback(
    top: Path, manifest: manifests.Manifest, *, dry_run: bool, gc: bool
) -> tuple[Outcome, int]:
    """Run the boot step on top, record the result; the exit code is the policy's verdict."""
    try:
        outcome, code = bootstep.run(manifest, top=top, dry_run=dry_run)
    except PantherError as exc:
        outcome, code = Outcome(result="dirty", error=str(exc)), _policy_code(manifest)
        ui.warn(f"rollback failed: {exc}")
    if gc and not dry_run and outcome.result != "dirty":
        plan, deleted = rollback.gc(top, manifest, dry_run=False)
        outcome.pruned += deleted
        outcome.notes += plan.notes
    if not dry_run:
        _record(top, manifest, outcome)
    return outcome, code


def _record(top: Path, manifest: manifests.Manifest, outcome: Outcome) -> None:
    try:
        rollback.write_record(rollback.record_path(top, manifest), manifest, outcome)
    except (OSError, PantherError) as exc:
        # Loud, but the root itself is what it is: the exit code stays the rollback's own.
        ui.warn(f"could not record the rollback result: {exc}")


def boot_outcome(report: Path, cmdline: str) -> Outcome:
    """What happened in this boot's initrd, from the step's report (or its absence)."""
    try:
        data: bytes | None = report.read_bytes()
    except FileNotFoundError:
        data = None
    return bootstep.boot_outcome(data, report, cmdline)


def finish(machine: Machine, report: Path, cmdline: str) -> tuple[Outcome, int]:
    """Stage 2: record what the boot step did, prune by retention, and be loud if it failed.

    The record goes to the persist subvolume (what `panther status` and the audit read); when
    the root was not rolled back, one line goes to the machine's login warning file, which the
    login message prints as it is."""
    outcome = boot_outcome(report, cmdline)
    warning = machine.run_dir / LOGIN_WARNING
    with machine.lock(), machine.top_level() as top:
        if outcome.result in ("fresh", "already-fresh"):
            plan, deleted = rollback.gc(top, machine.manifest, dry_run=False)
            outcome.pruned += deleted
            outcome.notes += plan.notes
        _record(top, machine.manifest, outcome)
    if outcome.result in ("fresh", "already-fresh"):
        warning.unlink(missing_ok=True)
        return outcome, ExitCode.OK
    if outcome.result == "skipped":
        line = "PantherOS: the rollback was skipped at this boot (pantheros.norollback)."
    else:
        line = (
            "PantherOS: the root was NOT rolled back at this boot "
            f"({ui.printable(str(outcome.error))}); "
            "run 'panther status'."
        )
    warning.parent.mkdir(parents=True, exist_ok=True)
    # Replaced by a rename, never written through: a symlink planted there is not followed.
    fsutil.replace_file(warning, (line + "\n").encode())
    ui.warn(line)
    return outcome, ExitCode.OK if outcome.result == "skipped" else ExitCode.BOOT_DIRTY


def print_outcome(outcome: Outcome) -> None:
    for action in outcome.actions:
        ui.result(f"  {ui.printable(action)}")
    for note in outcome.notes:
        ui.result(f"  note: {ui.printable(note)}")
    if outcome.pruned:
        ui.result(f"  pruned: {', '.join(map(ui.printable, outcome.pruned))}")
    kept_as = outcome.archived[-1] if outcome.archived else None
    words = {
        "fresh": "the root is fresh"
        + (f"; previous root kept as {ui.printable(kept_as)}" if kept_as else ""),
        "already-fresh": "the root is already fresh: nothing to do",
        "would-roll-back": "dry run: nothing was changed",
        "dirty": f"the root was NOT rolled back: {ui.printable(str(outcome.error))}",
        "skipped": "the rollback was skipped at this boot",
    }
    ui.result(words[outcome.result])


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.finish:
        if args.top or args.lab or args.device or args.dry_run or args.gc:
            raise UsageError("--finish reads this boot's report; it takes only --report and -m")
        cmdline = Path("/proc/cmdline").read_text(encoding="utf-8")
        outcome, code = finish(
            Machine.select(None, args.manifest, instead="--manifest M"), Path(args.report), cmdline
        )
        if args.json:
            ui.emit_json(outcome.__dict__)
        else:
            print_outcome(outcome)
        return code
    manifest = Machine.select(args.lab, args.manifest, instead="--manifest M or --lab DIR").manifest
    with _rollback_top(args, manifest) as top:
        outcome, code = run_rollback(top, manifest, dry_run=args.dry_run, gc=args.gc)
    if args.json:
        ui.emit_json(outcome.__dict__)
    else:
        print_outcome(outcome)
    return code
