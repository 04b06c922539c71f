"""Command-line handlers for `panther disk` (the lab's are in pantheros.lab.commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pantheros import manifest as manifests
from pantheros import ui
from pantheros.errors import ExitCode, UsageError
from pantheros.lab import lab
from pantheros.storage import blockdev, layout, tree
from pantheros.storage.luks import Secret


def load_manifest(value: str) -> tuple[manifests.Manifest, str]:
    if value in manifests.bundled_names() and not Path(value).exists():
        path = str(manifests.bundled_path(value))
        return manifests.load(path), path
    return manifests.load(value), value


def _secret(args: argparse.Namespace, manifest: manifests.Manifest) -> Secret | None:
    given = "--key-file" if args.key_file else "--passphrase-stdin" if args.passphrase_stdin else ""
    if given and manifest.storage.luks is None:
        # A key for a layout without LUKS is a mistaken manifest or command, not one to ignore.
        raise UsageError(f"{given}: the layout of {manifest.source} has no LUKS")
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
    secret = _secret(args, manifest)
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
    secret = _secret(args, manifest)
    with lab.guard(args.target, action="panther disk format"):
        layout.format_disk(manifest, args.target, yes_wipe=args.yes_wipe, secret=secret)
    if args.json:
        ui.emit_json({"target": args.target, "manifest": manifest.source, "host": manifest.host})
    else:
        ui.info(f"{args.target} is laid out for host {manifest.host}")
    return ExitCode.OK


def cmd_disk_mount(args: argparse.Namespace) -> int:
    manifest, path = load_manifest(args.manifest)
    secret = _secret(args, manifest)
    with lab.guard(args.target, args.directory, action="panther disk mount"):
        record = tree.mount_tree(manifest, path, args.target, args.directory, secret)
    if args.json:
        mounted = [m.as_json() for m in record.mounts]
        ui.emit_json({"directory": record.directory, "target": record.target, "mounts": mounted})
    else:
        ui.info(f"mounted {len(record.mounts)} file system(s) under {record.directory}")
    return ExitCode.OK


def cmd_disk_unmount(args: argparse.Namespace) -> int:
    directory = args.paths[-1]
    if len(args.paths) > 2:
        raise UsageError("panther disk unmount: give [TARGET] DIR")
    with lab.guard(*args.paths, action="panther disk unmount"):
        tree.unmount_tree(directory)
    return ExitCode.OK
