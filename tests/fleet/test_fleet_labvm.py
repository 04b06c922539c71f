"""`panther fleet status` against a booted lab VM (`panther lab boot`): a whole machine whose
panther reports on its own `/`, not a lab through `--lab`, over the SSH port QEMU forwards.

Skipped, with the reason, only without root or where `panther lab boot` is not in the checkout;
a boot that fails, or a `panther lab status --json` that does not say how to reach the VM over
SSH (`ssh`: `host`, `port`, `user`, `key`), fails the test. The lab's OS comes from the boot
cache the VM tests share ($PANTHER_BOOT_CACHE, when set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pantheros import cli
from tests.fleet import sshlab
from tests.helpers import REPO, ROOT_REASON

pytestmark = [pytest.mark.root, pytest.mark.vm]


def lab_boot_missing() -> str | None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    lab = sub.choices["lab"]
    actions = next(a for a in lab._actions if isinstance(a, argparse._SubParsersAction))
    if "boot" not in actions.choices:
        return "`panther lab boot` is not in this checkout yet (issue 23, branch labboot)"
    return ROOT_REASON


def environment() -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(REPO / "src")}
    for name in ("PANTHER_BOOT_CACHE", "HOME"):  # the lab's OS, built once (tests/vm)
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def panther(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantheros", *args],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The SSH endpoint of a lab booted as a VM."""
    reason = lab_boot_missing()
    if reason:
        pytest.skip(reason)
    lab = tmp_path / "lab"
    try:
        up = panther("lab", "up", str(lab))
        assert up.returncode == 0, up.stderr
        boot = panther("lab", "boot", str(lab))
        assert boot.returncode == 0, boot.stderr.strip()[-2000:]
        status = json.loads(panther("lab", "status", str(lab), "--json").stdout)
        endpoint = status.get("ssh")
        assert isinstance(endpoint, dict), status
        assert {"host", "port", "user", "key"} <= set(endpoint), endpoint
        assert endpoint["port"] == status["vm"]["ssh_port"]
        yield endpoint
    finally:
        panther("lab", "poweroff", str(lab), timeout=300)
        panther("lab", "down", str(lab), "--purge", timeout=300)


def fleet_json(inventory: Path, *extra: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "pantheros", "fleet", "status", "-i", str(inventory), *extra],
        capture_output=True,
        text=True,
        env=environment(),
        check=False,
    )
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


def test_fleet_status_of_a_booted_lab_vm(booted: dict[str, Any], tmp_path: Path) -> None:
    endpoint = booted
    known = tmp_path / "known_hosts"
    inventory = tmp_path / "fleet.toml"
    inventory.write_text(
        "[hosts.labvm]\n"
        f"address = {sshlab.toml_string(str(endpoint.get('host', '127.0.0.1')))}\n"
        f"port = {int(endpoint['port'])}\n"
        f"user = {sshlab.toml_string(str(endpoint['user']))}\n"
        f"identity = {sshlab.toml_string(str(endpoint['key']))}\n"
        + ("" if endpoint["user"] == "root" else 'become = ["sudo", "-n"]\n')
        + f"ssh_options = [{sshlab.toml_string('UserKnownHostsFile=' + str(known))}]\n"
    )
    [row] = fleet_json(inventory, "--json", "--accept-new-host-keys", "--timeout", "300")["hosts"]
    assert row["error"] is None, row
    assert row["problems"] == [], row
    # The VM's own panther, on its own root: rolled back by this very boot.
    assert row["root"]["state"] == "fresh"
    assert row["last_rollback"]["result"] == "fresh"
    assert row["blank"]["trusted"] is True
    assert row["next_boot"]["trusted"] is True
    assert isinstance(row["audit"]["score"], int)
    # A second run: the host key accepted the first time is the one it presents.
    assert fleet_json(inventory, "--json")["hosts"][0]["error"] is None
