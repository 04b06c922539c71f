"""QEMU and swtpm for the lab VM: their command lines, starting them, knowing they run, stopping.

QEMU runs as a daemon (`-daemonize`) with a pid file it holds locked (lockf) for as long as it
runs: a process holds the lock, or there is no VM, whatever the file says, and a VM killed by
SIGKILL leaves no stale "running". Its serial console is a Unix socket (for `lab console`) that
QEMU also logs to a file; QMP, on another socket, powers it off or pulls the plug. swtpm is
started for each QEMU (it ends when QEMU closes its socket), keeping the TPM's state in the lab.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import process
from pantheros.errors import PantherError
from pantheros.lab.report import VMStatus

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Files:
    """What the VM keeps in the lab's `vm/` directory."""

    directory: Path

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def qmp(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def console(self) -> Path:
        return self.directory / "console.sock"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def qemu_log(self) -> Path:
        return self.directory / "qemu.log"

    @property
    def efivars(self) -> Path:
        return self.directory / "efivars.fd"

    @property
    def tpm_state(self) -> Path:
        return self.directory / "tpm"

    @property
    def swtpm_sock(self) -> Path:
        return self.directory / "swtpm.sock"

    @property
    def swtpm_pid(self) -> Path:
        return self.directory / "swtpm.pid"

    @property
    def swtpm_log(self) -> Path:
        return self.directory / "swtpm.log"

    @property
    def port(self) -> Path:
        return self.directory / "ssh-port"

    @property
    def key(self) -> Path:
        return self.directory / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def initramfs(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def config(self) -> Path:
        return self.directory / "config.json"


# What the lab's VM makes in DIR/vm (and DIR/vm/installer), by name: what `lab down --purge`
# removes, nothing else. swtpm's state files are in tpm/.
FILES = (
    *("qemu.pid", "qmp.sock", "console.sock", "console.log", "console.log.1", "qemu.log"),
    *("efivars.fd", "swtpm.sock", "swtpm.pid", "swtpm.log", "ssh-port", "initrd.img"),
    *("id_ed25519", "id_ed25519.pub", "known_hosts", "config.json"),
    *("luks-passphrase", "luks-recovery-key"),
)
SWTPM_FILES = (".lock", "tpm2-00.permall", "tpm2-00.volatilestate", "tpm2-00.savestate")


def purge(directory: Path) -> None:
    """Remove what the VM made in directory (DIR/vm), by name, then the directories if empty."""
    if not directory.is_dir() or directory.is_symlink():
        return
    for sub, names in (("tpm", SWTPM_FILES), ("installer/tpm", SWTPM_FILES)):
        for name in names:
            (directory / sub / name).unlink(missing_ok=True)
    for sub in ("installer", ""):
        for name in FILES:
            (directory / sub / name).unlink(missing_ok=True)
    for sub in ("installer/tpm", "tpm", "installer", ""):
        path = directory / sub
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()


def status(files: Files) -> VMStatus:
    """Whether the VM runs (its pid file held), its SSH port, what it was booted with."""
    if not files.directory.is_dir():
        return VMStatus(running=False)
    from pantheros.lab.guestos import USER  # the lab OS's login user

    pid = running(files.pidfile)
    try:
        config = json.loads(files.config.read_text())
    except (FileNotFoundError, ValueError):
        config = {}
    port = files.port.read_text().strip() if pid and files.port.exists() else ""
    return VMStatus(
        running=pid is not None,
        pid=pid if pid and pid > 0 else None,
        ssh_port=int(port) if port.isdigit() else None,
        console_log=files.console_log if files.console_log.exists() else None,
        tpm=bool(config.get("tpm", False)),
        level=config.get("level"),
        ssh_user=USER,
        ssh_key=files.key if files.key.exists() else None,
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (QEMU binds it next; if another
    process takes it first, QEMU fails and the caller tries another)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def running(pidfile: Path) -> int | None:
    """The pid of the QEMU holding pidfile locked, or None when no process holds it."""
    try:
        fd = os.open(pidfile, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PantherError(f"{pidfile} is a symlink: not reading it") from None
        raise
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def pid_is(pid: int, *words: str) -> bool:
    """Whether pid runs now with every word in its command line (a pid can be reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    text = b" ".join(argv).decode(errors="replace")
    return all(word in text for word in words)


def wait_gone(pidfile: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while running(pidfile) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def qemu_argv(
    files: Files,
    image: Path,
    *,
    memory_mib: int,
    port: int,
    tpm: bool,
    kernel: tuple[Path, Path, str] | None = None,
    extra_drives: tuple[tuple[Path, bool], ...] = (),
    snapshot: bool = False,
) -> list[str]:
    """QEMU's argv for the lab: UEFI (OVMF, the lab's own variables) unless kernel gives
    (vmlinuz, initramfs, cmdline) to boot directly; extra drives are (file, read-only)."""
    argv = [
        QEMU,
        "-name",
        f"pantheros-lab,process=pantheros-lab:{files.directory}",
        "-machine",
        "q35",
        "-accel",
        "tcg,tb-size=256",
        "-m",
        str(memory_mib),
        "-smp",
        "2",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-chardev",
        f"socket,id=console,path={files.console},server=on,wait=off,"
        f"logfile={files.console_log},logappend=on",
        "-serial",
        "chardev:console",
        "-qmp",
        f"unix:{files.qmp},server=on,wait=off",
        "-pidfile",
        str(files.pidfile),
        "-daemonize",
        "-device",
        "virtio-rng-pci",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-drive",
        f"file={image},format=raw,if=virtio,cache=writeback,discard=unmap"
        + (",snapshot=on" if snapshot else ""),
    ]
    for drive, readonly in extra_drives:
        options = f"file={drive},format=raw,if=virtio" + (",readonly=on" if readonly else "")
        argv += ["-drive", options]
    if kernel is None:
        argv += [
            "-drive",
            f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
            "-drive",
            f"if=pflash,format=raw,unit=1,file={files.efivars}",
        ]
    else:
        vmlinuz, initramfs, cmdline = kernel
        argv += ["-kernel", str(vmlinuz), "-initrd", str(initramfs), "-append", cmdline]
    if tpm:
        argv += [
            "-chardev",
            f"socket,id=swtpm,path={files.swtpm_sock}",
            "-tpmdev",
            "emulator,id=tpm0,chardev=swtpm",
            "-device",
            "tpm-crb,tpmdev=tpm0",
        ]
    return argv


def swtpm_argv(files: Files) -> list[str]:
    return [
        "swtpm",
        "socket",
        "--tpm2",
        "--tpmstate",
        f"dir={files.tpm_state}",
        "--ctrl",
        f"type=unixio,path={files.swtpm_sock}",
        "--pid",
        f"file={files.swtpm_pid}",
        "--log",
        f"file={files.swtpm_log}",
        "--terminate",
        "--daemon",
    ]


def swtpm_pid(files: Files) -> int | None:
    try:
        text = files.swtpm_pid.read_text().strip()
    except FileNotFoundError:
        return None
    pid = int(text) if text.isdigit() else None
    return pid if pid is not None and pid_is(pid, "swtpm", str(files.tpm_state)) else None


def start_swtpm(files: Files) -> None:
    """A new swtpm for the next QEMU; the one a killed QEMU left (waiting alone) is ended."""
    stop_swtpm(files)
    files.tpm_state.mkdir(mode=0o700, exist_ok=True)
    files.swtpm_sock.unlink(missing_ok=True)
    process.run(swtpm_argv(files), check=True)
    deadline = time.monotonic() + 10
    while not files.swtpm_sock.exists():
        if time.monotonic() > deadline:
            raise PantherError(f"swtpm did not make {files.swtpm_sock} (see {files.swtpm_log})")
        time.sleep(0.05)


def stop_swtpm(files: Files) -> None:
    pid = swtpm_pid(files)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while pid_is(pid, "swtpm", str(files.tpm_state)) and time.monotonic() < deadline:
            time.sleep(0.05)
    files.swtpm_pid.unlink(missing_ok=True)


class PortTaken(PantherError):
    pass


def start_qemu(argv: list[str], files: Files) -> int:
    """Start QEMU as a daemon; its pid once it runs. The parent QEMU returns when the VM is set
    up, so an error (a taken port, a missing file) is known here."""
    with open(files.qemu_log, "wb") as log:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, check=False)
    if proc.returncode != 0:
        text = files.qemu_log.read_text(errors="replace").strip()
        if "hostfwd" in text or "host forwarding" in text:
            raise PortTaken(text)
        raise PantherError(f"QEMU did not start: {text[-500:]}")
    pid = running(files.pidfile)
    if pid is None or pid < 0:
        raise PantherError("QEMU started but holds no pid file: it exited at once")
    return pid


def qmp(files: Files, command: str, timeout: float = 10) -> dict[str, Any]:
    """One QMP command (after the capabilities handshake); its reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(files.qmp))
        reader = s.makefile("rb")

        def reply() -> dict[str, Any]:
            while True:
                line = reader.readline()
                if not line:
                    return {}
                message: dict[str, Any] = json.loads(line)
                if "return" in message or "error" in message:
                    return message

        reader.readline()  # the greeting
        s.sendall(b'{"execute": "qmp_capabilities"}\n')
        reply()
        s.sendall(json.dumps({"execute": command}).encode() + b"\n")
        return reply()


def kill(files: Files, pid: int) -> None:
    """SIGKILL the lab's QEMU (the power cord pulled), once it is checked to be ours."""
    if pid > 0 and pid_is(pid, QEMU, str(files.directory)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
