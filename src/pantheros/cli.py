"""The `panther` command line.

argparse, not a third-party framework: `panther rollback` runs in the initrd with the standard
library only. The whole command surface is declared here; each command's module is imported
only when that command runs, so the boot-time rollback does not pay for the rest.
Results go to stdout, messages to stderr; exit codes are in pantheros.errors.ExitCode.
"""

from __future__ import annotations

import argparse
import errno
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from pantheros import __version__, ui
from pantheros import manifest as manifests
from pantheros.errors import ExitCode, PantherError, UsageError

Handler = Callable[[argparse.Namespace], int]


def _lazy(name: str) -> ModuleType:
    """A module that runs at the first use of one of its attributes (D14)."""
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.find_spec(name)
    assert found is not None, name
    assert found.loader is not None, name
    found.loader = importlib.util.LazyLoader(found.loader)
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from pantheros import completion
    from pantheros.audit import commands as audit_commands
    from pantheros.commands import lab_vm as lab_vm_commands
    from pantheros.impermanence import boot
    from pantheros.impermanence import commands as impermanence_commands
    from pantheros.lab import commands as lab_commands
    from pantheros.spec import commands as spec_commands
    from pantheros.spec import progress as spec_progress
    from pantheros.spec import trace as spec_trace
    from pantheros.state import commands as state_commands
    from pantheros.storage import commands as disk_commands
else:
    completion = _lazy("pantheros.completion")
    audit_commands = _lazy("pantheros.audit.commands")
    boot = _lazy("pantheros.impermanence.boot")
    impermanence_commands = _lazy("pantheros.impermanence.commands")
    lab_commands = _lazy("pantheros.lab.commands")
    lab_vm_commands = _lazy("pantheros.commands.lab_vm")
    spec_commands = _lazy("pantheros.spec.commands")
    spec_progress = _lazy("pantheros.spec.progress")
    spec_trace = _lazy("pantheros.spec.trace")
    state_commands = _lazy("pantheros.state.commands")
    disk_commands = _lazy("pantheros.storage.commands")


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
        if "the following arguments are required: COMMAND" in message or (
            "required: ACTION" in message
        ):
            # A bare `panther` or a bare group: what there is to choose from, then the line.
            self.print_usage(sys.stderr)
            hint = f" (see `{self.prog} --help`)"
        raise UsageError(f"{where + ': ' if where else ''}{message}{hint}")


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

    It is returned by a lambda so that the handler's module (a lazy module above) runs only when
    its command does.
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
    _on(p, lambda: disk_commands.cmd_disk_plan)
    p = dsub.add_parser("format", help="partition and format TARGET with the manifest's layout")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("--yes-wipe", action="store_true", help="erase what is on TARGET")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    _secret_args(p)
    _on(p, lambda: disk_commands.cmd_disk_format)
    p = dsub.add_parser("mount", help="mount the whole tree under DIR")
    _manifest_arg(p)
    p.add_argument("target", metavar="TARGET", help="block device or image file")
    p.add_argument("directory", metavar="DIR", help="where the root subvolume is mounted")
    p.add_argument("--json", action="store_true", help="what was mounted where, as JSON")
    _secret_args(p)
    _on(p, lambda: disk_commands.cmd_disk_mount)
    p = dsub.add_parser("unmount", help="undo exactly what mount did at DIR")
    _manifest_arg(p, required=False)
    p.add_argument(
        "paths",
        nargs="+",
        metavar="[TARGET] DIR",
        help="the directory mount used (the device or image first, if you like)",
    )
    _on(p, lambda: disk_commands.cmd_disk_unmount)


def _lab(sub: Any) -> None:
    lab = sub.add_parser("lab", help="a PantherOS machine on a disk image")
    lsub = _subparsers(lab, "action")
    p = lsub.add_parser("up", help="create, lay out and mount the lab image")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--size", default="4G", help="image size for a new lab (default: 4G)")
    p.add_argument("--manifest", "-m", metavar="M", help="lay out with this manifest, not lab's")
    p.add_argument("--json", action="store_true", help="the result as JSON, without the tour")
    _no_wait_arg(p)
    _on(p, lambda: lab_commands.cmd_lab_up)
    p = lsub.add_parser("status", help="what the lab has mounted where")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--json", action="store_true", help="the lab's state as JSON")
    _no_wait_arg(p)
    _on(p, lambda: lab_vm_commands.cmd_lab_status)
    p = lsub.add_parser(
        "reboot",
        help="simulate a boot: unmount, roll back as the initrd does, mount (a booted lab: "
        "reboot its VM)",
    )
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--json", action="store_true", help="stage 2's outcome as JSON")
    _no_wait_arg(p)
    _on(p, lambda: lab_vm_commands.cmd_lab_reboot)
    p = lsub.add_parser("down", help="unmount and detach what up attached")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--purge", action="store_true", help="also delete everything the lab made")
    p.add_argument("--json", action="store_true", help="the result as JSON")
    _no_wait_arg(p)
    _on(p, lambda: lab_commands.cmd_lab_down)
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
    _on(p, lambda: lab_vm_commands.cmd_lab_boot)
    p = lsub.add_parser("ssh", help="log in to the booted lab (-- CMD: run CMD there)")
    p.add_argument(
        "rest",
        nargs=argparse.REMAINDER,
        metavar="[DIR] [-- CMD ...]",
        help="the lab's directory, then the command to run after --",
    )
    _on(p, lambda: lab_vm_commands.cmd_lab_ssh)
    p = lsub.add_parser("console", help="the booted lab's serial console (Ctrl-] leaves)")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    _on(p, lambda: lab_vm_commands.cmd_lab_console)
    p = lsub.add_parser("poweroff", help="power the booted lab off")
    p.add_argument("dir", nargs="?", metavar="DIR", help=LAB_DIR_HELP)
    p.add_argument("--force", action="store_true", help="pull the plug (no clean shutdown)")
    _on(p, lambda: lab_vm_commands.cmd_lab_poweroff)


def _impermanence(sub: Any) -> None:
    p = sub.add_parser("rollback", help="archive the root and start a fresh one (the boot step)")
    p.add_argument("--manifest", "-m", metavar="M", help=f"default: {manifests.HOST_MANIFEST}")
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
    _on(p, lambda: boot.cmd_rollback)

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
    _on(q, lambda: impermanence_commands.cmd_roots_list)
    for action, text in (("pin", "never prune ROOT"), ("unpin", "let retention decide again")):
        q = rsub.add_parser(action, help=text)
        q.add_argument("root", metavar="ROOT", help="the old root's name (panther roots list)")
        q.add_argument("--json", action="store_true", help="the outcome as JSON")
        _lab_arg(q)
        _on(q, lambda: impermanence_commands.cmd_roots_pin)
    q = rsub.add_parser("gc", help="apply the retention policy, explaining each decision")
    q.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    q.add_argument("--json", action="store_true", help="each decision as JSON")
    _no_wait_arg(q)
    _lab_arg(q)
    _on(q, lambda: impermanence_commands.cmd_roots_gc)
    q = rsub.add_parser("mount", help="mount ROOT read-only at DIR")
    q.add_argument("root", metavar="ROOT", help="the old root's name (panther roots list)")
    q.add_argument("directory", metavar="DIR", help="an existing, empty mount point")
    q.add_argument("--json", action="store_true", help="the outcome as JSON")
    _lab_arg(q)
    _on(q, lambda: impermanence_commands.cmd_roots_mount)

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
    _on(p, lambda: impermanence_commands.cmd_restore)

    p = sub.add_parser("status", help="root freshness, old roots, last rollback")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    _lab_arg(p)
    _on(p, lambda: impermanence_commands.cmd_status)


def _state(sub: Any) -> None:
    p = sub.add_parser("diff", help="what the next boot would erase")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="every change as JSON")
    out.add_argument("--list", action="store_true", help="one change a line")
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
        choices=["auto", "send", "walk"],
        default="auto",
        help="send stream (fast when the baseline has content) or a full walk",
    )
    _lab_arg(p)
    _on(p, lambda: state_commands.cmd_diff)

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
    _on(q, lambda: state_commands.cmd_persist_add)
    q = psub.add_parser("remove", help="make PATH ephemeral again (data kept unless --purge)")
    q.add_argument("path", metavar="PATH", help="a declared persistent path, e.g. /var/lib/app")
    q.add_argument("--purge", action="store_true", help="delete the persistent copy too")
    q.add_argument(
        "--host-file", metavar="FILE", help="the host's persistence JSON to remove it from"
    )
    q.add_argument("--json", action="store_true", help="the outcome as JSON")
    _lab_arg(q)
    _no_wait_arg(q)
    _on(q, lambda: state_commands.cmd_persist_remove)
    q = psub.add_parser("list", help="declared entries and their state")
    q.add_argument("--json", action="store_true", help="the entries as JSON")
    _lab_arg(q)
    _on(q, lambda: state_commands.cmd_persist_list)
    q = psub.add_parser("stray", help="data in persistent storage that nothing declares")
    q.add_argument("--json", action="store_true", help="the paths as a JSON list")
    _lab_arg(q)
    _on(q, lambda: state_commands.cmd_persist_stray)


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
    p.add_argument(
        "--manifest", "-m", metavar="M", help=f"default: {manifests.HOST_MANIFEST} if present"
    )
    p.add_argument("--all", action="store_true", help="list passing checks too")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--root", metavar="DIR", help="audit an offline tree (image, built system)")
    _lab_arg(where)
    _on(p, lambda: audit_commands.cmd_audit)


def _spec(sub: Any) -> None:
    spec = sub.add_parser(
        "spec", help="OpenSpec change management (compatible with the OpenSpec CLI)"
    )
    ssub = _subparsers(spec, "spec_action")
    p = ssub.add_parser("list", help="changes (default) or specs")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--specs", action="store_true", help="list the specs")
    which.add_argument("--changes", action="store_true", help="list the active changes (default)")
    p.add_argument(
        "--sort",
        choices=["recent", "name"],
        default="recent",
        help="changes by last modification (default) or by name",
    )
    p.add_argument("--json", action="store_true", help="the list as JSON")
    _on(p, lambda: spec_commands.cmd_list)
    p = ssub.add_parser("show", help="a change or a spec")
    p.add_argument("item", metavar="ITEM", help="a change id or a spec id")
    p.add_argument("--json", action="store_true", help="the item as JSON")
    p.add_argument(
        "--type", choices=["change", "spec"], help="what ITEM is, when a change and a spec share it"
    )
    p.add_argument(
        "--deltas-only",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    p.add_argument(
        "--requirements", action="store_true", help="spec JSON: requirements without scenarios"
    )
    p.add_argument("--no-scenarios", action="store_true", help="spec JSON: leave scenarios out")
    p.add_argument(
        "-r", "--requirement", type=int, metavar="N", help="spec JSON: only requirement N (from 1)"
    )
    p.add_argument(
        "--no-interactive",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    _on(p, lambda: spec_commands.cmd_show)
    p = ssub.add_parser("validate", help="validate changes and specs")
    p.add_argument("item", nargs="?", metavar="ITEM", help="a change id or a spec id")
    p.add_argument("--all", action="store_true", help="every change and spec")
    p.add_argument("--changes", action="store_true", help="every active change")
    p.add_argument("--specs", action="store_true", help="every spec")
    p.add_argument(
        "--type", choices=["change", "spec"], help="what ITEM is, when a change and a spec share it"
    )
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="the results as JSON")
    p.add_argument(
        "--no-interactive",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    _on(p, lambda: spec_commands.cmd_validate)
    p = ssub.add_parser("archive", help="apply a change's deltas to the specs and archive it")
    p.add_argument("change", nargs="?", metavar="CHANGE", help="the change id (optional with one)")
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="confirm: incomplete tasks, spec updates, no checks",
    )
    p.add_argument(
        "--skip-specs", action="store_true", help="archive without applying the deltas to specs"
    )
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip validation (needs --yes)",
    )
    p.add_argument("--json", action="store_true", help="the outcome as JSON")
    _on(p, lambda: spec_commands.cmd_archive)
    p = ssub.add_parser("new", help="scaffold a change: proposal, tasks and a delta spec")
    p.add_argument("change", metavar="CHANGE", help="the new change's id, in kebab-case")
    p.add_argument("--capability", metavar="CAP", help="the capability its delta spec touches")
    p.add_argument("--json", action="store_true", help="what was made, as JSON")
    _on(p, lambda: spec_commands.cmd_new)
    p = ssub.add_parser("diff", help="the requirement-level effect of a change, before archiving")
    p.add_argument("change", metavar="CHANGE", help="the change id")
    p.add_argument("--json", action="store_true", help="the effect as JSON")
    _on(p, lambda: spec_commands.cmd_diff)
    p = ssub.add_parser("trace", help="which tests exercise each scenario; --run runs them")
    p.add_argument("--tests", metavar="DIR", help="test directory (default: tests/ at the root)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--run", action="store_true", help="run the traced tests (pytest) and report")
    how.add_argument(
        "--results",
        metavar="FILE",
        help="report from a test run that loaded -p pantheros.spec.pytest_trace",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 also if a scenario is untested")
    p.add_argument("--json", action="store_true", help="the trace as JSON")
    _on(p, lambda: spec_trace.cmd_trace)
    p = ssub.add_parser("status", help="artifact completion of a change")
    p.add_argument("--change", metavar="ID", help="the change (needed when there are several)")
    p.add_argument("--all", action="store_true", help="every active change")
    p.add_argument("--json", action="store_true", help="the status as JSON")
    _on(p, lambda: spec_progress.cmd_status)
    p = ssub.add_parser("view", help="dashboard of changes, tasks and specs")
    p.add_argument("--json", action="store_true", help="the dashboard as JSON")
    _on(p, lambda: spec_progress.cmd_view)


def _completion(sub: Any) -> None:
    p = sub.add_parser("completion", help="print a shell completion script for panther")
    p.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell to complete in")
    _on(p, lambda: completion.cmd_completion)


def build_parser() -> Parser:
    parser = Parser(
        prog="panther",
        description="PantherOS toolkit: btrfs impermanence made safe, hardening made provable.",
    )
    parser.add_argument("--version", action="version", version=f"panther {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="log every external command (debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    _disk(sub)
    _lab(sub)
    _impermanence(sub)
    _state(sub)
    _audit(sub)
    _spec(sub)
    _completion(sub)
    return parser


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
    print(ui.paint(f"panther: error: {message}", "red", sys.stderr), file=sys.stderr)
    return int(ExitCode.FAILURE if code is None else code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="panther: %(message)s",
            stream=sys.stderr,
        )
        handler: Callable[[], Handler] = args.handler
        return handler()(args)
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
        where = f"{exc.filename}: " if exc.filename is not None else ""
        return _failed(f"{where}{exc.strerror or exc}", _OS_EXIT.get(exc.errno or 0))
