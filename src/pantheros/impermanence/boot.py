"""`panther rollback`: the boot step, kept to the few modules the initrd needs."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pantheros import btrfs, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, Refused, UsageError
from pantheros.impermanence import rollback
from pantheros.manifest.models import FailPolicy
from pantheros.storage import blockdev, mounts


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
        from pantheros.machine import Machine

        lab_machine = Machine.select(args.lab)
        if lab_machine.lab and lab_machine.lab.is_up() and not args.dry_run:
            raise Refused(
                "the lab is up: `panther lab reboot` unmounts it, rolls back and mounts it again"
            )
        with lab_machine.top_level(readonly=args.dry_run) as top:
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


def print_outcome(outcome: rollback.Outcome) -> None:
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
        from pantheros.machine import Machine

        manifest = Machine.select(args.lab).manifest
    else:
        manifest = manifests.load(args.manifest or manifests.HOST_MANIFEST)
    with _rollback_top(args, manifest) as top:
        outcome, code = run_rollback(top, manifest, dry_run=args.dry_run, gc=args.gc)
    if args.json:
        ui.emit_json(outcome.__dict__)
    else:
        print_outcome(outcome)
    return code
