"""Twenty real hosts in one run: the bound on parallel hosts holds, measured on the servers'
side (each sshd's ForceCommand logs when a session begins and ends), and every host answers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import sshlab
from tests.fleet.conftest import SKIP, environment, labs_under
from tests.helpers import REPO

pytestmark = pytest.mark.root

NAMES = [f"host{i:02d}" for i in range(1, 21)]


@pytest.fixture(scope="module")
def twenty(module_dir: Path) -> Iterator[tuple[sshlab.SshLab, Path]]:
    if SKIP:
        pytest.skip(SKIP)
    for labs in labs_under(module_dir, NAMES):
        with sshlab.running(module_dir / "ssh") as ssh:
            servers = [ssh.server(name, lab=labs[name], log_sessions=True) for name in NAMES]
            inventory = module_dir / "fleet.toml"
            hosts = [(s.name, s.address, s.port, '["all"]') for s in servers]
            inventory.write_text(sshlab.inventory(ssh, hosts))
            yield ssh, inventory


def run(inventory: Path, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pantheros",
            "fleet",
            "status",
            "-i",
            str(inventory),
            "--json",
            *args,
        ],
        capture_output=True,
        text=True,
        env={**environment(), "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, object] = json.loads(proc.stdout)
    return doc


@pytest.mark.parametrize(("limit", "bound"), [("4", 4), (None, 10)])
def test_twenty_hosts_at_most_limit_at_a_time(
    twenty: tuple[sshlab.SshLab, Path], limit: str | None, bound: int
) -> None:
    ssh, inventory = twenty
    ssh.sessions.write_text("")
    doc = run(inventory, *(["--limit", limit] if limit else []))
    rows = doc["hosts"]
    assert isinstance(rows, list)
    assert [row["name"] for row in rows] == NAMES
    for row in rows:
        assert row["error"] is None, row
        assert row["problems"] == [], row
        assert row["hostname"] == row["name"]
        assert row["root"]["state"] == "unknown"
        assert row["blank"]["trusted"] is True
    # Counted by the servers: twenty sessions, never more than the bound open at once, and
    # more than one (the hosts are asked in parallel).
    log = ssh.sessions.read_text().splitlines()
    assert sum(1 for line in log if line.startswith("begin ")) == 20
    assert sum(1 for line in log if line.startswith("end ")) == 20
    most = sshlab.concurrency(ssh.sessions)
    assert 2 <= most <= bound, log
    if limit is None:
        assert most > 4  # the default allows more than the bound of the other run
