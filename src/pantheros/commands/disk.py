"""`panther disk`: plan, format, mount and unmount a disk or image from a manifest."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pantheros import manifest as manifests
from pantheros import ui
from pantheros.errors import ExitCode, UsageError
from pantheros.lab import lab
from pantheros.storage import blockdev, layout, tree
from pantheros.storage.luks import Secret


@dataclass(frozen=True)
class Keyed:
    """The options every command that opens the disk takes."""

    manifest: str
    target: str
    key_file: str | None
    passphrase_stdin: bool
    json: bool


def _secret(opts: Keyed, manifest: manifests.Manifest) -> Secret | None:
    given = "--key-file" if opts.key_file else "--passphrase-stdin" if opts.passphrase_stdin else ""
    if given and manifest.storage.luks is None:
        # A key for a layout without LUKS is a mistaken manifest or command, not one to ignore.
        raise UsageError(f"{given}: the layout of {manifest.source} has no LUKS")
    if opts.key_file:
        return Secret(key_file=opts.key_file)
    if opts.passphrase_stdin:
        line = sys.stdin.readline()
        if not line.strip():
            raise UsageError("--passphrase-stdin: no passphrase on stdin")
        return Secret(passphrase=line.rstrip("\n"))
    return None


def cmd_disk_plan(opts: Keyed) -> int:
    manifest = manifests.load(opts.manifest)
    blockdev.resolve_target(opts.target)
    secret = _secret(opts, manifest)
    steps = layout.plan(manifest, opts.target, secret)
    if opts.json:
        ui.emit_json({"target": opts.target, "manifest": manifest.source, "steps": steps})
    else:
        ui.result(f"# panther disk format --manifest {manifest.source} {opts.target}")
        ui.result(f"# needs at least {layout.required_mib(manifest)} MiB; nothing is changed")
        for number, step in enumerate(steps, 1):
            ui.result(f"{number:2}. {step}")
    return ExitCode.OK


@dataclass(frozen=True)
class Format(Keyed):
    yes_wipe: bool


def cmd_disk_format(opts: Format) -> int:
    manifest = manifests.load(opts.manifest)
    secret = _secret(opts, manifest)
    with lab.guard(opts.target, action="panther disk format"):
        layout.format_disk(manifest, opts.target, yes_wipe=opts.yes_wipe, secret=secret)
    if opts.json:
        ui.emit_json({"target": opts.target, "manifest": manifest.source, "host": manifest.host})
    else:
        ui.info(f"{opts.target} is laid out for host {manifest.host}")
    return ExitCode.OK


@dataclass(frozen=True)
class Mount(Keyed):
    directory: str


def cmd_disk_mount(opts: Mount) -> int:
    path = str(manifests.resolve(opts.manifest))
    manifest = manifests.load(path)
    secret = _secret(opts, manifest)
    with lab.guard(opts.target, opts.directory, action="panther disk mount"):
        record = tree.mount_tree(manifest, path, opts.target, opts.directory, secret)
    if opts.json:
        mounted = [m.as_json() for m in record.mounts]
        ui.emit_json({"directory": record.directory, "target": record.target, "mounts": mounted})
    else:
        ui.info(f"mounted {len(record.mounts)} file system(s) under {record.directory}")
    return ExitCode.OK


@dataclass(frozen=True)
class Unmount:
    paths: list[str]


def cmd_disk_unmount(opts: Unmount) -> int:
    directory = opts.paths[-1]
    if len(opts.paths) > 2:
        raise UsageError("panther disk unmount: give [TARGET] DIR")
    with lab.guard(*opts.paths, action="panther disk unmount"):
        tree.unmount_tree(directory)
    return ExitCode.OK
