"""Command-line handlers for `panther disk` and `panther lab`."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from pantheros import manifest as manifests
from pantheros import ui
from pantheros.errors import ExitCode, UsageError
from pantheros.lab import NEXT_STEPS, Lab, default_dir, parse_size
from pantheros.storage import blockdev, layout
from pantheros.storage.layout import Secret


def load_manifest(value: str) -> tuple[manifests.Manifest, str]:
    if value in manifests.bundled_names() and not Path(value).exists():
        path = str(manifests.bundled_path(value))
        return manifests.load(path), path
    return manifests.load(value), value


def _secret(args: argparse.Namespace) -> Secret | None:
    if args.key_file:
        return Secret(key_file=args.key_file)
    if args.passphrase_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise UsageError("--passphrase-stdin: no passphrase on stdin")
        return Secret(passphrase=line.rstrip("\n"))
    return None


# disk


def cmd_disk_plan(args: argparse.Namespace) -> int:
    manifest, _ = load_manifest(args.manifest)
    blockdev.resolve_target(args.target)
    secret = _secret(args)
    steps = layout.plan(manifest, args.target, secret)
    if args.json:
        ui.emit_json({"target": args.target, "manifest": manifest.source, "steps": steps})
    else:
        ui.result(f"# panther disk format --manifest {manifest.source} {args.target}")
        ui.result(f"# needs at least {layout.required_mib(manifest)} MiB; nothing is changed")
        for number, step in enumerate(steps, 1):
            ui.result(f"{number:2}. {step}")
    return ExitCode.OK


def cmd_disk_format(args: argparse.Namespace) -> int:
    manifest, _ = load_manifest(args.manifest)
    secret = _secret(args)
    layout.format_disk(manifest, args.target, yes_wipe=args.yes_wipe, secret=secret)
    ui.info(f"{args.target} is laid out for host {manifest.host}")
    return ExitCode.OK


def cmd_disk_mount(args: argparse.Namespace) -> int:
    manifest, path = load_manifest(args.manifest)
    secret = _secret(args)
    state = layout.mount_tree(manifest, path, args.target, args.directory, secret)
    ui.info(f"mounted {len(state.mounts)} file system(s) under {state.directory}")
    return ExitCode.OK


def cmd_disk_unmount(args: argparse.Namespace) -> int:
    directory = args.paths[-1]
    if len(args.paths) > 2:
        raise UsageError("panther disk unmount: give [TARGET] DIR")
    layout.unmount_tree(directory)
    return ExitCode.OK


# lab


def _lab(args: argparse.Namespace) -> Lab:
    return Lab((Path(args.dir) if args.dir else default_dir()).resolve())


def _locked(lab: Lab, args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The lab's lock, honouring --no-wait; no lock file is made where there is no lab."""
    if not lab.directory.is_dir():
        return contextlib.nullcontext()
    return lab.lock(wait=not args.no_wait)


def cmd_lab_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    size = parse_size(args.size)
    if args.manifest:
        manifests.load(args.manifest)  # bad input changes nothing, not even the lab directory
    lab.directory.mkdir(parents=True, exist_ok=True)
    with lab.lock(wait=not args.no_wait):
        lab.up(size, args.manifest)
        _persistence_mounts(lab)
    ui.result(NEXT_STEPS.format(root=lab.mnt, dir=lab.directory))
    return ExitCode.OK


def _persistence_mounts(lab: Lab) -> None:
    """Bind-mount the lab's persistent entries, as the boot does on a PantherOS machine."""
    from pantheros.machine import Machine
    from pantheros.state import persist

    persist.apply(Machine.select(str(lab.directory)))


def cmd_lab_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    with _locked(lab, args):
        status = lab.status()
    if args.json:
        ui.emit_json(status)
        return ExitCode.OK
    if status["image"] is None:
        ui.result(f"no lab at {status['dir']} (panther lab up {status['dir']})")
        return ExitCode.OK
    ui.result(f"lab      {status['dir']} ({'up' if status['up'] else 'down'})")
    ui.result(f"image    {status['image']}")
    ui.result(f"device   {status['device'] or '-'}")
    ui.result(f"manifest {status['manifest']}")
    for mountpoint, subvolume in status["mounts"].items():
        ui.result(f"  {mountpoint}  <- subvolume {subvolume}")
    if status["esp"]:
        ui.result(f"  {status['esp']}  <- EFI system partition")
    return ExitCode.OK


def cmd_lab_down(args: argparse.Namespace) -> int:
    lab = _lab(args)
    with _locked(lab, args):
        lab.down(args.purge)
    return ExitCode.OK
