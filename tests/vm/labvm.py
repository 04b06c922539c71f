"""A lab driven as its user drives it: the real `panther` command line in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pantheros.lab import qemu
from pantheros.lab.vm import in_a_second
from tests.helpers import REPO

BOOT_TIMEOUT = 1200.0
# Set by tests/vm/conftest.py: whether the test's call failed (its logs are printed then).
FAILED = pytest.StashKey[bool]()


class LabVM:
    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.files = qemu.Files(directory / "vm")
        self.timings: dict[str, list[float]] = {}

    def panther(
        self,
        *args: str,
        check: bool = True,
        timeout: float = BOOT_TIMEOUT,
        input: str = "",
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {**os.environ, "NO_COLOR": "1", **self.env, "PYTHONPATH": str(REPO / "src")}
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "pantheros", *args],
            capture_output=True,
            text=True,
            env=full_env,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check:
            assert proc.returncode == 0, f"panther {' '.join(args)}: {proc.returncode}\n" + (
                proc.stdout + proc.stderr
            )
        return proc

    def timed(
        self, what: str, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        start = time.monotonic()
        proc = self.panther(*args, check=check, env=env)
        self.timings.setdefault(what, []).append(time.monotonic() - start)
        return proc

    def boot(
        self, *options: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`panther lab boot DIR OPTIONS`; env: added to panther's environment."""
        return self.timed(
            "boot", "lab", "boot", str(self.directory), *options, check=check, env=env
        )

    def ssh(self, command: str, *, check: bool = True, timeout: float = 300) -> str:
        proc = self.panther("lab", "ssh", str(self.directory), "--", command, check=False,
                            timeout=timeout)  # fmt: skip
        if check:
            assert proc.returncode == 0, f"in the VM: {command}: {proc.returncode}\n{proc.stderr}"
        return proc.stdout

    def root(self, command: str, *, check: bool = True) -> str:
        return self.ssh(f"sudo sh -c {_quote(command)}", check=check)

    def boot_id(self) -> str | None:
        """This boot's id, or None while SSH does not answer (a guest rebooting may hold the
        connection QEMU accepted for it)."""
        try:
            proc = self.panther(
                "lab", "ssh", str(self.directory), "--", "cat /proc/sys/kernel/random/boot_id",
                check=False, timeout=60,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    def reboot_inside(self) -> None:
        """`systemctl reboot` from inside, then wait for the next boot to let SSH in and to
        finish starting."""
        before = self.boot_id()
        assert before, "no SSH before the reboot"
        start = time.monotonic()
        # `systemctl reboot` from inside, run by systemd a second later (vm.in_a_second: no
        # sudo left at the final kill).
        self.ssh(shlex.join(["sudo", *in_a_second("reboot")]), check=False, timeout=60)
        deadline = start + BOOT_TIMEOUT
        while True:
            assert self.pid() is not None, "the VM powered off instead of rebooting\n" + self.log()
            now = self.boot_id()
            if now and now != before:
                break
            assert time.monotonic() < deadline, "no new boot after a reboot\n" + self.log()
            time.sleep(3)
        self.ssh("systemctl is-system-running --wait", check=False)
        self.timings.setdefault("reboot", []).append(time.monotonic() - start)

    def pid(self) -> int | None:
        return qemu.running(self.files.pidfile)

    def log(self, start: int = 0) -> str:
        try:
            return self.files.console_log.read_bytes()[start:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.panther("lab", "status", str(self.directory),
                                                       "--json").stdout)  # fmt: skip
        return data

    def roots(self) -> list[dict[str, Any]]:
        data = json.loads(self.ssh("sudo panther roots list --json"))
        roots: list[dict[str, Any]] = data["roots"] if isinstance(data, dict) else data
        return roots

    def wait_for_log(self, text: str, start: int = 0, timeout: float = BOOT_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log(start):
            assert time.monotonic() < deadline, f"{text!r} not on the console\n{self.log(start)}"
            assert self.pid() is not None, f"the VM stopped before {text!r}\n{self.log(start)}"
            time.sleep(0.5)

    def print_logs(self) -> None:
        for path in (self.files.console_log, self.files.directory / "installer" / "console.log"):
            if path.exists():
                text = path.read_text(errors="replace")
                print(f"===== {path} (last 200 lines)\n" + "\n".join(text.splitlines()[-200:]))
        if self.timings:
            print("timings:", json.dumps(self.timings))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def end_vm(directory: Path) -> None:
    """Pull the plug of the lab's QEMU and end its swtpm, checked by pid file and command line;
    the installer's too."""
    for files in (qemu.Files(directory / "vm"), qemu.Files(directory / "vm" / "installer")):
        if not files.directory.is_dir():
            continue
        pid = qemu.running(files.pidfile)
        if pid is not None and pid > 0:
            qemu.kill(files, pid)
            qemu.wait_gone(files.pidfile, 20)
        swtpm = qemu.swtpm_pid(files)
        if swtpm is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(swtpm, signal.SIGKILL)
