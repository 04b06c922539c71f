"""`panther lab`: up, status, reboot and down.

A reboot spans the floors below: the lab (unmount, mount), the boot step and stage 2
(impermanence) and the persistent paths (state), so it is composed here, on top of them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pantheros import files, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, Refused, UsageError
from pantheros.lab import firstboot
from pantheros.lab.lab import Lab, parse_size
from pantheros.lab.lab import vm_status as lab_vm_status
from pantheros.machine import Machine, lab_is_down
from pantheros.storage import tree

if TYPE_CHECKING:
    from pantheros.impermanence.bootstep import Outcome

NEXT_STEPS = """\
The lab machine is up; its root is mounted at {root}
What to try next:
  echo hello > {root}/etc-note        # change the root
  panther diff --lab {dir}            # what the next boot would erase
  panther lab reboot {dir}            # roll back exactly as the initrd does
  panther roots list --lab {dir}      # the previous root, kept and dated
  panther persist add /var/lib/app --lab {dir}   # keep a path across boots
  panther audit --lab {dir}           # the hardening of the lab tree
  panther lab status {dir} --json     # what is mounted where
  panther lab down {dir}              # unmount and detach (--purge deletes the image)
"""


def _locked(
    lab: Lab, no_wait: bool, *, vm_ok: bool = False
) -> contextlib.AbstractContextManager[None]:
    """The lab's lock, honouring --no-wait; no lock file is made where there is no lab. While
    the lab's VM runs, refused unless vm_ok (Lab.lock)."""
    if not lab.directory.is_dir() or not lab.made():
        return contextlib.nullcontext()
    return lab.lock(wait=not no_wait, vm_ok=vm_ok)


def _persistence_mounts(machine: Machine) -> None:
    """Bind-mount the lab's persistent entries, as the boot does on a PantherOS machine."""
    # Imported here: `lab status` and `lab down` do without persist's imports (bench/cli_startup).
    from pantheros.state import persist

    persist.apply(machine)


def _first_boot_files(machine: Machine) -> None:
    """What the machine's services make at its first boot, where persistent storage lacks it."""
    for path in firstboot.make_missing(machine.manifest, machine.root):
        ui.progress(f"first boot: made {path} in persistent storage")


def _boot(lab: Lab, machine: Machine) -> tuple[Outcome, int]:
    """Boot the lab as PantherOS boots: the initrd's step on the unmounted disk, the tree
    mounted, what the first boot makes (lab.firstboot), the persistent paths, then stage 2.

    Called under the lab's lock with the tree unmounted and `lab.booting_path` in place; that
    marker goes only once stage 2 is done, so a boot cut short is finished by the next `up`.
    """
    from pantheros.impermanence import bootstep, stage2

    _check_run_dir(lab)
    report = machine.run_dir / bootstep.BOOT_REPORT.name
    files.remove_file(report, beneath=lab.directory)  # /run does not survive a reboot
    ui.progress("initrd: the boot step (pantheros-rollback, as the initrd runs it)")
    with machine.top_level() as top:
        try:
            bootstep.run(machine.manifest, top=top, report=report)
        except PantherError as exc:
            ui.warn(f"the boot step failed: {exc}")
    ui.progress("booting: mounting the lab tree")
    lab.mount(machine.manifest)
    _first_boot_files(machine)
    _persistence_mounts(machine)
    ui.progress("stage 2: panther rollback --finish (record, then prune old roots)")
    outcome, code = stage2.finish(machine, report, cmdline="")
    files.remove_file(lab.booting_path, beneath=lab.directory)
    return outcome, code


def _check_run_dir(lab: Lab) -> None:
    if lab.run_dir.is_symlink() or (lab.run_dir.exists() and not lab.run_dir.is_dir()):
        # The boot report is deleted and written there: through a link, outside the lab.
        raise Refused(f"{lab.run_dir} is not a directory (a symlink?): not booting into it")


def _show(outcome: Outcome, *, json: bool) -> None:
    # Imported here: `lab status` and `lab down` do without the impermanence commands' imports.
    from pantheros.commands.impermanence import show_outcome

    show_outcome(outcome, json=json)


@dataclass(frozen=True)
class Up:
    size: str
    manifest: str | None
    json: bool
    no_wait: bool


def cmd_lab_up(lab: Lab, opts: Up) -> int:
    size = parse_size(opts.size)
    lab.check_place()
    # Bad input changes nothing, not even the lab directory: the manifest `up` would use is
    # checked first, and the size against it.
    if opts.manifest:
        manifest = manifests.load(opts.manifest)
    elif lab.manifest_path.exists():
        manifest = lab.manifest()
    else:
        manifest = manifests.load(manifests.bundled_path("lab"))
    lab.check_size(size, manifest)
    lab.directory.mkdir(parents=True, exist_ok=True)
    code: int = ExitCode.OK
    with lab.lock(wait=not opts.no_wait):
        given = str(manifests.resolve(opts.manifest)) if opts.manifest else None
        result = lab.up(size, given)
        machine = Machine.of_lab(lab, result.manifest)
        if lab.booting_path.exists():
            # A reboot cut short: finish it, the rollback first, as it would have.
            tree.unmount_tree(str(lab.mnt), quiet=True, keep_device=True)
            outcome, code = _boot(lab, machine)
            if code != ExitCode.OK:
                _show(outcome, json=False)
        else:
            # Also when already up: it finishes what a killed `up` or `persist add` left.
            _first_boot_files(machine)
            _persistence_mounts(machine)
    if opts.json:
        ui.emit_json(result.as_json())
    elif result.already_up:
        ui.info(f"the lab at {lab.directory} is already up; its root is at {lab.mnt}")
    else:
        ui.result(NEXT_STEPS.format(root=lab.mnt, dir=lab.directory))
    return code


@dataclass(frozen=True)
class Status:
    json: bool
    no_wait: bool


def cmd_lab_status(lab: Lab, opts: Status) -> int:
    # Also of a booted lab: then nothing of it is mounted here, and `vm`/`ssh` say how to reach it.
    with _locked(lab, opts.no_wait, vm_ok=True):
        status = lab.status()
    if opts.json:
        ui.emit_json(status.as_json())
    else:
        for line in status.text():
            ui.result(line)
    return ExitCode.OK


@dataclass(frozen=True)
class Reboot:
    json: bool
    no_wait: bool


def cmd_lab_reboot(lab: Lab, opts: Reboot) -> int:
    """A reboot as PantherOS boots: the initrd's step, then the tree mounted, then stage 2.
    A booted lab (`panther lab boot`) is rebooted for real: `systemctl reboot` inside its VM."""
    if lab_vm_status(lab).running:
        if opts.json:
            raise UsageError(
                "--json: `lab reboot` of a booted lab prints the boot, not stage 2's JSON"
            )
        from pantheros.commands import lab_vm

        return lab_vm.reboot(lab)
    machine = Machine.of_lab(lab)
    with machine.lock(wait=not opts.no_wait):
        if lab.record() is None:
            raise lab_is_down(lab)
        _check_run_dir(lab)  # before anything changes
        files.replace_file(lab.booting_path, b"", beneath=lab.directory)
        ui.progress("shutting down: unmounting the lab tree")
        tree.unmount_tree(str(lab.mnt), keep_device=True)
        outcome, code = _boot(lab, machine)
    _show(outcome, json=opts.json)
    return code


@dataclass(frozen=True)
class Down:
    purge: bool
    json: bool
    no_wait: bool


def cmd_lab_down(lab: Lab, opts: Down) -> int:
    with _locked(lab, opts.no_wait):
        result = lab.down(opts.purge)
    if opts.json:
        ui.emit_json(result.as_json())
    return ExitCode.OK
