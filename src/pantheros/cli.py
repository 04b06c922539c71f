"""The `panther` command line: the parser, and the dispatcher that runs a command's handler.

argparse, not a third-party framework (D7). The whole command surface is declared here; each
handler lives in its area's module under `pantheros.commands`, which runs only when its command
does (D14): building the parser imports none of them. The dispatcher turns the parsed arguments
into the handler's typed options and builds what the command acts on (the machine, the lab, the
parser itself) once, before the handler runs. Results go to stdout, messages to stderr; exit
codes are in pantheros.errors.ExitCode (docs/cli.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pantheros import HOST_MANIFEST, __version__, commands, ui
from pantheros.errors import ExitCode, PantherError, UsageError

Handler = Callable[..., int]


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (with a hint) and exit with ExitCode.USAGE."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # Said by the command that was given, so that `did you mean` offers its options.
            command: argparse.ArgumentParser = getattr(parsed, "command_parser", self)
            command.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("panther").strip()
        hint = _suggestion(message) or _option_suggestion(self, message)
        choices = _choices(self)
        if choices and message.startswith("the following arguments are required: "):
            # A bare `panther` or a bare group: one line, with what there is to choose from.
            word = "action" if where else "command"
            message = f"choose a{'n' if word == 'action' else ''} {word}: {', '.join(choices)}"
            hint = f" (see `{self.prog} --help`)"
        raise UsageError(f"{where + ': ' if where else ''}{message}{hint}")


def _choices(parser: argparse.ArgumentParser) -> list[str]:
    """The commands or actions parser offers, when it is a group."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def _option_suggestion(parser: argparse.ArgumentParser, message: str) -> str:
    """`did you mean` for a mistyped option, from the options of the command given."""
    import difflib

    if not message.startswith("unrecognized arguments: "):
        return ""
    known: set[str] = set()
    stack = [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            known.update(action.option_strings)
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
    for word in message.removeprefix("unrecognized arguments: ").split():
        close = difflib.get_close_matches(word, sorted(known), n=1)
        if word.startswith("--") and close:
            return f"; did you mean {close[0]!r}?"
    return ""


def _suggestion(message: str) -> str:
    """`did you mean` for a mistyped command or action."""
    import difflib
    import re

    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _on(parser: argparse.ArgumentParser, handler: Callable[[], Handler]) -> None:
    """The command's handler, named where a reader and mypy can follow it.

    It is returned by a lambda so that the handler's module (imported by its first use, see
    pantheros.commands) runs only when its command does.
    """
    parser.set_defaults(handler=handler, command_parser=parser)


def _manifest_arg(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--manifest",
        "-m",
        metavar="M",
        required=required,
        help="manifest file, or the name of a bundled one (lab, workstation, server)",
    )


def _secret_args(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--key-file", metavar="FILE", help="LUKS key file")
    group.add_argument(
        "--passphrase-stdin", action="store_true", help="read the LUKS passphrase from stdin"
    )


LAB_DIR_HELP = "the lab's directory (default: $PANTHER_LAB_DIR or /var/lib/pantheros/lab)"


def _lab_arg(p: Any) -> None:
    p.add_argument("--lab", metavar="DIR", help="act on the lab machine in DIR, not this host")


def _no_wait_arg(p: Any) -> None:
    p.add_argument(
        "--no-wait", action="store_true", help="fail at once if another command holds the machine"
    )


def _subparsers(p: argparse.ArgumentParser, dest: str) -> Any:
    sub = p.add_subparsers(dest=dest, metavar="ACTION", parser_class=Parser)
    sub.required = True
    return sub


def _disk(sub: Any) -> None:
    disk = sub.add_parser("disk", help="lay out, mount and unmount a disk from a manifest")
    dsub = _subparsers(disk, "action")
    p = dsub.add_parser("plan", help="print every step format would take; change nothing")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("--json", action="store_true", help="the steps as JSON")
    _secret_args(p)
    _on(p, lambda: commands.disk.cmd_disk_plan)
    p = dsub.add_parser("format", help="partition and format TARGET with the manifest's layout")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("--yes-wipe", action="store_true", help="erase what is on TARGET")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    _secret_args(p)
    _on(p, lambda: commands.disk.cmd_disk_format)
    p = dsub.add_parser("mount", help="mount the whole tree under DIR")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("directory", metavar="DIR", help="where the root subvolume is mounted")
    p.add_argument("--json", action="store_true", help="what was mounted where, as JSON")
    _secret_args(p)
    _on(p, lambda: commands.disk.cmd_disk_mount)
    p = dsub.add_parser("unmount", help="undo exactly what mount did at DIR")
    _manifest_arg(p, required=False)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[TARGET] DIR",
        help="the directory mount used (the device or image first, if you like)",
    )
    _on(p, lambda: commands.disk.cmd_disk_unmount)
    p = dsub.add_parser(
        "finish",
        help="complete a layout another tool made (disko's hook): subvolumes, blank, "
        "first-boot directories; keeps what exists",
    )
    _manifest_arg(p)
    p.add_argument(
        "device", metavar="DEVICE", help="the layout's btrfs (partition or LUKS mapping)"
    )
    p.add_argument("--json", action="store_true", help="the result as JSON")
    _on(p, lambda: commands.install.cmd_disk_finish)


def _install(sub: Any) -> None:
    p = sub.add_parser("host", help="the hosts of a flake")
    hsub = _subparsers(p, "host_action")
    q = hsub.add_parser("new", help="write hosts/NAME/ for a new machine")
    q.add_argument("name", metavar="NAME", help="the host's name (its hostName)")
    q.add_argument(
        "--disk", required=True, metavar="/dev/disk/by-id/ID", help="the disk to lay out, by id"
    )
    q.add_argument(
        "--role", choices=["workstation", "server"], default="server", help="default: server"
    )
    q.add_argument("--luks", action="store_true", help="encrypt the disk (LUKS2, a passphrase)")
    q.add_argument("--user", default="admin", help="the login user, in wheel (default: admin)")
    q.add_argument(
        "--ssh-key", action="append", metavar="FILE", help="the user's SSH public key (.pub)"
    )
    q.add_argument("--flake", default=".", metavar="DIR", help="the flake's directory (default: .)")
    q.add_argument("--json", action="store_true", help="what was written, as JSON")
    _on(q, lambda: commands.host.cmd_host_new)

    p = sub.add_parser(
        "install", help="install a host of the flake on a machine over SSH (nixos-anywhere)"
    )
    p.add_argument("host", metavar="HOST", help="the host (nixosConfigurations.HOST)")
    p.add_argument(
        "--target", required=True, metavar="root@ADDRESS", help="the machine, reachable over SSH"
    )
    p.add_argument("--flake", default=".", metavar="DIR", help="the flake's directory (default: .)")
    p.add_argument("-i", "--identity", metavar="FILE", help="the SSH key to log in with")
    p.add_argument(
        "--password-hash",
        action="append",
        metavar="USER=FILE",
        help="USER's password hash (as mkpasswd prints it) from FILE; otherwise asked for",
    )
    p.add_argument(
        "--disk-key", metavar="FILE", help="the LUKS passphrase from FILE; otherwise asked for"
    )
    p.add_argument("--age-key", metavar="FILE", help="an age key for sops-nix or agenix")
    p.add_argument(
        "--age-key-path",
        metavar="PATH",
        help="where the age key goes (default: /persist/var/lib/sops-nix/key.txt)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan and the command only")
    p.add_argument("--yes", action="store_true", help="do not ask to type the disk's id")
    p.add_argument("--json", action="store_true", help="the plan as JSON")
    _on(p, lambda: commands.install.cmd_install)


def _lab(sub: Any) -> None:
    lab = sub.add_parser("lab", help="a PantherOS machine on a disk image")
    lsub = _subparsers(lab, "action")
    p = lsub.add_parser("up", help="create, lay out and mount the lab image")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--size", default="4G", help="image size for a new lab (default: 4G)")
    p.add_argument("--manifest", "-m", metavar="M", help="lay out with this manifest, not lab's")
    p.add_argument("--json", action="store_true", help="the result as JSON, without the tour")
    _no_wait_arg(p)
    _on(p, lambda: commands.lab.cmd_lab_up)
    p = lsub.add_parser("status", help="what the lab has mounted where")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--json", action="store_true", help="the lab's state as JSON")
    _no_wait_arg(p)
    _on(p, lambda: commands.lab.cmd_lab_status)
    p = lsub.add_parser(
        "reboot",
        help="simulate a boot: unmount, roll back as the initrd does, mount (a booted lab: "
        "reboot its VM)",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--json", action="store_true", help="stage 2's outcome as JSON")
    _no_wait_arg(p)
    _on(p, lambda: commands.lab.cmd_lab_reboot)
    p = lsub.add_parser("down", help="unmount and detach what up attached")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--purge", action="store_true", help="also delete everything the lab made")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    _no_wait_arg(p)
    _on(p, lambda: commands.lab.cmd_lab_down)
    _lab_vm(lsub)


def _lab_vm(lsub: Any) -> None:
    """`panther lab boot|ssh|console|poweroff`: the lab's disk booted as a VM (QEMU)."""
    p = lsub.add_parser("boot", help="boot the lab's disk image as a VM (UEFI, QEMU)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--luks", action="store_true", help="a new lab: LUKS2 under btrfs")
    p.add_argument("--tpm", action="store_true", help="a software TPM2 (swtpm), kept in DIR/vm")
    p.add_argument(
        "--level",
        choices=("baseline", "hardened", "strict"),
        help="the hardening level in effect (default: as before, else the manifest's)",
    )
    p.add_argument("--memory", metavar="SIZE", help="the VM's memory (default: 1G)")
    p.add_argument(
        "--kernel-param",
        action="append",
        metavar="P",
        help="add P to this boot's kernel command line (for example pantheros.norollback)",
    )
    p.add_argument("--size", default="4G", help="image size for a new lab (default: 4G)")
    p.add_argument(
        "--background", action="store_true", help="return once QEMU runs; do not wait for SSH"
    )
    p.add_argument(
        "--timeout", type=float, default=900, metavar="S", help="how long to wait for SSH"
    )
    p.add_argument(
        "--flake", metavar="FLAKE#HOST", help="install that NixOS host (nixos-install) and boot it"
    )
    _no_wait_arg(p)
    _on(p, lambda: commands.lab_vm.cmd_lab_boot)
    p = lsub.add_parser("ssh", help="log in to the booted lab (-- CMD: run CMD there)")
    p.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="[DIR] [-- CMD ...]",
        help="the lab's directory, then the command to run after --",
    )
    _on(p, lambda: commands.lab_vm.cmd_lab_ssh)
    p = lsub.add_parser("console", help="the booted lab's serial console (Ctrl-] leaves)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    _on(p, lambda: commands.lab_vm.cmd_lab_console)
    p = lsub.add_parser("poweroff", help="power the booted lab off")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--force", action="store_true", help="pull the plug (no clean shutdown)")
    _on(p, lambda: commands.lab_vm.cmd_lab_poweroff)


def _pin_args(q: argparse.ArgumentParser) -> None:
    q.add_argument("root", metavar="ROOT", help="the old root's name (panther roots list)")
    q.add_argument("--json", action="store_true", help="the outcome as JSON")
    _no_wait_arg(q)
    _lab_arg(q)


def _impermanence(sub: Any) -> None:
    p = sub.add_parser("rollback", help="archive the root and start a fresh one (the boot step)")
    p.add_argument("--manifest", "-m", metavar="M", help=f"default: {HOST_MANIFEST}")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--device", metavar="DEV", help="btrfs device (default from the manifest)")
    where.add_argument("--top", metavar="DIR", help="an already mounted top level (subvolid=5)")
    _lab_arg(where)
    p.add_argument("--dry-run", action="store_true", help="say what would happen; change nothing")
    p.add_argument("--gc", action="store_true", help="apply retention afterwards")
    p.add_argument(
        "--finish",
        action="store_true",
        help="stage 2: record what the initrd's boot step did, prune old roots, warn if it failed",
    )
    p.add_argument(
        "--report",
        metavar="FILE",
        default="/run/pantheros/rollback.report",
        help="with --finish: the boot step's report (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="the outcome as JSON")
    _on(p, lambda: commands.impermanence.cmd_rollback)

    p = sub.add_parser("roots", help="list, pin, prune and mount old roots")
    rsub = _subparsers(p, "roots_action")
    q = rsub.add_parser("list", help="old roots with age, size and why each is kept")
    q.add_argument("--json", action="store_true", help="the table as JSON")
    q.add_argument(
        "--size",
        action="store_true",
        help="without quotas, measure each root with btrfs filesystem du (slow on big roots)",
    )
    _lab_arg(q)
    _on(q, lambda: commands.impermanence.cmd_roots_list)
    q = rsub.add_parser("pin", help="never prune ROOT")
    _pin_args(q)
    _on(q, lambda: commands.impermanence.cmd_roots_pin)
    q = rsub.add_parser("unpin", help="let retention decide again")
    _pin_args(q)
    _on(q, lambda: commands.impermanence.cmd_roots_unpin)
    q = rsub.add_parser("gc", help="apply the retention policy, explaining each decision")
    q.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    q.add_argument("--json", action="store_true", help="each decision as JSON")
    _no_wait_arg(q)
    _lab_arg(q)
    _on(q, lambda: commands.impermanence.cmd_roots_gc)
    q = rsub.add_parser("mount", help="mount ROOT read-only at DIR")
    q.add_argument("root", metavar="ROOT", help="the old root's name (panther roots list)")
    q.add_argument("directory", metavar="DIR", help="an existing, empty mount point")
    q.add_argument("--json", action="store_true", help="the outcome as JSON")
    _no_wait_arg(q)
    _lab_arg(q)
    _on(q, lambda: commands.impermanence.cmd_roots_mount)

    p = sub.add_parser("restore", help="copy a file or tree back from an old root")
    p.add_argument("path", metavar="PATH", help="as the machine sees it, e.g. /etc/hosts")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="ROOT",
        help="latest (archived at the last rollback), previous, an age such as 2h or 3d "
        "(the newest root at least that old), or a root's full name",
    )
    p.add_argument("--to", metavar="DEST", help="where to put it (default: PATH)")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.add_argument("--json", action="store_true", help="the outcome as JSON")
    _lab_arg(p)
    _no_wait_arg(p)
    _on(p, lambda: commands.impermanence.cmd_restore)

    p = sub.add_parser("status", help="root freshness, old roots, last rollback")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    _lab_arg(p)
    _on(p, lambda: commands.impermanence.cmd_status)

    p = sub.add_parser("blank", help="the blank every boot starts from: its recorded identity")
    bsub = _subparsers(p, "blank_action")
    q = bsub.add_parser(
        "bless", help="show how the blank differs from its record; record it with --yes"
    )
    q.add_argument("--yes", action="store_true", help="record this blank as the blank")
    q.add_argument("--json", action="store_true", help="what was compared, as JSON")
    _lab_arg(q)
    _no_wait_arg(q)
    _on(q, lambda: commands.blank.cmd_blank_bless)


def _state(sub: Any) -> None:
    p = sub.add_parser("diff", help="what the next boot would erase")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="every change as JSON")
    out.add_argument("--list", dest="lines", action="store_true", help="one change a line")
    p.add_argument("--times", action="store_true", help="also timestamp-only changes")
    p.add_argument(
        "--show-excluded",
        action="store_true",
        help="also list what was left out and why (persistent, mount point, managed, ignored)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out paths matching GLOB (repeatable)",
    )
    p.add_argument(
        "--ignore-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of GLOBs, one a line",
    )
    p.add_argument(
        "--method",
        choices=["auto", "tree", "send", "walk"],
        default="auto",
        help="btrfs's metadata (auto when the root is a snapshot of the blank), a send stream, "
        "or a full walk",
    )
    _lab_arg(p)
    _on(p, lambda: commands.state.cmd_diff)

    p = sub.add_parser("persist", help="keep state across reboots, safely")
    psub = _subparsers(p, "persist_action")
    q = psub.add_parser("add", help="move PATH into persistent storage and bind-mount it back")
    q.add_argument(
        "paths", nargs="+", metavar="PATH", help="as the machine sees it, e.g. /var/lib/app"
    )
    q.add_argument("--json", action="store_true", help="the entries added, as JSON")
    q.add_argument(
        "--merge", action="store_true", help="a persistent copy exists: add the live files it lacks"
    )
    q.add_argument("--host-file", metavar="FILE", help="the host's persistence JSON to record in")
    _lab_arg(q)
    _no_wait_arg(q)
    _on(q, lambda: commands.state.cmd_persist_add)
    q = psub.add_parser("remove", help="make PATH ephemeral again (data kept unless --purge)")
    q.add_argument("path", metavar="PATH", help="a declared persistent path, e.g. /var/lib/app")
    q.add_argument("--purge", action="store_true", help="delete the persistent copy too")
    q.add_argument(
        "--host-file", metavar="FILE", help="the host's persistence JSON to remove it from"
    )
    q.add_argument("--json", action="store_true", help="the outcome as JSON")
    _lab_arg(q)
    _no_wait_arg(q)
    _on(q, lambda: commands.state.cmd_persist_remove)
    q = psub.add_parser("list", help="declared entries and their state")
    q.add_argument("--json", action="store_true", help="the entries as JSON")
    _lab_arg(q)
    _on(q, lambda: commands.state.cmd_persist_list)
    q = psub.add_parser("stray", help="data in persistent storage that nothing declares")
    q.add_argument("--json", action="store_true", help="the paths as a JSON list")
    _lab_arg(q)
    _on(q, lambda: commands.state.cmd_persist_stray)


def _audit(sub: Any) -> None:
    p = sub.add_parser("audit", help="prove the hardening: checks, score, fixes, SARIF")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="findings as JSON")
    out.add_argument("--sarif", action="store_true", help="findings as SARIF 2.1.0")
    out.add_argument(
        "--fix-snippet",
        action="store_true",
        help="print one NixOS module with the fixes of every failing check",
    )
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    p.add_argument(
        "--level", help="audit against this level (default: the manifest's, or baseline)"
    )
    p.add_argument(
        "--fail-on",
        choices=["low", "medium", "high"],
        default="low",
        help="exit 1 when a check of this severity or above fails (default: low)",
    )
    p.add_argument("--manifest", "-m", metavar="M", help=f"default: {HOST_MANIFEST} if present")
    p.add_argument("--all", action="store_true", help="list passing checks too")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--root", metavar="DIR", help="audit an offline tree (image, built system)")
    _lab_arg(where)
    _on(p, lambda: commands.audit.cmd_audit)


def _spec(sub: Any) -> None:
    p = sub.add_parser("spec", help="OpenSpec change management (compatible with the OpenSpec CLI)")
    _on(p, lambda: commands.spec.cmd_spec)
    from panther_spec import cli as spec_cli

    spec_cli.add_commands(p)


def _fleet_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--inventory",
        "-i",
        action="append",
        default=[],
        metavar="FILE",
        help="hosts file, TOML or JSON (default: fleet.toml or fleet.json here)",
    )
    p.add_argument(
        "--colmena",
        action="append",
        default=[],
        metavar="JSON|FLAKE",
        help="colmena's nodes: a JSON file, or a flake to run nix eval on (colmenaHive)",
    )
    p.add_argument(
        "--deploy-rs",
        action="append",
        default=[],
        metavar="JSON|FLAKE",
        help="deploy-rs's nodes: a JSON file, or a flake to run nix eval on (deploy)",
    )
    p.add_argument(
        "--on",
        action="append",
        default=[],
        metavar="TAG|NAME",
        help="only these hosts: a name, a tag (@tag), a glob; repeatable or comma-separated",
    )
    p.add_argument(
        "--limit", type=int, default=10, help="hosts asked at the same time (default: 10)"
    )
    p.add_argument(
        "--connect-timeout",
        type=int,
        default=10,
        metavar="SECONDS",
        help="give up on a host that does not answer SSH within this (default: 10)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="end a host's connection after this, whatever it is doing (default: 120)",
    )
    p.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="add the key of a host known_hosts lacks (a changed key is still refused)",
    )
    p.add_argument(
        "--ssh-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an ssh option for every host (after each host's own), e.g. ProxyJump=bastion",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def _fleet(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="status and audit of many hosts over SSH")
    fsub = _subparsers(fleet, "fleet_action")
    p = fsub.add_parser(
        "status", help="per host: booted system, last rollback, blank, next boot's erasure, audit"
    )
    _fleet_args(p)
    p.add_argument("--json", action="store_true", help="every host's row as JSON")
    _on(p, lambda: commands.fleet.cmd_fleet_status)
    p = fsub.add_parser("audit", help="panther audit on every host; SARIF with a run per host")
    _fleet_args(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="every host's audit as JSON")
    out.add_argument("--sarif", action="store_true", help="SARIF 2.1.0, one run per host")
    p.add_argument("--output", "-o", metavar="FILE", help="write the report to FILE")
    p.add_argument(
        "--fail-on",
        choices=["low", "medium", "high"],
        default="low",
        help="a host fails when a check of this severity or above fails (default: low)",
    )
    p.add_argument("--level", help="audit against this level (default: each host's own)")
    _on(p, lambda: commands.fleet.cmd_fleet_audit)


def _completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script for panther")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    _on(p, lambda: commands.completion.cmd_completion)


def build_parser(argv: Sequence[str] | None = None) -> Parser:
    """The command line. Given the words it is to parse, only their command is declared whole:
    the others are named (the choices, for the error of a wrong one) and their arguments left
    out, which spares every command the 20 ms that declaring all of them takes (D158)."""
    parser = Parser(
        prog="panther",
        description="PantherOS toolkit: btrfs impermanence made safe, hardening made provable.",
    )
    parser.add_argument("--version", action="version", version=f"panther {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=VERBOSE_HELP)
    sub: Any = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    given = next((word for word in argv or () if not word.startswith("-")), None)
    if given is not None and given != "completion":  # completion describes every command
        sub = _Only(sub, given)
    for declare in (_disk, _install, _lab, _impermanence, _state, _audit, _fleet, _spec):
        declare(sub)
    _completion(sub)
    for leaf in _leaves(parser):
        # Also after the command (`panther status -v`); unset there, the global one counts.
        leaf.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP
        )
    return parser


class _Only:
    """The commands' subparsers, adding whole only the command given: any other is added by
    name and help alone, and what declares its arguments is given an _Unbuilt."""

    def __init__(self, sub: Any, given: str) -> None:
        self.sub, self.given = sub, given

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if name == self.given:
            return self.sub.add_parser(name, **kwargs)
        self.sub.add_parser(name, help=kwargs.get("help"))
        return _Unbuilt()


class _Unbuilt:
    """A command not given: whatever would declare its arguments is taken and kept nowhere."""

    def __getattr__(self, name: str) -> Callable[..., _Unbuilt]:
        return lambda *args, **kwargs: self


VERBOSE_HELP = "log every external command (debug)"


def _leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers of the commands that run something (those without actions below them)."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        return [parser]
    return [leaf for group in groups for p in group.choices.values() for leaf in _leaves(p)]


# The dispatcher. A handler's last parameter is its options: a frozen dataclass whose fields are
# named as the parser's destinations (or the namespace itself, for the spec tool's own parser).
# A first parameter, when there is one, is what the command acts on, built here once.


def _options(handler: Handler, annotation: str, args: argparse.Namespace) -> Any:
    if annotation == "argparse.Namespace":
        return args
    options_type = getattr(sys.modules[handler.__module__], annotation)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(options_type)}
    return options_type(**given)  # validates what one option says about another


def _target(annotation: str, args: argparse.Namespace, options: Any, parser: Parser) -> object:
    if annotation == "Machine | None" and not args.lab:
        return None  # the host or a tree: nothing to load
    if annotation.startswith("Machine"):
        from pantheros.machine import Machine

        if annotation == "Machine | None":  # a lab, named by --lab
            return Machine.select(args.lab)
        assert annotation == "Machine", annotation
        instead = getattr(options, "instead", "--lab DIR")
        return Machine.select(args.lab, getattr(args, "manifest", None), instead=instead)
    if annotation == "Lab":
        from pantheros.lab.lab import Lab, default_dir

        return Lab((Path(args.dir) if args.dir else default_dir()).resolve())
    assert annotation == "argparse.ArgumentParser", annotation
    return parser


def dispatch(handler: Handler, args: argparse.Namespace, parser: Parser) -> int:
    """Run handler with its typed options, and what it acts on when it takes that first."""
    code = handler.__code__
    names = code.co_varnames[: code.co_argcount]
    options = _options(handler, handler.__annotations__[names[-1]], args)
    if len(names) == 1:
        return handler(options)
    return handler(_target(handler.__annotations__[names[0]], args, options, parser), options)


_OS_EXIT = {
    errno.ENAMETOOLONG: ExitCode.USAGE,
    errno.ENOENT: ExitCode.USAGE,
    errno.ENOTDIR: ExitCode.USAGE,
    errno.ELOOP: ExitCode.USAGE,
    errno.EACCES: ExitCode.PERMISSION,
    errno.EPERM: ExitCode.PERMISSION,
}


def _failed(message: str, code: ExitCode | None) -> int:
    """The one line every failure ends in, and its exit code."""
    ui.error(message)
    return int(ExitCode.FAILURE if code is None else code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="panther: %(message)s",
            stream=sys.stderr,
        )
        handler: Callable[[], Handler] = args.handler
        return dispatch(handler(), args, parser)
    except PantherError as exc:
        return _failed(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("panther: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`panther ... | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    except OSError as exc:
        # What the system refused on a path the user gave (too long, /proc, no permission):
        # one line, as for a PantherError; -v shows where it was raised.
        logging.getLogger(__name__).debug("raised here", exc_info=True)
        named = isinstance(exc.filename, str | bytes)  # not a descriptor's number
        where = f"{os.fsdecode(exc.filename)}: " if named else ""
        return _failed(f"{where}{exc.strerror or exc}", _OS_EXIT.get(exc.errno or 0))
