"""Inventories: the hosts file (TOML, JSON), colmena's and deploy-rs's node lists (from a file
or from a real `nix eval`), `--on`, and bad input as one line that runs nothing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pantheros.errors import UsageError
from pantheros.fleet import inventory
from pantheros.fleet.inventory import Host
from tests.helpers import REPO, one_line_error


def fleet(*args: str, cwd: Path | None = None, stdin: str | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "pantheros", "fleet", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(REPO / "src")},
        cwd=cwd,
        check=False,
    )


def documented_example() -> str:
    """The hosts file shown in docs/cli.md."""
    text = (REPO / "docs" / "cli.md").read_text()
    found = re.search(r"```toml\n(# fleet\.toml.*?)```", text, re.S)
    assert found, "docs/cli.md shows a fleet.toml"
    return found.group(1)


def test_the_documented_hosts_file_reads_as_documented(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "fleet_ed25519").write_text("not really a key\n")
    path = tmp_path / "fleet.toml"
    path.write_text(documented_example())
    hosts = {h.name: h for h in inventory.load_file(str(path))}
    assert set(hosts) == {"web1", "web2", "db1", "vps"}
    web1 = hosts["web1"]
    assert web1.address == "web1.example.org"
    assert web1.user == "root"
    assert web1.port is None
    assert web1.tags == ("web", "prod")
    assert web1.identity == str(tmp_path / "keys" / "fleet_ed25519")
    assert hosts["db1"].port == 2222
    assert hosts["vps"].user == "admin"
    assert hosts["vps"].become == ("sudo", "-n")
    assert hosts["vps"].ssh_options == ("ProxyJump=bastion.example.org",)


def test_json_and_a_list_of_hosts(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    path.write_text(
        json.dumps(
            {
                "defaults": {"user": "ops", "port": 2200},
                "hosts": [
                    {"name": "a", "address": "10.0.0.1", "tags": ["x"]},
                    {"name": "b", "address": "root@fe80::1%eth0", "port": 22},
                ],
            }
        )
    )
    a, b = inventory.load_file(str(path))
    assert (a.name, a.address, a.user, a.port, a.tags) == ("a", "10.0.0.1", "ops", 2200, ("x",))
    assert (b.address, b.user, b.port) == ("fe80::1%eth0", "root", 22)


def test_what_people_also_write(tmp_path: Path) -> None:
    path = tmp_path / "hosts.json"
    path.write_text(
        json.dumps(
            [
                {"name": "a", "hostname": "10.0.0.1", "port": "2222", "tags": "web, prod"},
                {"name": "b", "host": "[2001:db8::1]", "identity_file": str(path)},
            ]
        )
    )
    a, b = inventory.load_file(str(path))
    assert (a.address, a.port, a.tags) == ("10.0.0.1", 2222, ("web", "prod"))
    assert (b.address, b.identity) == ("2001:db8::1", str(path))
    path.write_text(json.dumps([{"name": "a", "host": "x", "address": "y"}]))
    with pytest.raises(UsageError, match=r"hosts\[0\]\.address: says again what `address` says"):
        inventory.load_file(str(path))


def test_no_inventory_here_says_what_to_give(tmp_path: Path) -> None:
    proc = fleet("status", cwd=tmp_path)
    assert proc.returncode == 2
    assert "no inventory: give --inventory FILE, --colmena or --deploy-rs" in one_line_error(proc)
    (tmp_path / "fleet.json").write_text('{"hosts": {"a": {"address": "127.0.0.1"}}}')
    assert [h.name for h in inventory.load([], [], [], cwd=tmp_path).hosts] == ["a"]


BAD = [
    ("[hosts.a]\naddress = 'x'\nprot = 22\n", "hosts.a.prot: unknown key; did you mean 'port'?"),
    (
        "[hosts.a]\naddress = 'x'\nport = 70000\n",
        "hosts.a.port: must be an integer from 1 to 65535",
    ),
    ("[hosts.a]\naddress = 'x'\nport = true\n", "hosts.a.port: must be an integer"),
    ("[hosts.a]\nport = 22\n", "hosts.a: has no `address`"),
    ('[hosts."-oProxyCommand=x"]\naddress = "x"\n', "is not a valid host name"),
    ("[hosts.a]\naddress = '-oProxyCommand=touch /tmp/x'\n", "is not a valid SSH host name"),
    ("[hosts.a]\naddress = 'x'\nuser = '-lroot'\n", "is not a valid user name"),
    ("[hosts.a]\naddress = 'x'\ntags = 3\n", "must be a list of strings"),
    ("[hosts.a]\naddress = 'x'\nidentity = 'nope'\n", "hosts.a.identity: nope: no such file"),
    ("[hosts.a]\naddress = 'x'\nssh_options = ['-oX=y']\n", "is not a valid ssh option"),
    ("[hosts]\n", "hosts: names no host"),
    ("hosts = 3\n", "hosts: missing: a table of hosts by name"),
    ("[hosts.a\n", "not TOML"),
    ("[host.a]\naddress = 'x'\n", "host: unknown key (known: hosts, defaults)"),
]


@pytest.mark.parametrize(("text", "said"), BAD)
def test_a_bad_hosts_file_is_one_line_and_runs_nothing(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    proc = fleet("status", "-i", str(path))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert f"inventory {path}" in line
    assert said in line
    assert proc.stdout == ""


def test_two_hosts_of_one_name_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text("[hosts.web]\naddress = 'a'\n")
    (tmp_path / "b.json").write_text('{"hosts": {"web": {"address": "b"}}}')
    proc = fleet("status", "-i", str(tmp_path / "a.toml"), "-i", str(tmp_path / "b.json"))
    assert "host 'web' is named twice" in one_line_error(proc)
    assert proc.returncode == 2


def hosts(*specs: tuple[str, tuple[str, ...]]) -> inventory.Inventory:
    found = inventory.Inventory()
    found.add(Host(name, "127.0.0.1", tags=tags) for name, tags in specs)
    return found


def test_on_selects_names_tags_globs_in_inventory_order() -> None:
    inv = hosts(("web1", ("web",)), ("web2", ("web",)), ("db1", ("db",)), ("db", ()))

    def names(*on: str) -> list[str]:
        return [h.name for h in inv.select(list(on))]

    assert names() == ["web1", "web2", "db1", "db"]
    assert names("db1", "web") == ["web1", "web2", "db1"]
    assert names("@db") == ["db1"]  # the tag only, not the host named db
    assert names("db") == ["db1", "db"]  # a name and a tag
    assert names("web*,db1") == ["web1", "web2", "db1"]
    with pytest.raises(UsageError, match=r"--on wbe: no host or tag of that name; did you mean"):
        inv.select(["wbe"])
    with pytest.raises(UsageError, match=r"--on @web1: no host or tag"):
        inv.select(["@web1"])
    with pytest.raises(UsageError, match=r"--on x\*: no host or tag"):
        inv.select(["x*"])


def test_colmena_deployment_options() -> None:
    doc = {
        "web1": {
            "targetHost": "web1.example.org",
            "targetPort": 2222,
            "targetUser": "root",
            "tags": ["web"],
            "privilegeEscalationCommand": ["sudo", "-H", "--"],
        },
        "edge": {"targetHost": "edge", "targetUser": "deploy", "tags": []},
        "doas": {"targetUser": "deploy", "privilegeEscalationCommand": ["doas"]},
        "local": {"targetHost": None, "targetUser": "root"},
        "nouser": {"targetHost": "n", "targetUser": None},
    }
    found = {h.name: h for h in inventory.colmena_hosts(doc, "x.json")}
    assert (found["web1"].address, found["web1"].port, found["web1"].tags) == (
        "web1.example.org",
        2222,
        ("web",),
    )
    assert found["web1"].become == ()
    assert found["edge"].become == ("sudo", "-H", "--")  # colmena's default
    assert found["doas"].address == "doas"  # colmena's default: the node's name
    assert found["doas"].become == ("doas",)
    assert found["local"].address is None
    assert found["nouser"].user is None
    with pytest.raises(UsageError, match=r"web1.targetPort: must be an integer"):
        inventory.colmena_hosts({"web1": {"targetPort": "ssh"}}, "x.json")


def test_deploy_rs_settings_profile_over_node_over_top() -> None:
    doc = {
        "sshUser": "admin",
        "sudo": "doas -u",
        "sshOpts": ["-p", "2200"],
        "nodes": {
            "a": {"hostname": "a.example", "profiles": {"system": {"sshUser": "root"}}},
            "b": {"hostname": "b.example", "sshOpts": ["-p", "22"]},
            "c": {"hostname": "c.example", "sudo": "sudo -u", "profiles": {"home": {}}},
        },
    }
    found = {h.name: h for h in inventory.deploy_rs_hosts(doc, "d.json")}
    assert (found["a"].user, found["a"].become, found["a"].ssh_args) == ("root", (), ("-p", "2200"))
    assert (found["b"].user, found["b"].become, found["b"].ssh_args) == (
        "admin",
        ("doas", "-u", "root"),
        ("-p", "22"),
    )
    assert found["c"].become == ("sudo", "-u", "root")
    # deploy.nodes alone reads the same.
    nodes = inventory.deploy_rs_hosts(doc["nodes"], "n.json")
    assert [h.address for h in nodes] == ["a.example", "b.example", "c.example"]
    with pytest.raises(UsageError, match=r"nodes.x: has no `hostname`"):
        inventory.deploy_rs_hosts({"nodes": {"x": {"sshUser": "a"}}}, "d.json")


def test_nix_eval_argv() -> None:
    assert inventory.nix_eval_argv("colmena", ".") == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        ".#colmenaHive.deploymentConfig",
        "--apply",
        inventory.COLMENA_APPLY,
    ]
    assert inventory.nix_eval_argv("deploy-rs", "github:me/infra")[5] == "github:me/infra#deploy"
    # A flake reference with its attribute is taken as it is.
    assert inventory.nix_eval_argv("deploy-rs", ".#ops.deploy")[5] == ".#ops.deploy"


FLAKE = """{
  outputs = { self }: {
    colmenaHive.deploymentConfig = {
      web1 = { targetHost = "127.0.0.1"; targetPort = 9; targetUser = "root"; tags = [ "web" ];
               keys.secret.text = throw "a colmena secret was read";
               privilegeEscalationCommand = [ "sudo" "-H" "--" ]; };
      db1 = { targetHost = "127.0.0.1"; targetPort = 9; targetUser = "deploy"; tags = [ ];
              privilegeEscalationCommand = [ "sudo" "-H" "--" ]; };
    };
    deploy = {
      sshUser = "root";
      nodes.api = { hostname = "127.0.0.1"; sshOpts = [ "-p" "9" ];
        profiles.system = { user = "root"; path = throw "a whole system was evaluated"; }; };
    };
  };
}
"""


@pytest.mark.skipif(shutil.which("nix") is None, reason="needs nix (Debian's nix-bin)")
def test_a_flake_is_read_with_a_real_nix_eval_that_builds_nothing(tmp_path: Path) -> None:
    flake = tmp_path / "infra"
    flake.mkdir()
    (flake / "flake.nix").write_text(FLAKE)
    # The store of this test, not the machine's: nix copies the flake's source into it.
    env = {"NIX_CONFIG": f"store = {tmp_path / 'store'}"}
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pantheros", "fleet", "status", "--json", "-q"),
            *("--colmena", str(flake), "--deploy-rs", str(flake), "--connect-timeout", "2"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "NO_COLOR": "1", "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    doc = json.loads(proc.stdout)
    rows = {row["name"]: row for row in doc["hosts"]}
    assert list(rows) == ["db1", "web1", "api"]  # nix sorts attribute names
    assert rows["web1"]["port"] == 9
    assert rows["web1"]["tags"] == ["web"]
    assert rows["db1"]["user"] == "deploy"
    assert rows["api"]["port"] is None  # in sshOpts, as deploy-rs passes it
    for row in rows.values():
        assert row["error_kind"] == "refused", row  # nothing listens on port 9
    # A flake nix cannot read is one line, not a traceback.
    proc = fleet("status", "--colmena", str(tmp_path / "nowhere"))
    assert proc.returncode == 2
    assert "--colmena " in one_line_error(proc)
    assert "nix eval failed" in proc.stderr


def test_colmena_json_from_stdin_and_a_bad_file(tmp_path: Path) -> None:
    nodes = {"a": {"targetHost": "127.0.0.1", "targetPort": 9, "targetUser": "root"}}
    proc = fleet("status", "--colmena", "-", "--json", "-q", stdin=json.dumps(nodes))
    assert [row["name"] for row in json.loads(proc.stdout)["hosts"]] == ["a"]
    bad = tmp_path / "nodes.json"
    bad.write_text("{not json")
    proc = fleet("status", "--colmena", str(bad))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert f"colmena nodes {bad}: not JSON" in line
    assert "nix --extra-experimental-features" in line  # how to make one
