"""The NixOS side: every file parses; the modules evaluate with nixpkgs' lib and do what they say.

Evaluation needs a nixpkgs lib checkout: PANTHEROS_NIXPKGS_LIB names the directory that holds
`lib/` (for example an extracted nix-community/nixpkgs.lib). PANTHEROS_IMPERMANENCE may name a
nix-community/impermanence checkout, whose real module is then evaluated too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from helpers import REPO
from pantheros import manifest as manifests

NIX_FILES = sorted(
    p for p in REPO.rglob("*.nix") if ".venv" not in p.parts and ".git" not in p.parts
)
NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
IMPERMANENCE = os.environ.get("PANTHEROS_IMPERMANENCE")

needs_nix = pytest.mark.skipif(
    shutil.which("nix-instantiate") is None, reason="needs nix-instantiate (Debian nix-bin)"
)
needs_lib = pytest.mark.skipif(
    not NIXPKGS_LIB or not Path(NIXPKGS_LIB, "lib").is_dir() or not shutil.which("nix-instantiate"),
    reason="module evaluation needs nix-instantiate and PANTHEROS_NIXPKGS_LIB (a nixpkgs lib)",
)


@needs_nix
@pytest.mark.parametrize("path", NIX_FILES, ids=lambda p: str(p.relative_to(REPO)))
@pytest.mark.scenario("nixos-semantics: Every Nix file parses")
def test_every_nix_file_parses(path: Path) -> None:
    proc = subprocess.run(
        ["nix-instantiate", "--parse", str(path)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.scenario("nixos-semantics: The flake exports what users import")
def test_the_flake_exports_what_users_import() -> None:
    flake = (REPO / "flake.nix").read_text()
    for name in ["storage", "impermanence", "security", "roles", "default"]:
        assert f"{name} =" in flake or f"{name} ;" in flake
    for output in [
        "nixosModules",
        "nixosConfigurations",
        "packages",
        "templates",
        "checks",
        "formatter",
    ]:
        assert f"{output} =" in flake
    for check in ["rollback", "retention", "diff", "audit"]:
        assert (REPO / "nix" / "tests" / f"{check}.nix").exists()
        assert f"./nix/tests/{check}.nix" in flake


def evaluate(
    tmp_path: Path, host: str, attr: str | None = None
) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "host.nix"
    module.write_text(textwrap.dedent(host))
    argv = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        str(REPO / "nix" / "eval.nix"),
        "--argstr",
        "nixpkgsLib",
        str(NIXPKGS_LIB),
        "--arg",
        "host",
        str(module),
    ]
    if IMPERMANENCE:
        argv += ["--argstr", "impermanence", IMPERMANENCE]
    if attr:
        argv += ["-A", attr]
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def evaluated(tmp_path: Path, host: str) -> dict[str, Any]:
    proc = evaluate(tmp_path, host)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


BASE = """
{ ... }: {
  networking.hostName = "demo";
  boot.initrd.systemd.enable = true;
  pantheros.storage.enable = true;
  pantheros.impermanence.enable = true;
  %s
}
"""


@needs_lib
def test_default_host_evaluates_to_the_layout(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "")
    assert out["failedAssertions"] == []
    fs = out["fileSystems"]
    assert fs["/"]["options"] == ["compress=zstd", "noatime", "subvol=root"]
    assert fs["/"]["device"] == "/dev/disk/by-label/pantheros"
    assert fs["/persist"]["neededForBoot"] is True
    assert fs["/var/log"]["neededForBoot"] is True
    assert fs["/home"]["neededForBoot"] is False
    assert fs["/boot"]["fsType"] == "vfat"


@needs_lib
@pytest.mark.parametrize(
    ("policy", "required"), [("boot-dirty", []), ("fail-closed", ["sysroot.mount"])]
)
@pytest.mark.scenario("nixos-modules: Unit ordering and fail policy")
def test_rollback_unit_ordering_and_fail_policy(
    tmp_path: Path, policy: str, required: list[str]
) -> None:
    out = evaluated(tmp_path, BASE % f'pantheros.impermanence.failPolicy = "{policy}";')
    unit = out["rollbackUnit"]
    device = "dev-disk-by\\x2dlabel-pantheros.device"
    assert unit["after"] == [device, "systemd-hibernate-resume.service"]
    assert unit["before"] == ["sysroot.mount"]
    assert unit["requires"] == [device]
    assert unit["wantedBy"] == ["initrd.target"]
    assert unit["requiredBy"] == required
    assert unit["unitConfig"]["DefaultDependencies"] is False
    assert (
        "panther rollback --manifest /etc/pantheros/manifest.json"
        in unit["serviceConfig"]["ExecStart"]
    )


@needs_lib
def test_luks_orders_the_rollback_after_cryptsetup(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "pantheros.storage.luks.enable = true;")
    unit = out["rollbackUnit"]
    assert "systemd-cryptsetup@cryptroot.service" in unit["after"]
    assert unit["requires"] == ["dev-mapper-cryptroot.device"]
    assert out["fileSystems"]["/"]["device"] == "/dev/mapper/cryptroot"
    assert out["luks"]["cryptroot"]["device"] == "/dev/disk/by-partlabel/pantheros"
    assert manifests.load_document(out["manifest"]).storage.luks is not None


@needs_lib
@pytest.mark.parametrize(
    ("level", "key", "value"),
    [
        ("baseline", "kernel.kptr_restrict", 1),
        ("hardened", "kernel.kptr_restrict", 2),
        ("strict", "kernel.yama.ptrace_scope", 3),
        ("hardened", "kernel.yama.ptrace_scope", 1),
    ],
)
@pytest.mark.scenario("security-audit: Level sets sysctls from the table")
def test_security_level_sets_sysctls_from_the_table(
    tmp_path: Path, level: str, key: str, value: int
) -> None:
    out = evaluated(tmp_path, BASE % f'pantheros.security.level = "{level}";')
    assert out["sysctl"][key] == value
    table = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
    check = next(c for c in table["checks"] if c.get("key") == key)
    assert check["levels"][level]["set"] == value


@needs_lib
def test_hardened_adds_kernel_params_modules_and_ssh(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % 'pantheros.security.level = "hardened";')
    assert "slab_nomerge" in out["kernelParams"]
    assert "cramfs" in out["blacklistedKernelModules"]
    assert out["sshSettings"]["PermitRootLogin"] == "no"
    assert out["sshSettings"]["PasswordAuthentication"] is False


@needs_lib
def test_a_waiver_drops_its_check_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    waived = 'pantheros.security.waivers."sysctl.kernel.kptr_restrict".reason = "kernel dev box";'
    out = evaluated(tmp_path, BASE % waived)
    assert "kernel.kptr_restrict" not in out["sysctl"]
    assert out["manifest"]["security"]["waivers"] == {
        "sysctl.kernel.kptr_restrict": {"reason": "kernel dev box"}
    }
    out = evaluated(tmp_path, BASE % 'pantheros.security.waivers."sysctl.bogus".reason = "x";')
    assert any('unknown check id "sysctl.bogus"' in m for m in out["failedAssertions"])


@needs_lib
def test_manifest_validates_against_the_schema(tmp_path: Path) -> None:
    out = evaluated(
        tmp_path,
        BASE
        % """
      pantheros.impermanence.directories = [
        { directory = "/var/lib/app"; user = "app"; mode = "0700"; }
      ];
      pantheros.impermanence.retention = { keepMin = 4; maxCount = 9; };
    """,
    )
    manifest = manifests.load_document(out["manifest"], "nix")
    assert manifest.host == "demo"
    assert manifest.impermanence.retention.keep_min == 4
    assert manifest.impermanence.retention.max_count == 9
    entry = next(e for e in manifest.persistence if e.path == "/var/lib/app")
    assert (entry.kind, entry.user, entry.mode) == ("directory", "app", "0700")
    assert {e.path for e in manifest.persistence} >= {"/var/lib/nixos", "/etc/machine-id"}
    assert manifest.storage.root.name == "root"


@needs_lib
def test_persistence_file_entries_are_declared(tmp_path: Path) -> None:
    data = tmp_path / "persistence.json"
    data.write_text(
        json.dumps(
            {
                "version": 1,
                "directories": [{"directory": "/var/lib/from-file"}],
                "files": [{"file": "/etc/from-file.conf", "mode": "0600"}],
            }
        )
    )
    out = evaluated(tmp_path, BASE % f"pantheros.impermanence.persistenceFile = {data};")
    paths = {e["path"]: e for e in out["manifest"]["persistence"]}
    assert paths["/var/lib/from-file"]["mode"] == "0755"
    assert paths["/etc/from-file.conf"]["mode"] == "0600"
    if IMPERMANENCE:
        dirs = [d["directory"] for d in out["persistence"]["/persist"]["directories"]]
        assert "/var/lib/from-file" in dirs
        assert "/etc/from-file.conf" in out["persistence"]["/persist"]["files"]


@needs_lib
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("boot.initrd.systemd.enable = false;", "set boot.initrd.systemd.enable = true"),
        ('pantheros.impermanence.directories = [ "/var/log/journal" ];', "/var/log/journal"),
        (
            "pantheros.storage.subvolumes.persist.neededForBoot = false;",
            "must be mounted in the initrd",
        ),
        (
            'pantheros.storage.subvolumes.home.role = "root";',
            'exactly one subvolume with role \\"root\\"',
        ),
    ],
)
@pytest.mark.scenario("nixos-modules: What would break boot fails evaluation")
def test_what_would_break_boot_fails_evaluation(tmp_path: Path, setting: str, message: str) -> None:
    host = BASE.replace("boot.initrd.systemd.enable = true;", "") if "systemd" in setting else BASE
    out = evaluated(tmp_path, host % setting)
    assert any(message.replace('\\"', '"') in m for m in out["failedAssertions"]), out[
        "failedAssertions"
    ]


@needs_lib
@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ("pantheros.impermanence.enabel = true;", "does not exist"),
        ('pantheros.impermanence.retention.keepMin = "three";', "is not of type"),
        ('pantheros.security.level = "paranoid";', "is not of type"),
        ('pantheros.impermanence.failPolicy = "ignore";', "is not of type"),
    ],
)
@pytest.mark.scenario("nixos-semantics: Typo or wrong type fails")
def test_typos_and_wrong_types_are_rejected(tmp_path: Path, setting: str, error: str) -> None:
    proc = evaluate(tmp_path, BASE % setting, attr="manifest")
    assert proc.returncode != 0
    assert error in proc.stderr


@needs_lib
@pytest.mark.parametrize("role", ["workstation", "server"])
def test_roles(tmp_path: Path, role: str) -> None:
    out = evaluated(tmp_path, BASE % f'pantheros.role = "{role}";')
    manifest = manifests.load_document(out["manifest"])
    expected = {"workstation": ("hardened", "boot-dirty"), "server": ("strict", "fail-closed")}[
        role
    ]
    assert (manifest.security.level, manifest.impermanence.fail_policy.value) == expected


@needs_lib
@pytest.mark.parametrize("host", ["workstation", "server", "vm"])
def test_example_hosts_evaluate(tmp_path: Path, host: str) -> None:
    out = evaluated(tmp_path, f"{{ ... }}: {{ imports = [ {REPO}/hosts/{host}/default.nix ]; }}")
    assert out["failedAssertions"] == []
    manifest = manifests.load_document(out["manifest"], host)
    assert manifest.host == host


@needs_lib
def test_options_doc_is_current() -> None:
    env = {**os.environ, "PANTHEROS_NIXPKGS_LIB": str(NIXPKGS_LIB)}
    proc = subprocess.run(
        [str(REPO / "scripts" / "gen-options"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
