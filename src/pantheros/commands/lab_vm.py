"""`panther lab boot|ssh|console|poweroff`: the lab's disk booted as a VM (pantheros.lab.vm).

`lab status` and `lab reboot` of a booted lab are pantheros.commands.lab's, which ask here.
"""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, UsageError
from pantheros.lab import vm as lab_vm
from pantheros.lab.lab import Lab, default_dir, parse_size
from pantheros.state.persist import hostfile

ESCAPE = b"\x1d"  # Ctrl-]
LINGER = 3.0  # seconds of console output shown after stdin (a pipe) ended


def _memory_mib(text: str | None) -> int | None:
    if text is None:
        return None
    mib = parse_size(text) // 1024**2
    if mib < 512:
        raise UsageError(f"--memory {text}: the lab's VM needs at least 512M")
    return mib


@dataclass(frozen=True)
class Boot:
    luks: bool
    tpm: bool
    level: str | None
    memory: str | None
    kernel_param: list[str] | None
    size: str
    background: bool
    timeout: float
    flake: str | None
    no_wait: bool

    def __post_init__(self) -> None:
        if self.flake and (self.luks or self.tpm):
            raise UsageError("--flake installs the host's own NixOS: --luks and --tpm are its own")
        if any(not p or any(c.isspace() for c in p) for p in self.kernel_param or ()):
            raise UsageError("--kernel-param: one parameter, without spaces, each time")


def _boot_step() -> lab_vm.BootStep:
    """The boot step for the initramfs (PANTHER_BOOTSTEP_DIR's when set) and panther's own
    build for the lab's OS: a variant given for the initrd never goes into the OS."""
    from pantheros.impermanence import bootstep

    initrd = bootstep.artifact_dir()
    given = os.environ.pop(bootstep.DIR_ENV, None)
    try:
        shipped = bootstep.artifact_dir() if given else initrd
    finally:
        if given is not None:
            os.environ[bootstep.DIR_ENV] = given
    return lab_vm.BootStep(initrd=initrd, shipped=shipped)


def cmd_lab_boot(lab: Lab, opts: Boot) -> int:
    if opts.flake:
        lab_vm.boot_flake(lab, opts.flake, memory_mib=_memory_mib(opts.memory))
        return ExitCode.OK
    options = lab_vm.BootOptions(
        luks=opts.luks,
        tpm=True if opts.tpm else None,
        level=opts.level,
        memory_mib=_memory_mib(opts.memory),
        kernel_params=tuple(opts.kernel_param or ()),
        wait=not opts.background,
        size=parse_size(opts.size),
        timeout=float(opts.timeout),
    )
    lab.check_place()
    step = _boot_step()
    machine = lab_vm.LabVM(lab)
    with lab.lock(wait=not opts.no_wait, vm_ok=True):
        lab_vm.create_if_missing(lab, options, step)
        persistence = hostfile.entries(
            hostfile.read(hostfile.HostFile(lab.persistence_path, lab.directory))
        )
        machine.boot(options, step, persistence)
    if options.wait:
        machine.wait_up(console_from=0, options=options, boot_id=None)
    return ExitCode.OK


@dataclass(frozen=True)
class Ssh:
    rest: list[str]


def cmd_lab_ssh(opts: Ssh) -> int:
    rest = list(opts.rest)
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


@dataclass(frozen=True)
class Console:
    pass


def cmd_lab_console(lab: Lab, opts: Console) -> int:
    """Relay the terminal to the VM's serial console until Ctrl-]."""
    machine = lab_vm.LabVM(lab)
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


@dataclass(frozen=True)
class Poweroff:
    force: bool


def cmd_lab_poweroff(lab: Lab, opts: Poweroff) -> int:
    machine = lab_vm.LabVM(lab)
    if not machine.poweroff(force=opts.force):
        ui.info(f"the lab's VM at {lab.directory} is not running")
    else:
        ui.info(f"the lab's VM at {lab.directory} is off")
    return ExitCode.OK


def reboot(lab: Lab) -> int:
    """`lab reboot` of a booted lab: `systemctl reboot` inside it, then wait for SSH."""
    lab_vm.LabVM(lab).reboot()
    return ExitCode.OK
