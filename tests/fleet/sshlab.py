"""Real OpenSSH servers on loopback for the fleet tests and bench/fleet.py.

Each server is Debian's sshd (`-D -e -f CONFIG`, `UsePAM no`) on its own 127.0.0.x address and
port with its own host key, running in private mount, PID and UTS namespaces (`unshare`; its
host name is the server's name):

- its /run is a tmpfs of its own, holding sshd's privilege separation directory and the
  symlinks a NixOS host has there (/run/booted-system, /run/current-system), so the fleet reads
  them where a real host keeps them;
- its /usr/local/bin (on the login PATH sshd gives root) holds the host's `panther`: a wrapper
  that runs this checkout's panther on the host's own lab (`--lab DIR`), or nothing at all;
- sshd is PID 1 of its namespace: killing `unshare` (SIGKILL, passed on by --kill-child) ends
  sshd and with it every session process, so a test leaves no process behind.

Also: an address that refuses, a server that accepts TCP and never speaks, and the client's key
and known_hosts, none of them the machine's own (~/.ssh is never read or written).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SSHD = "/usr/sbin/sshd"
# Where NixOS keeps the system profile; a host's own link is made there when the directory
# exists on this machine (a mount namespace can cover a directory, not make one).
PROFILES = Path("/nix/var/nix/profiles")


def reason_to_skip() -> str | None:
    """Why these servers cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (sshd as root, mount namespaces)"
    for tool in (SSHD, "ssh", "ssh-keygen", "unshare"):
        if not (Path(tool).exists() if tool.startswith("/") else _which(tool)):
            return f"needs {tool} (openssh-server, openssh-client, util-linux: scripts/setup)"
    return None


def _which(tool: str) -> bool:
    import shutil

    return shutil.which(tool) is not None


def keygen(path: Path) -> str:
    """A new ed25519 key at path; its public half (`type base64`)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], check=True
    )
    kind, blob = Path(f"{path}.pub").read_text().split()[:2]
    return f"{kind} {blob}"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    address: str
    port: int
    directory: Path
    public_key: str  # the host key it presents
    process: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self, key: str | None = None) -> str:
        return f"[{self.address}]:{self.port} {key or self.public_key}\n"

    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # unshare: --kill-child ends sshd, PID 1 of the namespace
        if self.process is not None:
            self.process.wait(10)
        _wait_closed(self.address, self.port)


def _wait_closed(address: str, port: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((address, port)) != 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"{address}:{port} still accepts connections after its server stopped")


@dataclass
class Hang:
    """A TCP server that accepts and never says a word (no SSH banner)."""

    address: str
    port: int
    listener: socket.socket
    accepted: list[socket.socket] = field(default_factory=list)
    thread: threading.Thread | None = None
    stopping: bool = False

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stopping:
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = self.listener.accept()
                self.accepted.append(conn)

    def stop(self) -> None:
        self.stopping = True
        if self.thread is not None:
            self.thread.join(5)
        for conn in self.accepted:
            conn.close()
        self.listener.close()


class SshLab:
    """Servers, keys and known_hosts under base; close() ends the servers, closes their ports
    and deletes the keys."""

    def __init__(self, base: Path, first_address: int = 10) -> None:
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.keys: list[Path] = []
        self.client_key = base / "client_key"
        self.client_public = self.keygen(self.client_key)
        self.known_hosts = base / "known_hosts"
        self.known_hosts.write_text("")
        self.sessions = base / "sessions.log"
        self.servers: list[Server] = []
        self.hangs: list[Hang] = []
        self.next_address = first_address

    def keygen(self, path: Path) -> str:
        """A key made here, deleted by close()."""
        self.keys += [path, Path(f"{path}.pub")]
        return keygen(path)

    def _address(self) -> str:
        address = f"127.0.0.{self.next_address}"
        self.next_address += 1
        return address

    def server(
        self,
        name: str,
        *,
        lab: Path | None = None,
        panther: str | None = None,
        booted: str | None = None,
        current: str | None = None,
        profile: str | None = None,
        log_sessions: bool = False,
        known: bool = True,
        files: dict[str, str] | None = None,
        login: str | None = None,
    ) -> Server:
        """A running sshd for host name.

        lab: the host's `panther` reports on this lab; panther: the wrapper's whole text
        instead (a slow or broken panther); neither: no panther on the host. booted, current:
        where /run/booted-system and /run/current-system point (a directory in this host's
        tree when it starts with `tree:`); profile: where the system profile points (only
        where PROFILES exists here). log_sessions: each session's start and end is
        appended to sessions.log, by sshd's ForceCommand. known: its key goes to known_hosts.
        files: executable files to make in the host's directory (path -> text). login: a user
        that exists on this host only (its /etc/passwd is its own), who may `sudo -n` to root.
        """
        directory = self.base / name
        (directory / "bin").mkdir(parents=True)
        public = self.keygen(directory / "host_key")
        (directory / "authorized_keys").write_text(self.client_public + "\n")
        self.keys.append(directory / "authorized_keys")
        for relative, text in (files or {}).items():
            path = directory / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(0o755)
        if lab is not None:
            panther = wrapper(lab)
        if panther is not None:
            (directory / "bin" / "panther").write_text(panther)
            (directory / "bin" / "panther").chmod(0o755)
        address = self._address()
        port = free_port(address)
        config = [
            f"Port {port}",
            f"ListenAddress {address}",
            f"HostKey {directory / 'host_key'}",
            "PidFile none",
            # In the host's own /run: sshd reads it as the user, who may not enter our tree.
            "AuthorizedKeysFile /run/authorized_keys",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the keys live under a test directory, not ~/.ssh
            "MaxStartups 200",
            "MaxSessions 50",
            "LogLevel VERBOSE",
        ]
        if log_sessions:
            logger = directory / "session-logger"
            logger.write_text(
                "#!/bin/sh\n"
                f'echo "begin {name} $(date +%s.%N)" >> {shlex.quote(str(self.sessions))}\n'
                'sh -c "$SSH_ORIGINAL_COMMAND"\n'
                "r=$?\n"
                f'echo "end {name} $(date +%s.%N)" >> {shlex.quote(str(self.sessions))}\n'
                'exit "$r"\n'
            )
            logger.chmod(0o755)
            config.append(f"ForceCommand {logger}")
        (directory / "sshd_config").write_text("\n".join(config) + "\n")
        links = {"booted-system": booted, "current-system": current}
        hosts = directory / "hosts"  # its own name resolves, as on a real host
        hosts.write_text(Path("/etc/hosts").read_text() + f"127.0.1.1 {name}\n")
        own_files = [(hosts, "/etc/hosts")]
        if login is not None:
            passwd = directory / "passwd"
            passwd.write_text(
                Path("/etc/passwd").read_text() + f"{login}:x:4242:4242:fleet test:/tmp:/bin/sh\n"
            )
            sudoers = directory / "sudoers"
            sudoers.write_text(f"{login} ALL=(root) NOPASSWD: ALL\n")
            sudoers.chmod(0o440)
            shadow = directory / "shadow"  # PAM's account check (sudo) reads it
            shadow.write_text(Path("/etc/shadow").read_text() + f"{login}:*:19000:0:99999:7:::\n")
            shadow.chmod(0o640)
            own_files += [(passwd, "/etc/passwd"), (shadow, "/etc/shadow")]
            own_files += [(sudoers, "/etc/sudoers")]
        setup = [
            "set -e",
            f"hostname {shlex.quote(name)}",
            "mount -t tmpfs -o mode=0755 fleet-test-run /run",
            "mkdir -m 0755 /run/sshd",
            f"cp {shlex.quote(str(directory / 'authorized_keys'))} /run/authorized_keys",
            "chmod 0644 /run/authorized_keys",
            f"mount --bind {shlex.quote(str(directory / 'bin'))} /usr/local/bin",
        ]
        for source, mountpoint in own_files:
            setup.append(f"mount --bind {shlex.quote(str(source))} {mountpoint}")
        for link, points_to in links.items():
            if points_to is not None:
                if points_to.startswith("tree:"):
                    points_to = str(directory / points_to.removeprefix("tree:"))
                setup.append(f"ln -s {shlex.quote(points_to)} /run/{link}")
        if profile is not None and PROFILES.is_dir():
            setup += [
                f"mount -t tmpfs -o mode=0755 fleet-test-profiles {PROFILES}",
                f"ln -s {shlex.quote(profile)} {PROFILES}/system",
            ]
        setup.append(f"exec {SSHD} -D -e -f {shlex.quote(str(directory / 'sshd_config'))}")
        log = open(directory / "sshd.log", "wb")  # noqa: SIM115 - kept by the process
        process = subprocess.Popen(
            [
                "unshare",
                "--fork",
                "--pid",
                "--kill-child",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
                "sh",
                "-c",
                "\n".join(setup),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        server = Server(name, address, port, directory, public, process)
        self.servers.append(server)
        _wait_listening(server)
        if known:
            with self.known_hosts.open("a") as f:
                f.write(server.known_hosts_line())
        return server

    def refusing(self) -> tuple[str, int]:
        """An address and port where nothing listens: a connection is refused."""
        address = self._address()
        return address, free_port(address)

    def hanging(self) -> Hang:
        address = self._address()
        listener = socket.socket()
        listener.bind((address, 0))
        listener.listen(16)
        hang = Hang(address, listener.getsockname()[1], listener)
        hang.thread = threading.Thread(target=hang.serve, daemon=True)
        hang.thread.start()
        self.hangs.append(hang)
        return hang

    def inventory_defaults(self) -> str:
        """The TOML `[defaults]` that reach these servers with this lab's key and known_hosts."""
        return (
            "[defaults]\n"
            'user = "root"\n'
            f"identity = {toml_string(str(self.client_key))}\n"
            "ssh_options = ["
            f"{toml_string('UserKnownHostsFile=' + str(self.known_hosts))}, "
            '"GlobalKnownHostsFile=/dev/null"]\n'
        )

    def close(self) -> None:
        errors = []
        for server in self.servers:
            try:
                server.stop()
            except Exception as exc:
                errors.append(exc)
        for hang in self.hangs:
            hang.stop()
        for key in self.keys:
            key.unlink(missing_ok=True)
        if errors:
            raise errors[0]


def _wait_listening(server: Server, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise AssertionError(f"sshd for {server.name} exited: {server.log()}")
        if "Server listening on" in server.log():
            return
        time.sleep(0.05)
    raise AssertionError(f"sshd for {server.name} did not start: {server.log()}")


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrapper(
    lab: Path, before: str = "", python: str = sys.executable, path: Path = REPO / "src"
) -> str:
    """A host's `panther`: this checkout's (from `path`), on the host's lab (`before`: shell run
    first).

    The host's /run is its own, so panther's state directory (the lab's mount record) is the
    one the lab was made with (state_dir), never /run/pantheros.
    """
    state = str(state_dir(lab))
    return (
        "#!/bin/sh\n"
        f"{before}"
        f"PANTHER_STATE_DIR={shlex.quote(state)} "
        f"PYTHONPATH={shlex.quote(str(path))} NO_COLOR=1 "
        f'exec {shlex.quote(python)} -m pantheros "$@" --lab {shlex.quote(str(lab))}\n'
    )


def inventory(lab: SshLab, hosts: list[tuple[str, str, int, str]]) -> str:
    """A TOML hosts file: (name, address, port, tags as a TOML list) each."""
    text = lab.inventory_defaults()
    for name, address, port, tags in hosts:
        text += f"\n[hosts.{name}]\naddress = {toml_string(address)}\nport = {port}\n"
        text += f"tags = {tags}\n"
    return text


@contextlib.contextmanager
def running(base: Path) -> Iterator[SshLab]:
    lab = SshLab(base)
    try:
        yield lab
    finally:
        lab.close()


def concurrency(log: Path) -> int:
    """The most sessions the servers had open at once, from the begin/end lines in log."""
    events = []
    for line in log.read_text().splitlines():
        kind, _, stamp = line.split()
        events.append((float(stamp), 1 if kind == "begin" else -1))
    most = now = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        now += delta
        most = max(most, now)
    return most


# Labs: the machines the servers' panther reports on


def state_dir(lab: Path) -> Path:
    """panther's state directory (the mount record, private mounts) of lab's host.

    One per host, as on real hosts: panther clears what a process that is gone left in it, and
    a process of another host's PID namespace looks gone.
    """
    return lab.parent / f"{lab.name}.state"


def _panther_env(lab: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PANTHER_STATE_DIR": str(state_dir(lab)),
        "PYTHONPATH": str(REPO / "src"),
        "NO_COLOR": "1",
    }


def make_labs(base: Path, names: list[str], size: str = "512M") -> dict[str, Path]:
    """A lab, up, for each name under base (made at the same time; a few seconds each)."""
    labs = {name: base / name for name in names}
    started = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pantheros", "lab", "up", str(lab), "--size", size, "--json"],
            env=_panther_env(lab),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for name, lab in labs.items()
    }
    failed = []
    for name, proc in started.items():
        _, err = proc.communicate()
        if proc.returncode != 0:
            failed.append(f"{name}: {err.decode(errors='replace').strip()}")
    if failed:
        remove_labs(list(labs.values()))
        raise AssertionError("lab up failed: " + "; ".join(failed))
    return labs


def remove_labs(labs: list[Path]) -> None:
    for lab in labs:
        if lab.exists():
            subprocess.run(
                [sys.executable, "-m", "pantheros", "lab", "down", str(lab), "--purge"],
                env=_panther_env(lab),
                capture_output=True,
                check=False,
            )


def panther_for(lab: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`panther ARGS` with the state directory of lab (ARGS name the lab themselves)."""
    return subprocess.run(
        [sys.executable, "-m", "pantheros", *args],
        env=_panther_env(lab),
        capture_output=True,
        text=True,
        check=False,
    )
