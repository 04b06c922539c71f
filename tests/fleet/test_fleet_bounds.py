"""The bounds of a fleet run against real sshd servers: a total timeout per host, a Ctrl-C (a
real SIGINT), host keys (accept-new adds, never replaces), and a login that is not root."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import sshlab
from tests.fleet.conftest import environment, labs_under
from tests.helpers import REPO, runtime_copy

pytestmark = pytest.mark.root


def slow(marker: str) -> str:
    """A host's panther that never answers: it sleeps, recognisably, until it is ended."""
    return f"#!/bin/sh\nexec sleep {marker}\n"


def sleeping(marker: str) -> list[str]:
    """The pids of the `sleep MARKER` processes on this machine, whatever namespace."""
    found = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True)
    return found.stdout.split()


def gone(marker: str, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while sleeping(marker):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "pantheros", "fleet", *args]


def env() -> dict[str, str]:
    return {**environment(), "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(scope="module")
def labs(module_dir: Path) -> Iterator[dict[str, Path]]:
    yield from labs_under(module_dir, ["fast1", "fast2", "deployer"])


def write_inventory(ssh: sshlab.SshLab, servers: list[sshlab.Server], extra: str = "") -> Path:
    path = ssh.base / "fleet.toml"
    hosts = [(s.name, s.address, s.port, "[]") for s in servers]
    path.write_text(sshlab.inventory(ssh, hosts) + extra)
    return path


def test_a_host_past_its_timeout_is_ended_there_too(ssh: sshlab.SshLab) -> None:
    marker = "62.71"
    hung = ssh.server("hung", panther=slow(marker))
    inventory = write_inventory(ssh, [hung])
    started = time.monotonic()
    proc = subprocess.run(
        argv("status", "-i", str(inventory), "--json", "--timeout", "3"),
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    wall = time.monotonic() - started
    [row] = json.loads(proc.stdout)["hosts"]
    assert row["error_kind"] == "timeout", row
    assert "within 3s (running panther status --json)" in row["error"]
    assert row["reachable"] is True
    assert proc.returncode == 3
    # Bounded: the timeout, then at most the grace to end ssh.
    assert 3 <= row["elapsed"] < 3 + 4
    assert wall < 3 + 10
    # The host's own panther was ended with the connection (its watchdog), not left running.
    assert gone(marker), sleeping(marker)


def test_ctrl_c_stops_new_hosts_ends_running_ones_and_reports_all(
    ssh: sshlab.SshLab, labs: dict[str, Path]
) -> None:
    marker = "61.37"
    servers = [
        ssh.server("fast1", lab=labs["fast1"]),
        ssh.server("fast2", lab=labs["fast2"]),
        *(ssh.server(f"slow{i}", panther=slow(marker)) for i in range(1, 5)),
    ]
    inventory = write_inventory(ssh, servers)
    proc = subprocess.Popen(
        argv("status", "-i", str(inventory), "--json", "--limit", "3", "--timeout", "120"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    assert proc.stderr is not None
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            text = "".join(lines)
            # fast1 and fast2 done, so slow1..slow3 run and slow4 waits.
            if all(f"{name}  done" in text for name in ("fast1", "fast2")) and (
                "slow3  running" in text
            ):
                ready.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert ready.wait(90), "".join(lines)
        deadline = time.monotonic() + 30
        while len(sleeping(marker)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)  # until the slow hosts are inside their panther
        assert len(sleeping(marker)) == 3
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.stdout is not None
        out = proc.stdout.read()  # stderr is the reader's alone
        proc.wait(30)
        ended = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    stderr = "".join(lines)
    assert proc.returncode == 130, stderr
    assert ended < 10
    doc = json.loads(out)
    rows = {row["name"]: row for row in doc["hosts"]}
    assert list(rows) == ["fast1", "fast2", "slow1", "slow2", "slow3", "slow4"]
    assert doc["interrupted"] is True
    for name in ("fast1", "fast2"):
        assert rows[name]["error"] is None, rows[name]
        assert rows[name]["root"]["state"] in ("unknown", "fresh")
    for name in ("slow1", "slow2", "slow3"):
        assert rows[name]["error_kind"] == "interrupted", rows[name]
    assert rows["slow4"]["error_kind"] == "not-started"
    assert "panther fleet: interrupted: no new host starts" in stderr, stderr
    assert stderr.rstrip().endswith("panther: interrupted")
    assert "slow4  running" not in stderr
    # Every running host's panther was ended on the host.
    assert gone(marker), sleeping(marker)


def test_accept_new_adds_an_unknown_key_and_never_replaces_a_changed_one(
    ssh: sshlab.SshLab,
) -> None:
    new = ssh.server("new", known=False)
    changed = ssh.server("changed", known=False)
    wrong = ssh.keygen(ssh.base / "wrong")
    with ssh.known_hosts.open("a") as f:
        f.write(changed.known_hosts_line(wrong))
    inventory = write_inventory(ssh, [new, changed])
    before = ssh.known_hosts.read_text()
    proc = subprocess.run(
        argv("status", "-i", str(inventory), "--json", "--accept-new-host-keys"),
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    rows = {row["name"]: row for row in json.loads(proc.stdout)["hosts"]}
    # Reached (no panther there: that is its error), and its key was added.
    assert rows["new"]["error_kind"] == "no-panther", rows["new"]
    assert rows["changed"]["error_kind"] == "host-key-changed"
    after = ssh.known_hosts.read_text()
    assert after.startswith(before)
    added = after[len(before) :].splitlines()
    assert len(added) == 1
    check = subprocess.run(
        ["ssh-keygen", "-F", f"[{new.address}]:{new.port}", "-f", str(ssh.known_hosts)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert new.public_key.split()[1] in check.stdout
    # Without it, the same key is now known: the host is reached again.
    proc = subprocess.run(
        argv("status", "-i", str(inventory), "--json", "--on", "new"),
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert json.loads(proc.stdout)["hosts"][0]["error_kind"] == "no-panther"


SYSTEM_PYTHON = "/usr/bin/python3"


def _login_reason() -> str | None:
    if shutil.which("sudo") is None:
        return "needs sudo (scripts/setup --tests)"
    if not Path(SYSTEM_PYTHON).exists():
        return f"needs {SYSTEM_PYTHON} (python3), which a user who is not root may run"
    return None


@pytest.mark.skipif(_login_reason() is not None, reason=str(_login_reason()))
def test_a_login_that_is_not_root_needs_become(ssh: sshlab.SshLab, labs: dict[str, Path]) -> None:
    """The way deploy-rs users log in (sshUser = "deploy"; sudo to root): without `become`,
    panther says it needs root and the row says how to fix it; with it, the host answers.

    The host's panther runs on the system's Python with a copy of its runtime any user may read:
    the checkout may live under a directory that user cannot enter, where a real host's panther
    is in the Nix store."""
    server = ssh.server(
        "deployer",
        panther=sshlab.wrapper(labs["deployer"], python=SYSTEM_PYTHON, path=runtime_copy()),
        login="fleetuser",
    )
    inventory = write_inventory(ssh, [])
    with inventory.open("a") as f:
        for name, become in (("with-sudo", '["sudo", "-n"]'), ("without", "[]")):
            f.write(
                f"\n[hosts.{name}]\naddress = {sshlab.toml_string(server.address)}\n"
                f'port = {server.port}\nuser = "fleetuser"\nbecome = {become}\n'
            )
    proc = subprocess.run(
        argv("status", "-i", str(inventory), "--json"),
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    rows = {row["name"]: row for row in json.loads(proc.stdout)["hosts"]}
    assert rows["with-sudo"]["error"] is None, rows["with-sudo"]
    assert rows["with-sudo"]["problems"] == [], rows["with-sudo"]
    assert rows["with-sudo"]["root"]["state"] == "unknown"
    without = rows["without"]
    assert without["error"] is None  # it answered: what it said is in problems
    assert without["exit_code"] == 3
    status = next(p for p in without["problems"] if p.startswith("panther status: "))
    assert "(log in as root, or set `become` for this host" in status
    assert os.geteuid() == 0  # the test itself runs as root: only the host's login was not


def test_the_servers_leave_nothing_behind(tmp_path: Path) -> None:
    """Every process, port and key the fleet tests start is gone after close()."""
    if sshlab.reason_to_skip():
        pytest.skip(str(sshlab.reason_to_skip()))
    ssh = sshlab.SshLab(tmp_path / "ssh")
    try:
        server = ssh.server("once", panther=slow("64.13"))
        hang = ssh.hanging()
        inventory = write_inventory(ssh, [server])
        # A session left running on the server when it stops.
        proc = subprocess.Popen(
            argv("status", "-i", str(inventory), "-q", "--timeout", "60"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env(),
        )
        deadline = time.monotonic() + 30
        while not sleeping("64.13") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleeping("64.13")
        config = str(server.directory / "sshd_config")
    finally:
        ssh.close()
    assert proc.wait(30) == 3  # the server went away under it: an error row, not a hang
    assert gone("64.13")
    assert subprocess.run(["pgrep", "-f", config], check=False).returncode == 1
    for address, port in ((server.address, server.port), (hang.address, hang.port)):
        with socket.socket() as s:
            assert s.connect_ex((address, port)) != 0
    assert not [p for p in ssh.base.rglob("*key*") if p.is_file()]


def test_verbose_logs_the_ssh_argv(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.toml"
    inventory.write_text('[hosts.a]\naddress = "127.0.0.1"\nport = 9\n')
    proc = subprocess.run(
        [sys.executable, "-m", "pantheros", "-v", "fleet", "status", "-i", str(inventory), "-q"],
        capture_output=True,
        text=True,
        env=env(),
        check=False,
    )
    assert proc.returncode == 3
    assert (
        "panther: run: ssh -T -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10"
        in proc.stderr
    )
