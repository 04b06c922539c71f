"""After the boot step: record its outcome, prune old roots, prepare the next boot's root, and
be loud when it failed.

`finish` is stage 2 of every boot (`panther rollback --finish`, run by a unit after the initrd):
it reads the report the initrd's step left. `run_rollback` is the same for the step run by hand
on a mounted top level (`panther rollback`). Both then run the step's `--prepare`: the old root
the step archived is made read-only, and the fresh root of the next boot is made now, off the
boot path (D150).
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
    if not dry_run and outcome.result in READY:
        outcome.notes += prepare_next(top, manifest)
    if not dry_run:
        _record(top, manifest, outcome)
    return outcome, code


# After these the next boot's root is made: the blank was trusted, and the root is the one to
# keep running. (After a failed step the next boot takes its own path, and says why.)
READY = ("fresh", "already-fresh", "skipped")


def prepare_next(top: Path, manifest: manifests.Manifest) -> list[str]:
    """The step's `--prepare` (old roots read-only; the next boot's root beside the root; its
    first commit makes the step's renames durable: D154): its notes for the record. A failure
    is said on stderr and noted: the next boot then makes its fresh root itself, as the first
    boot does."""
    try:
        prepared = bootstep.prepare(manifest, top=top)
    except PantherError as exc:
        prepared = Outcome(result="unprepared", error=str(exc))
    notes = list(prepared.notes)
    if prepared.result == "unprepared":
        line = (
            f"the root for the next boot was not prepared ({ui.printable(str(prepared.error))}); "
            "that boot makes it itself"
        )
        ui.warn(line)
        notes.append(line)
    elif prepared.result == "prepared":
        notes += [f"for the next boot: {action}" for action in prepared.actions]
    return notes


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
    """Stage 2: record what the boot step did, prune by retention, prepare the next boot's root,
    and be loud if the step failed.

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
        if outcome.result in READY:
            outcome.notes += prepare_next(top, machine.manifest)
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
