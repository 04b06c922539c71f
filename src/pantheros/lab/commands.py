"""Command-line handlers for `panther lab`: up, status, reboot and down."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pantheros import files, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, Refused, UsageError
from pantheros.lab.lab import Lab, default_dir, parse_size
from pantheros.machine import Machine
from pantheros.storage import tree

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


def _lab(args: argparse.Namespace) -> Lab:
    return Lab((Path(args.dir) if args.dir else default_dir()).resolve())


def _locked(lab: Lab, args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The lab's lock, honouring --no-wait; no lock file is made where there is no lab."""
    if not lab.directory.is_dir() or not lab.made():
        return contextlib.nullcontext()
    return lab.lock(wait=not args.no_wait)


def _persistence_mounts(machine: Machine) -> None:
    """Bind-mount the lab's persistent entries, as the boot does on a PantherOS machine."""
    # Imported here: `lab status` and `lab down` do without persist's imports (bench/cli_startup).
    from pantheros.state import persist

    persist.apply(machine)


def cmd_lab_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    size = parse_size(args.size)
    lab.check_place()
    # Bad input changes nothing, not even the lab directory: the manifest `up` would use is
    # checked first, and the size against it.
    if args.manifest:
        manifest = manifests.load(args.manifest)
    elif lab.manifest_path.exists():
        manifest = lab.manifest()
    else:
        manifest = manifests.load(manifests.bundled_path("lab"))
    lab.check_size(size, manifest)
    lab.directory.mkdir(parents=True, exist_ok=True)
    with lab.lock(wait=not args.no_wait):
        result = lab.up(size, args.manifest)
        # Also when already up: it finishes what a killed `up` or `persist add` left.
        _persistence_mounts(Machine.select(str(lab.directory)))
    if args.json:
        ui.emit_json(result.as_json())
    elif result.already_up:
        ui.info(f"the lab at {lab.directory} is already up; its root is at {lab.mnt}")
    else:
        ui.result(NEXT_STEPS.format(root=lab.mnt, dir=lab.directory))
    return ExitCode.OK


def cmd_lab_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    with _locked(lab, args):
        status = lab.status()
    if args.json:
        ui.emit_json(status.as_json())
    else:
        for line in status.text():
            ui.result(line)
    return ExitCode.OK


def cmd_lab_reboot(args: argparse.Namespace) -> int:
    """A reboot as PantherOS boots: the initrd's step, then the tree mounted, then stage 2."""
    from pantheros.impermanence import bootstep
    from pantheros.impermanence.boot import finish, print_outcome

    lab = _lab(args)
    machine = Machine.select(str(lab.directory))
    report = machine.run_dir / bootstep.BOOT_REPORT.name
    with machine.lock(wait=not args.no_wait):
        if lab.record() is None:
            raise UsageError(f"the lab at {lab.directory} is down (panther lab up)")
        if lab.run_dir.is_symlink() or (lab.run_dir.exists() and not lab.run_dir.is_dir()):
            # The boot report is deleted and written there: through a link, outside the lab.
            raise Refused(f"{lab.run_dir} is not a directory (a symlink?): not booting into it")
        ui.progress("shutting down: unmounting the lab tree")
        tree.unmount_tree(str(lab.mnt), keep_device=True)
        files.remove_file(report, beneath=lab.directory)  # /run does not survive a reboot
        ui.progress("initrd: the boot step (pantheros-rollback, as the initrd runs it)")
        with machine.top_level() as top:
            try:
                bootstep.run(machine.manifest, top=top, report=report)
            except PantherError as exc:
                ui.warn(f"the boot step failed: {exc}")
        ui.progress("booting: mounting the lab tree")
        lab.mount(machine.manifest)
        _persistence_mounts(machine)
        ui.progress("stage 2: panther rollback --finish (record, then prune old roots)")
        outcome, code = finish(machine, report, cmdline="")
    if args.json:
        ui.emit_json(outcome.__dict__)
    else:
        print_outcome(outcome)
    return code


def cmd_lab_down(args: argparse.Namespace) -> int:
    lab = _lab(args)
    with _locked(lab, args):
        result = lab.down(args.purge)
    if args.json:
        ui.emit_json(result.as_json())
    return ExitCode.OK
