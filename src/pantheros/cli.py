"""The `panther` command line.

argparse, not a third-party framework: `panther rollback` runs in the initrd with the standard
library only, and one parser for every subcommand keeps `--help` and errors uniform.
Results go to stdout, messages to stderr; exit codes are in pantheros.errors.ExitCode.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pantheros import __version__, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, UsageError
from pantheros.impermanence import commands as impermanence_commands
from pantheros.lab import NEXT_STEPS, Lab, default_dir, parse_size
from pantheros.storage import blockdev, layout
from pantheros.storage.layout import Secret

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit with ExitCode.USAGE."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _manifest_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--manifest",
        "-m",
        metavar="M",
        required=required,
        help="manifest file, or the name of a bundled one (lab, workstation, server)",
    )


def _load_manifest(value: str) -> tuple[manifests.Manifest, str]:
    if value in manifests.bundled_names() and not Path(value).exists():
        path = str(manifests.bundled_path(value))
        return manifests.load(path), path
    return manifests.load(value), value


def _secret_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--key-file", metavar="FILE", help="LUKS key file")
    group.add_argument(
        "--passphrase-stdin", action="store_true", help="read the LUKS passphrase from stdin"
    )


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
    manifest, _ = _load_manifest(args.manifest)
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
    manifest, _ = _load_manifest(args.manifest)
    secret = _secret(args)
    layout.format_disk(manifest, args.target, yes_wipe=args.yes_wipe, secret=secret)
    ui.info(f"{args.target} is laid out for host {manifest.host}")
    return ExitCode.OK


def cmd_disk_mount(args: argparse.Namespace) -> int:
    manifest, path = _load_manifest(args.manifest)
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
    return Lab(Path(args.dir).resolve() if args.dir else default_dir())


def cmd_lab_up(args: argparse.Namespace) -> int:
    lab = _lab(args)
    lab.up(parse_size(args.size), args.manifest)
    ui.result(NEXT_STEPS.format(root=lab.mnt))
    return ExitCode.OK


def cmd_lab_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
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
    lab.down(args.purge)
    return ExitCode.OK


def build_parser() -> Parser:
    parser = Parser(prog="panther", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.description = "PantherOS toolkit: btrfs impermanence made safe, hardening made provable."
    parser.add_argument("--version", action="version", version=f"panther {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every external command (debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True

    disk = sub.add_parser("disk", help="lay out, mount and unmount a disk from a manifest")
    dsub = disk.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    dsub.required = True
    p = dsub.add_parser("plan", help="print every step format would take; change nothing")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("--json", action="store_true", help="the steps as JSON")
    _secret_args(p)
    p.set_defaults(func=cmd_disk_plan)
    p = dsub.add_parser("format", help="partition and format TARGET with the manifest's layout")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("--yes-wipe", action="store_true", help="erase what is on TARGET")
    _secret_args(p)
    p.set_defaults(func=cmd_disk_format)
    p = dsub.add_parser("mount", help="mount the whole tree under DIR")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("directory", metavar="DIR", help="where the root subvolume is mounted")
    _secret_args(p)
    p.set_defaults(func=cmd_disk_mount)
    p = dsub.add_parser("unmount", help="undo exactly what mount did at DIR")
    _manifest_arg(p, required=False)
    p.add_argument("paths", nargs="+", metavar="[TARGET] DIR")
    p.set_defaults(func=cmd_disk_unmount)

    lab = sub.add_parser("lab", help="a PantherOS machine on a disk image")
    lsub = lab.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    lsub.required = True
    p = lsub.add_parser("up", help="create, lay out and mount the lab image")
    p.add_argument("dir", nargs="?", metavar="DIR", help="lab directory (default: %(default)s)")
    p.add_argument("--size", default="4G", help="image size for a new lab (default: 4G)")
    p.add_argument("--manifest", "-m", metavar="M", help="lay out with this manifest, not lab's")
    p.set_defaults(func=cmd_lab_up)
    p = lsub.add_parser("status", help="what the lab has mounted where")
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_lab_status)
    p = lsub.add_parser(
        "reboot", help="simulate a boot: unmount, roll back as the initrd does, mount"
    )
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.set_defaults(func=impermanence_commands.cmd_lab_reboot)
    p = lsub.add_parser("down", help="unmount and detach what up attached")
    p.add_argument("dir", nargs="?", metavar="DIR")
    p.add_argument("--purge", action="store_true", help="also delete the image and manifest")
    p.set_defaults(func=cmd_lab_down)
    impermanence_commands.register(sub, Parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="panther: %(message)s",
            stream=sys.stderr,
        )
        func: Handler = args.func
        return func(args)
    except PantherError as exc:
        print(ui.paint(f"panther: error: {exc}", "red", sys.stderr), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("panther: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`panther ... | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
