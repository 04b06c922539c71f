"""The NixOS half as a NixOS user meets it, and the stand-in checked against NixOS's own modules.

Two evaluators run the same nix/eval.nix: the stand-in (nix/eval/nixos.nix, always, with
PANTHEROS_NIXPKGS_LIB) and NixOS's own module files (nix/eval/real-files.nix) taken from
PANTHEROS_NIXOS_MODULES, a directory holding nixpkgs' nixos/lib and nixos/modules files
(DEVELOPERS.md says how to get them; they are never part of this repository). The behaviour tests
run on both; the agreement tests compare the two, fact by fact (nix/facts.nix) and unit by unit.
PANTHEROS_IMPERMANENCE, when set, brings nix-community/impermanence's module as its flake exports
it; otherwise a declaration of its options stands in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, eval_host_argv

NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
IMPERMANENCE = os.environ.get("PANTHEROS_IMPERMANENCE")
NIXOS_MODULES = os.environ.get("PANTHEROS_NIXOS_MODULES")
TABLE = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
LEVELS: list[str] = TABLE["levels"]
HOSTS = ["workstation", "server", "vm"]
REAL_FILES = re.findall(
    r'^\s+"([a-z0-9/_.-]+\.nix)"$', (REPO / "nix/eval/real-files.nix").read_text(), re.M
)

needs_lib = pytest.mark.skipif(
    not NIXPKGS_LIB or not Path(NIXPKGS_LIB, "lib").is_dir() or not shutil.which("nix-instantiate"),
    reason="module evaluation needs nix-instantiate and PANTHEROS_NIXPKGS_LIB (a nixpkgs lib "
    "checkout); CI has none",
)
needs_real = pytest.mark.skipif(
    not NIXPKGS_LIB
    or not Path(NIXPKGS_LIB, "lib").is_dir()
    or not shutil.which("nix-instantiate")
    or not NIXOS_MODULES
    or not all(Path(NIXOS_MODULES, "nixos/modules", f).is_file() for f in REAL_FILES),
    reason="the check against NixOS's own modules needs PANTHEROS_NIXOS_MODULES (a directory of "
    "nixpkgs' nixos/lib and nixos/modules files, see DEVELOPERS.md) and PANTHEROS_NIXPKGS_LIB; "
    "CI has neither",
)
# The behaviour tests run on the stand-in, and on NixOS's own files where they are given.
EVALUATORS = [
    pytest.param(False, id="stand-in", marks=needs_lib),
    pytest.param(True, id="nixos", marks=needs_real),
]


def evaluate(
    tmp_path: Path, host: str, *args: str, real: bool, attr: str | None = None
) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "host.nix"
    module.write_text(textwrap.dedent(host))
    argv = eval_host_argv(
        module, *args, attr=attr, nixos_modules=str(NIXOS_MODULES) if real else None
    )
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def evaluated(tmp_path: Path, host: str, *args: str, real: bool, attr: str = "facts") -> Any:
    """What the evaluation gives; `failedAssertions` alone when an assertion fails."""
    proc = evaluate(tmp_path, host, *args, real=real)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    if set(out) == {"failedAssertions"}:
        return out
    return out[attr] if attr else out


def failed(tmp_path: Path, host: str, *args: str, real: bool) -> list[str]:
    out = evaluated(tmp_path, host, *args, real=real, attr="")
    messages: list[str] = out["failedAssertions"]
    return messages


def host_module(name: str, extra: str = "") -> str:
    if name == "template":
        return f"{{ lib, ... }}: {{ imports = [ {REPO}/templates/host/default.nix ]; {extra} }}"
    return f"{{ lib, ... }}: {{ imports = [ {REPO}/hosts/{name}/default.nix ]; {extra} }}"


ADMIN = """
  users.users.op = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA op@x" ];
    hashedPasswordFile = "/persist/secrets/passwords/op";
  };
"""
LAYOUT = """
  networking.hostName = "demo";
  boot.initrd.systemd.enable = true;
  boot.loader.systemd-boot.enable = true;
  pantheros.storage.enable = true;
  pantheros.impermanence.enable = true;
"""


def host(body: str) -> str:
    return f"{{ lib, ... }}: {{ {LAYOUT} {body} }}"


# --- The stand-in agrees with NixOS's own modules -----------------------------------------------


@needs_real
@pytest.mark.parametrize("name", [*HOSTS, "template"])
@pytest.mark.parametrize("level", LEVELS)
def test_the_stand_in_agrees_with_nixos(tmp_path: Path, name: str, level: str) -> None:
    """Every fact of nix/facts.nix, assertions and warnings included, on every host and level."""
    module = host_module(name, f'pantheros.security.level = lib.mkForce "{level}";')
    nixos = evaluated(tmp_path, module, real=True)
    assert nixos.get("failedAssertions") == [], nixos
    assert nixos["warnings"] == []
    stand_in = evaluated(tmp_path, module, real=False)
    assert stand_in == nixos
    # Someone can log in and administer the machine after any number of reboots.
    assert nixos["users"]["administrators"]
    assert nixos["users"]["mutableUsers"] is False


@needs_real
@pytest.mark.parametrize("name", [*HOSTS, "lab-host"])
def test_the_rendered_initrd_units_agree_with_nixos(tmp_path: Path, name: str) -> None:
    module = (
        f"{{ ... }}: {{ imports = [ {REPO}/nix/tests/lab-host.nix ]; }}"
        if name == "lab-host"
        else host_module(name)
    )
    nixos = evaluated(tmp_path, module, real=True, attr="initrdUnits")
    assert set(nixos["units"]) == {"pantheros-rollback.service", "pantheros-persist-dirs.service"}
    assert evaluated(tmp_path, module, real=False, attr="initrdUnits") == nixos


@needs_real
def test_the_build_vm_machine_agrees_with_nixos(tmp_path: Path) -> None:
    module = host_module("vm")
    nixos = evaluated(tmp_path, module, "--arg", "qemuVm", "true", real=True)
    assert nixos.get("failedAssertions") == [], nixos
    assert evaluated(tmp_path, module, "--arg", "qemuVm", "true", real=False) == nixos


def test_the_real_files_are_named_with_their_commits() -> None:
    """DEVELOPERS.md says which files and commits the check was last run against."""
    developers = (REPO / "DEVELOPERS.md").read_text()
    assert REAL_FILES
    for file in REAL_FILES:
        row = next(
            (
                line
                for line in developers.splitlines()
                if line.startswith(f"| nixos/modules/{file} ")
            ),
            "",
        )
        assert re.search(r"\b[0-9a-f]{40}\b", row), f"{file}: no commit in DEVELOPERS.md"
    for file in ["utils.nix", "systemd-lib.nix", "systemd-unit-options.nix", "systemd-types.nix"]:
        assert re.search(rf"nixos/lib/{file}.*\b[0-9a-f]{{40}}\b", developers), file
    if NIXOS_MODULES and Path(NIXOS_MODULES, "MANIFEST").is_file():
        manifest = Path(NIXOS_MODULES, "MANIFEST").read_text()
        for file in REAL_FILES:
            [line] = [x for x in manifest.splitlines() if x.startswith(f"nixos/modules/{file} ")]
            path, _repo, commit, _size = line.split()
            assert path in developers, line
            assert commit in developers, line


# --- Composition with nix-community/impermanence (D92) ------------------------------------------


@pytest.mark.parametrize("real", EVALUATORS)
def test_our_modules_import_beside_upstream_in_either_order(tmp_path: Path, real: bool) -> None:
    module = host_module("server")
    first = evaluated(tmp_path, module, "--argstr", "upstream", "first", real=real)
    last = evaluated(tmp_path, module, "--argstr", "upstream", "last", real=real)
    assert first.get("failedAssertions") == []
    assert first == last
    persisted = evaluated(tmp_path, module, real=real, attr="persistence")
    assert "/var/lib/nixos" in [d["directory"] for d in persisted["/persist"]["directories"]]


@pytest.mark.parametrize("real", EVALUATORS)
def test_without_upstream_impermanence_says_what_to_import(tmp_path: Path, real: bool) -> None:
    messages = failed(tmp_path, host(ADMIN), "--argstr", "upstream", "none", real=real)
    assert any("inputs.impermanence.nixosModules.impermanence" in m for m in messages), messages


ROOT_FS = 'fileSystems."/" = { device = "/dev/sda1"; fsType = "ext4"; };'


@pytest.mark.parametrize("real", EVALUATORS)
@pytest.mark.parametrize(
    ("module", "body", "fact"),
    [
        ("security", f"pantheros.security.enable = true; {ROOT_FS}", "sysctl"),
        (
            "storage",
            "pantheros.storage.enable = true; boot.initrd.systemd.enable = true;",
            "fileSystems",
        ),
        ("users", ROOT_FS, "users"),
        ("manifest", ROOT_FS, "manifest"),
    ],
)
def test_each_module_imports_alone_without_upstream(
    tmp_path: Path, real: bool, module: str, body: str, fact: str
) -> None:
    out = evaluated(
        tmp_path,
        f'{{ ... }}: {{ networking.hostName = "s"; {body} {ADMIN} }}',
        "--argstr", "module", module, "--argstr", "upstream", "none",
        real=real,
    )  # fmt: skip
    assert out.get("failedAssertions") == [], out
    assert out[fact]


# --- Credentials that survive the rollback (D90) and an administrator (D93) ---------------------


@pytest.mark.parametrize("real", EVALUATORS)
@pytest.mark.parametrize("name", [*HOSTS, "template"])
def test_every_example_host_has_an_administrator_whose_credentials_survive(
    tmp_path: Path, real: bool, name: str
) -> None:
    out = evaluated(tmp_path, host_module(name), real=real)
    assert out.get("failedAssertions") == [], out
    users = out["users"]
    assert users["mutableUsers"] is False
    assert users["administrators"], users
    for entry in out["firstBoot"]["files"]:
        assert entry["path"].startswith("/persist/"), entry


@pytest.mark.parametrize("real", EVALUATORS)
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"users.mutableUsers = true; {ADMIN}", "users.mutableUsers = true keeps users"),
        (
            'users.users.op = { isNormalUser = true; extraGroups = [ "wheel" ]; '
            'hashedPasswordFile = "/etc/op.passwd"; };',
            "hashedPasswordFile of users.users.op (/etc/op.passwd) is not on a file system",
        ),
        (
            'users.users.op = { isNormalUser = true; extraGroups = [ "wheel" ]; '
            'hashedPasswordFile = "/home/op/.passwd"; };',
            "users.users.op (/home/op/.passwd)",
        ),
        (
            'users.users.op = { isNormalUser = true; extraGroups = [ "wheel" ]; '
            'openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA op@x" ]; }; '
            "services.openssh.enable = true;",
            "nobody who can log in can also become root (can log in: op)",
        ),
        ('users.users.op = { isNormalUser = true; password = "x"; };', "(can log in: op)"),
        ("", "(nobody can log in at all)"),
    ],
)
def test_credentials_that_would_be_lost_or_no_administrator_are_refused(
    tmp_path: Path, real: bool, body: str, message: str
) -> None:
    messages = failed(tmp_path, host(body), real=real)
    assert any(message in m for m in messages), messages


@pytest.mark.parametrize("real", EVALUATORS)
@pytest.mark.parametrize(
    "body",
    [
        ADMIN,
        # A key to log in and sudo without a password.
        'users.users.op = { isNormalUser = true; extraGroups = [ "wheel" ]; '
        'openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA op@x" ]; }; '
        "services.openssh.enable = true; security.sudo.wheelNeedsPassword = false;",
        # su with root's password.
        "users.users.op = { isNormalUser = true; "
        'openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA op@x" ]; }; '
        "services.openssh.enable = true; "
        'users.users.root.hashedPasswordFile = "/persist/secrets/passwords/root";',
        # Nobody on purpose.
        "pantheros.users.allowNoAdministrator = true; users.allowNoPasswordLogin = true;",
    ],
    ids=["sudo-with-password", "sudo-without-password", "su", "nobody-on-purpose"],
)
def test_ways_to_administer_are_accepted(tmp_path: Path, real: bool, body: str) -> None:
    out = evaluated(tmp_path, host(body), real=real)
    assert out.get("failedAssertions") == [], out


# --- First boot (D91) ---------------------------------------------------------------------------


@pytest.mark.parametrize("real", EVALUATORS)
def test_the_initrd_makes_the_persistent_directories_before_their_binds(
    tmp_path: Path, real: bool
) -> None:
    out = evaluated(tmp_path, host(ADMIN), real=real)
    unit = out["initrd"]["services"]["pantheros-persist-dirs"]
    assert unit["before"] == ["sysroot-var-lib-nixos.mount"]
    assert unit["wantedBy"] == ["initrd.target"]
    assert unit["unitConfig"]["RequiresMountsFor"] == "/sysroot/persist"
    assert unit["unitConfig"]["DefaultDependencies"] is False
    assert unit["serviceConfig"]["ExecStart"] == [
        "/bin/mkdir -p -m 0755 /sysroot/persist/var/lib/nixos"
    ]
    nixos = {"path": "/persist/var/lib/nixos", "user": "root", "group": "root", "mode": "0755"}
    # With the numeric owner the installer applies (root's is fixed; D134).
    assert {**nixos, "uid": 0, "gid": 0} in out["firstBoot"]["directories"]
    [password] = [f for f in out["firstBoot"]["files"] if f["required"]]
    assert (password["path"], password["mode"]) == ("/persist/secrets/passwords/op", "0600")


@pytest.mark.parametrize("real", EVALUATORS)
def test_only_the_host_key_types_kept_are_generated(tmp_path: Path, real: bool) -> None:
    out = evaluated(tmp_path, host(ADMIN + "services.openssh.enable = true;"), real=real)
    assert out["users"]["hostKeys"] == ["/etc/ssh/ssh_host_ed25519_key"]
    persisted = {e["path"] for e in out["manifest"]["persistence"]}
    assert {"/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_ed25519_key.pub"} <= persisted
    assert not {p for p in persisted if "rsa" in p}
    # A host that wants RSA too keeps it too.
    rsa = (
        "services.openssh.hostKeys = [ "
        '{ type = "rsa"; bits = 4096; path = "/etc/ssh/ssh_host_rsa_key"; } ];'
    )
    out = evaluated(tmp_path, host(ADMIN + "services.openssh.enable = true;" + rsa), real=real)
    assert "/etc/ssh/ssh_host_rsa_key" in {e["path"] for e in out["manifest"]["persistence"]}


# --- nixos-rebuild build-vm (D95) ---------------------------------------------------------------


@pytest.mark.parametrize("real", EVALUATORS)
def test_build_vm_of_the_vm_host_evaluates_without_the_layout(tmp_path: Path, real: bool) -> None:
    out = evaluated(tmp_path, host_module("vm"), "--arg", "qemuVm", "true", real=real)
    assert out.get("failedAssertions") == [], out
    assert out["fileSystems"]["/"]["fsType"] == "ext4"
    assert out["initrd"]["services"] == {}
    assert out["manifest"]["impermanence"]["enable"] is False
    [warning] = out["warnings"]
    assert "nixos-rebuild build-vm" in warning
    assert out["users"]["administrators"] == ["panther"]
    # Without build-vm the same host has the layout and the rollback.
    plain = evaluated(tmp_path, host_module("vm"), real=real)
    assert plain["fileSystems"]["/"]["fsType"] == "btrfs"
    assert "pantheros-rollback" in plain["initrd"]["services"]
    assert "build-vm" in (REPO / "hosts/vm/default.nix").read_text()


# --- The flake's lock (no network here: locked by rev and lastModified) -------------------------


def test_the_flake_lock_pins_every_input_and_follows_nixpkgs() -> None:
    lock = json.loads((REPO / "flake.lock").read_text())
    flake = (REPO / "flake.nix").read_text()
    nodes = lock["nodes"]
    assert lock["version"] == 7
    assert set(nodes[lock["root"]]["inputs"]) == {"nixpkgs", "impermanence", "disko"}
    for name in ["nixpkgs", "impermanence", "home-manager", "disko"]:
        locked = nodes[name]["locked"]
        assert locked["type"] == "github"
        assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"]), name
        assert isinstance(locked["lastModified"], int)
        assert locked["lastModified"] > 1.7e9
    # The impermanence input (and its home-manager) use our nixpkgs.
    assert nodes["impermanence"]["inputs"]["nixpkgs"] == ["nixpkgs"]
    assert nodes["disko"]["inputs"]["nixpkgs"] == ["nixpkgs"]
    assert nodes["home-manager"]["inputs"]["nixpkgs"] == ["impermanence", "nixpkgs"]
    assert 'inputs.nixpkgs.follows = "nixpkgs"' in flake
    # What the lock was made from is what flake.nix asks for.
    assert nodes["nixpkgs"]["original"] == {
        "owner": "NixOS", "repo": "nixpkgs", "ref": "nixos-unstable", "type": "github"
    }  # fmt: skip
    assert 'nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable"' in flake
    assert 'url = "github:nix-community/impermanence"' in flake
    assert "devShells = " in flake
