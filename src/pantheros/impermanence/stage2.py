"""After the boot step: record its outcome, prune old roots, and be loud when it failed.

`finish` is stage 2 of every boot (`panther rollback --finish`, run by a unit after the initrd):
it reads the report the initrd's step left. `run_rollback` is the same recording for the step
run by hand on a mounted top level (`panther rollback`).
"""

from __future__ import annotations

from pathlib import Path

from pantheros import files, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError
from pantheros.impermanence import bootstep, rollback
from pantheros.impermanence.bootstep import Outcome
from pantheros.machine import Machine
from pantheros.manifest.models import FailPolicy

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
        rollback.write_record(top, manifest, outcome)
    except (OSError, PantherError) as exc:
        # Loud, but the root itself is what it is: the exit code stays the rollback's own.
        ui.warn(f"could not record the rollback result: {exc}")


def boot_outcome(report: Path, cmdline: str, *, beneath: Path | None = None) -> Outcome:
    """What happened in this boot's initrd, from the step's report (or its absence).

    beneath: the machine's run directory's base when the report is there (read without a
    symlink, as panther's own); a report named with --report elsewhere is read as given."""
    data = files.read_bytes(report, beneath=beneath, what="the boot step's report")
    return bootstep.boot_outcome(data, report, cmdline)


def finish(machine: Machine, report: Path, cmdline: str) -> tuple[Outcome, int]:
    """Stage 2: record what the boot step did, prune by retention, and be loud if it failed.

    The record goes to the persist subvolume (what `panther status` and the audit read); when
    the root was not rolled back, one line goes to the machine's login warning file, which the
    login message prints as it is."""
    base = machine.run_base
    outcome = boot_outcome(report, cmdline, beneath=base if report.is_relative_to(base) else None)
    warning = machine.run_dir / LOGIN_WARNING
    with machine.lock(), machine.top_level() as top:
        if outcome.result in ("fresh", "already-fresh"):
            plan, deleted = rollback.gc(top, machine.manifest, dry_run=False)
            outcome.pruned += deleted
            outcome.notes += plan.notes
        _record(top, machine.manifest, outcome)
    if outcome.result in ("fresh", "already-fresh"):
        files.remove_file(warning, beneath=base)
        return outcome, ExitCode.OK
    if outcome.result == "skipped":
        line = "PantherOS: the rollback was skipped at this boot (pantheros.norollback)."
    else:
        line = (
            "PantherOS: the root was NOT rolled back at this boot "
            f"({ui.printable(str(outcome.error))}); "
            "run 'panther status'."
        )
    # Replaced by a rename, never written through, and reached without a symlink.
    files.replace_file(warning, (line + "\n").encode(), beneath=base)
    ui.warn(line)
    return outcome, ExitCode.OK if outcome.result == "skipped" else ExitCode.BOOT_DIRTY
