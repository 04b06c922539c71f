"""Command-line handlers of the lab's VM: `panther lab boot|ssh|console|poweroff`, and `status`
and `reboot` when the lab is booted (otherwise those are pantheros.lab.commands')."""

from __future__ import annotations

import argparse
import os
import select
import sys
import termios
import time
import tty
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, UsageError
from pantheros.lab import commands as lab_commands
from pantheros.lab import vm as lab_vm
from pantheros.lab.lab import Lab, default_dir, parse_size
from pantheros.state.persist import hostfile

ESCAPE = b"\x1d"  # Ctrl-]
LINGER = 3.0  # seconds of console output shown after stdin (a pipe) ended


def _lab(args: argparse.Namespace) -> Lab:
    return Lab((Path(args.dir) if args.dir else default_dir()).resolve())


def _memory_mib(text: str | None) -> int | None:
    if text is None:
        return None
    mib = parse_size(text) // 1024**2
    if mib < 512:
        raise UsageError(f"--memory {text}: the lab's VM needs at least 512M")
    return mib


def cmd_lab_boot(args: argparse.Namespace) -> int:
    from pantheros.impermanence import bootstep

    lab = _lab(args)
    if args.flake:
        if args.luks or args.tpm:
            raise UsageError("--flake installs the host's own NixOS: --luks and --tpm are its own")
        lab_vm.boot_flake(lab, args.flake, memory_mib=_memory_mib(args.memory))
        return ExitCode.OK
    options = lab_vm.BootOptions(
        luks=args.luks,
        tpm=True if args.tpm else None,
        level=args.level,
        memory_mib=_memory_mib(args.memory),
        kernel_params=tuple(args.kernel_param or ()),
        wait=not args.background,
        size=parse_size(args.size),
        timeout=float(args.timeout),
    )
    if any(not p or any(c.isspace() for c in p) for p in options.kernel_params):
        raise UsageError("--kernel-param: one parameter, without spaces, each time")
    lab.check_place()
    step_dir = bootstep.artifact_dir()
    machine = lab_vm.LabVM(lab)
    with lab.lock(wait=not args.no_wait, vm_ok=True):
        lab_vm.create_if_missing(lab, options, step_dir)
        persistence = hostfile.entries(hostfile.read(lab.persistence_path))
        machine.boot(options, step_dir, persistence)
    if options.wait:
        machine.wait_up(console_from=0, options=options, boot_id=None)
    return ExitCode.OK


def cmd_lab_ssh(args: argparse.Namespace) -> int:
    rest: list[str] = list(args.rest)
    cut = rest.index("--") if "--" in rest else len(rest)
    before, command = rest[:cut], rest[cut + 1 :]
    if len(before) > 1:
        raise UsageError("give the command after --: panther lab ssh [DIR] -- CMD ...")
    directory = Path(before[0]) if before else default_dir()
    machine = lab_vm.LabVM(Lab(directory.resolve()))
    machine.require_running()
    argv = machine.ssh_argv(command)
    sys.stdout.flush()
    os.execvp(argv[0], argv)  # noqa: S606 - ssh takes over the terminal, as `ssh` would


def cmd_lab_console(args: argparse.Namespace) -> int:
    """Relay the terminal to the VM's serial console until Ctrl-]."""
    machine = lab_vm.LabVM(_lab(args))
    with machine.console() as console:
        ui.info("the lab VM's serial console (Ctrl-] leaves; Enter shows a prompt)")
        stdin = sys.stdin.fileno()
        saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
        try:
            if saved is not None:
                tty.setraw(stdin)
            inputs: list[Any] = [console, stdin]
            linger: float | None = None  # stdin ended: show what the console says, then leave
            while True:
                timeout = None if linger is None else max(0.0, linger - time.monotonic())
                ready, _, _ = select.select(inputs, [], [], timeout)
                if not ready:
                    break
                if console in ready:
                    data = console.recv(65536)
                    if not data:
                        break
                    os.write(sys.stdout.fileno(), data)
                if stdin in ready:
                    data = os.read(stdin, 1024)
                    console.sendall(data.split(ESCAPE, 1)[0])
                    if ESCAPE in data:
                        break
                    if not data:
                        inputs = [console]
                        linger = time.monotonic() + LINGER
        finally:
            if saved is not None:
                termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
    ui.info("\nleft the console (the VM runs on)")
    return ExitCode.OK


def cmd_lab_poweroff(args: argparse.Namespace) -> int:
    machine = lab_vm.LabVM(_lab(args))
    if not machine.poweroff(force=args.force):
        ui.info(f"the lab's VM at {machine.lab.directory} is not running")
    else:
        ui.info(f"the lab's VM at {machine.lab.directory} is off")
    return ExitCode.OK


def cmd_lab_status(args: argparse.Namespace) -> int:
    lab = _lab(args)
    if lab_vm.LabVM(lab).pid() is None:
        return lab_commands.cmd_lab_status(args)
    status = lab.status()  # the VM has the disk: nothing of it is mounted here
    if args.json:
        ui.emit_json(status.as_json())
    else:
        for line in status.text():
            ui.result(line)
    return ExitCode.OK


def cmd_lab_reboot(args: argparse.Namespace) -> int:
    lab = _lab(args)
    machine = lab_vm.LabVM(lab)
    if machine.pid() is None:
        return lab_commands.cmd_lab_reboot(args)
    if args.json:
        raise UsageError("--json: `lab reboot` of a booted lab prints the boot, not stage 2's JSON")
    machine.reboot()
    return ExitCode.OK
