"""The NixOS side: every file parses; the modules evaluate as in NixOS and do their job.

Evaluation needs a nixpkgs lib checkout: PANTHEROS_NIXPKGS_LIB names the directory that holds
`lib/` (for example an extracted nix-community/nixpkgs.lib). nix/eval.nix declares the NixOS
options with NixOS's types and merges (nix/eval/nixos.nix), so what NixOS rejects fails here too.
PANTHEROS_IMPERMANENCE may name a nix-community/impermanence checkout, whose real module is then
evaluated, imported as its flake exports it, instead of a declaration of its options. The same
evaluation over NixOS's own module files is tests/nix/test_real_modules.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pantheros import manifest as manifests
from pantheros.state.persist import hostfile
from tests.helpers import REPO, eval_host_argv, nix_eval_json

NIX_FILES = sorted(
    p for p in REPO.rglob("*.nix") if ".venv" not in p.parts and ".git" not in p.parts
)
NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
IMPERMANENCE = os.environ.get("PANTHEROS_IMPERMANENCE")
TABLE = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
LEVELS: list[str] = TABLE["levels"]
HOSTS = ["workstation", "server", "vm"]
GENERATED = REPO / "nix" / "generated" / "initrd-units.json"

needs_nix = pytest.mark.skipif(
    shutil.which("nix-instantiate") is None, reason="needs nix-instantiate (Debian nix-bin)"
)
needs_lib = pytest.mark.skipif(
    not NIXPKGS_LIB or not Path(NIXPKGS_LIB, "lib").is_dir() or not shutil.which("nix-instantiate"),
    reason="module evaluation needs nix-instantiate and PANTHEROS_NIXPKGS_LIB (a nixpkgs lib "
    "checkout); CI has none, so only the parse and format tests run there",
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
@needs_nix
def test_the_flake_exports_module_paths() -> None:
    """Paths let NixOS load a module once however often it is imported; no nixpkgs needed.

    None of them brings nix-community/impermanence along (D92): the host imports it.
    """
    expr = f"""
      let
        flake = (import {REPO}/flake.nix).outputs {{
          self = flake;
          nixpkgs = {{ }};
          impermanence.nixosModules.impermanence = throw "a PantherOS module imports upstream";
        }};
        kind = m: if builtins.isPath m then toString m else "not a path";
      in builtins.mapAttrs (_: kind) flake.nixosModules
    """
    exported = nix_eval_json(expr)
    modules = REPO / "nix" / "modules"
    names = ["storage", "impermanence", "security", "roles", "manifest", "users", "default"]
    assert exported == {name: str(modules / f"{name}.nix") for name in names}
    for check in ["rollback", "retention", "diff", "audit"]:
        assert f"./nix/tests/{check}.nix" in (REPO / "flake.nix").read_text()


@pytest.mark.skipif(
    shutil.which("nixfmt") is None,
    reason="needs nixfmt (RFC style), which has no Debian package; `nix fmt` provides it",
)
def test_every_nix_file_is_nixfmt_formatted() -> None:
    proc = subprocess.run(
        ["nixfmt", "--check", *map(str, NIX_FILES)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr


def evaluate(
    tmp_path: Path, host: str, attr: str | None = None, *args: str
) -> subprocess.CompletedProcess[str]:
    module = tmp_path / "host.nix"
    module.write_text(textwrap.dedent(host))
    argv = eval_host_argv(module, *args, attr=attr)
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def evaluated(tmp_path: Path, host: str, *args: str) -> dict[str, Any]:
    proc = evaluate(tmp_path, host, None, *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def rejected(tmp_path: Path, host: str) -> str:
    proc = evaluate(tmp_path, host)
    assert proc.returncode != 0, proc.stdout
    return proc.stderr


# An administrator as D90/D93 want one: an SSH key to log in, a password on /persist for sudo.
ADMIN = """
  users.users.op = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA op@x" ];
    hashedPasswordFile = "/persist/secrets/passwords/op";
  };
"""
BARE = """
{ lib, ... }: {
  networking.hostName = "demo";
  boot.initrd.systemd.enable = true;
  pantheros.storage.enable = true;
  pantheros.impermanence.enable = true;
  %s
}
"""
BASE = BARE.replace("  %s\n", ADMIN.replace("%", "%%") + "  %s\n")
SECURE = BASE % 'pantheros.security.enable = true; pantheros.security.level = "%s"; %s'
SECURE_BARE = BARE % 'pantheros.security.enable = true; pantheros.security.level = "%s"; %s'
BOOTSTEP = "/nix/store/00000000000000000000000000000000-pantheros-bootstep"
DEVICE_UNIT = "dev-disk-by\\x2dlabel-pantheros.device"


def host_module(name: str, extra: str = "") -> str:
    return f"{{ lib, ... }}: {{ imports = [ {REPO}/hosts/{name}/default.nix ]; {extra} }}"


def table_values(area: str, level: str) -> dict[str, Any]:
    return {
        c["key"]: c["levels"][level]["set"]
        for c in TABLE["checks"]
        if c["area"] == area and level in c["levels"]
    }


@needs_lib
def test_default_host_evaluates_to_the_layout(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "")
    assert out["failedAssertions"] == []
    fs = out["fileSystems"]
    # NixOS's fileSystems module adds x-initrd.mount to what stage 1 mounts.
    assert fs["/"]["options"] == ["x-initrd.mount", "compress=zstd", "noatime", "subvol=root"]
    assert fs["/"]["device"] == "/dev/disk/by-label/pantheros"
    assert fs["/persist"]["neededForBoot"] is True
    assert "x-initrd.mount" in fs["/var/log"]["options"]
    assert fs["/home"]["options"] == ["compress=zstd", "noatime", "subvol=home"]
    assert fs["/boot"]["fsType"] == "vfat"
    assert out["supportedFilesystems"] == {"btrfs": True, "vfat": True}
    assert out["loader"] == {"systemdBootLimit": 10, "grubLimit": 10}


@needs_lib
@pytest.mark.parametrize(
    ("policy", "required"), [("boot-dirty", []), ("fail-closed", ["sysroot.mount"])]
)
@pytest.mark.scenario("nixos-modules: Unit ordering and fail policy")
def test_rollback_unit_ordering_and_fail_policy(
    tmp_path: Path, policy: str, required: list[str]
) -> None:
    out = evaluated(tmp_path, BASE % f'pantheros.impermanence.failPolicy = "{policy}";')
    unit = out["initrd"]["services"]["pantheros-rollback"]
    assert unit["after"] == [DEVICE_UNIT, "systemd-hibernate-resume.service"]
    assert unit["before"] == ["sysroot.mount"]
    assert unit["requires"] == [DEVICE_UNIT]
    assert unit["wantedBy"] == ["initrd.target"]
    assert unit["requiredBy"] == required
    assert unit["unitConfig"]["DefaultDependencies"] is False
    assert unit["serviceConfig"]["ExecStart"].split() == [
        f"{BOOTSTEP}/bin/pantheros-btrfs",
        "rollback",
        *("--device", "/dev/disk/by-label/pantheros", "--root", "root"),
        *("--blank", "root-blank", "--old-roots", "old_roots", "--design", "blank-snapshot"),
        *("--keep-min", "3", "--fail-policy", policy),
        *("--report", "/run/pantheros/rollback.report"),
    ]


@needs_lib
@pytest.mark.scenario("nixos-modules: The initrd runs only the boot step")
def test_the_initrd_runs_only_the_boot_step(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "")
    initrd = out["initrd"]
    unit = initrd["services"]["pantheros-rollback"]
    assert initrd["storePaths"] == [BOOTSTEP]
    assert not any("pantheros/" in p or "python" in p for p in initrd["storePaths"])
    assert "python" not in unit["serviceConfig"]["ExecStart"]
    assert "/bin/panther " not in unit["serviceConfig"]["ExecStart"]
    assert unit["serviceConfig"]["TimeoutStartSec"] == "2min"
    assert unit["serviceConfig"]["Type"] == "oneshot"
    assert unit["unitConfig"]["ConditionKernelCommandLine"] == "!pantheros.norollback"
    # The script's tools beyond bash and coreutils: btrfs (its helper takes the lock: no flock).
    assert initrd["extraBin"] == {
        "btrfs": "/nix/store/00000000000000000000000000000000-btrfs-progs/bin/btrfs",
    }
    assert initrd["supportedFilesystems"] == {"btrfs": True}


@needs_lib
def test_stage_two_records_and_warns(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "")
    finish = out["services"]["pantheros-rollback-finish"]
    assert finish["after"] == ["local-fs.target"]
    assert finish["before"] == ["systemd-user-sessions.service"]
    assert finish["wantedBy"] == ["multi-user.target"]
    assert finish["serviceConfig"]["Type"] == "oneshot"
    assert finish["serviceConfig"]["ExecStart"] == (
        "/nix/store/00000000000000000000000000000000-pantheros/bin/panther rollback --finish "
        "--report /run/pantheros/rollback.report"
    )
    assert out["timers"]["pantheros-roots-gc"]["wantedBy"] == ["timers.target"]
    login = out["loginShellInit"]
    assert "/run/pantheros/login-warning" in login
    assert "grep" not in login
    assert "rollback.json" not in login


@needs_lib
def test_luks_orders_the_rollback_after_cryptsetup(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % "pantheros.storage.luks.enable = true;")
    unit = out["initrd"]["services"]["pantheros-rollback"]
    assert "systemd-cryptsetup@cryptroot.service" in unit["after"]
    assert unit["requires"] == ["dev-mapper-cryptroot.device"]
    assert "--device /dev/mapper/cryptroot" in unit["serviceConfig"]["ExecStart"]
    assert out["fileSystems"]["/"]["device"] == "/dev/mapper/cryptroot"
    assert out["luks"]["cryptroot"]["device"] == "/dev/disk/by-partlabel/pantheros"
    assert manifests.load_document(out["manifest"]).storage.luks is not None


@needs_lib
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.scenario("security-audit: Level sets sysctls from the table")
def test_security_level_sets_sysctls_from_the_table(tmp_path: Path, level: str) -> None:
    out = evaluated(tmp_path, SECURE % (level, ""))
    wanted = table_values("sysctl", level)
    assert {k: out["sysctl"][k] for k in wanted} == wanted
    # NixOS's own defaults stay where the table says nothing.
    assert out["sysctl"]["vm.max_map_count"] == 1048576


@pytest.mark.scenario("nixos-semantics: Sysctl default does not clash")
@needs_lib
def test_a_host_overrides_a_hardening_value_with_a_plain_definition(tmp_path: Path) -> None:
    out = evaluated(
        tmp_path,
        SECURE % ("strict", 'boot.kernel.sysctl."kernel.yama.ptrace_scope" = 1;'),
    )
    assert out["sysctl"]["kernel.yama.ptrace_scope"] == 1
    # mkDefault (NixOS's and any profile's) stays below the hardening.
    out = evaluated(
        tmp_path,
        SECURE % ("strict", 'boot.kernel.sysctl."kernel.yama.ptrace_scope" = lib.mkDefault 0;'),
    )
    assert out["sysctl"]["kernel.yama.ptrace_scope"] == 3


@needs_lib
def test_hardened_adds_kernel_params_modules_and_ssh(tmp_path: Path) -> None:
    out = evaluated(tmp_path, SECURE % ("hardened", ""))
    assert "slab_nomerge" in out["kernelParams"]
    assert "cramfs" in out["blacklistedKernelModules"]
    false = "/nix/store/00000000000000000000000000000000-coreutils/bin/false"
    assert f"install cramfs {false}\n" in out["extraModprobeConfig"]
    assert "/bin/false\n" not in out["extraModprobeConfig"].replace(false, "")
    assert out["sshSettings"]["PermitRootLogin"] == "no"
    assert out["sshSettings"]["PasswordAuthentication"] is False
    assert out["sshSettings"]["LogLevel"] == "VERBOSE"


@needs_lib
@pytest.mark.parametrize("level", LEVELS)
def test_tmp_is_nixos_tmpfs_and_noexec_moves_the_build_directory(
    tmp_path: Path, level: str
) -> None:
    out = evaluated(tmp_path, SECURE % (level, ""))
    check = next(c for c in TABLE["checks"] if c["id"] == "mount.tmp")
    if level not in check["levels"]:
        # baseline changes no mount (D94): /tmp stays on the root.
        assert out["tmp"]["useTmpfs"] is False
        assert "/tmp" not in out["fileSystems"]
        assert not [m for m in out["mounts"] if m["name"] == "tmp.mount"]
        return
    wanted = check["levels"][level]["set"]
    nixos_options = [
        *("mode=1777", "strictatime", "rw", "nosuid", "nodev"),
        *("size=50%", "huge=never"),
    ]
    if "noexec" in wanted:
        assert out["tmp"]["useTmpfs"] is False
        options = out["fileSystems"]["/tmp"]["options"]
        assert options == [*nixos_options, "noexec"]
        assert out["services"]["nix-daemon"]["environment"]["TMPDIR"] == "/var/tmp"
    else:
        assert out["tmp"]["useTmpfs"] is True
        assert "/tmp" not in out["fileSystems"]
        [mount] = [m for m in out["mounts"] if m["name"] == "tmp.mount"]
        assert mount["mountConfig"]["Options"].split(",") == nixos_options
        assert set(wanted) <= set(mount["mountConfig"]["Options"].split(","))
        assert "nix-daemon" not in out["services"]


@needs_lib
def test_noexec_tmp_refuses_a_second_tmp_mount(tmp_path: Path) -> None:
    out = evaluated(tmp_path, SECURE % ("strict", "boot.tmp.useTmpfs = true;"))
    assert any("mounts /tmp itself" in m for m in out["failedAssertions"])


@needs_lib
def test_strict_leaves_proc_and_the_login_namespaces_alone(tmp_path: Path) -> None:
    """No hidepid (logind), no ProtectProc on logins (a private mount namespace each): D94."""
    out = evaluated(tmp_path, SECURE % ("strict", "services.openssh.enable = true;"))
    assert not any(o.startswith("hidepid") for o in out["specialFileSystems"]["/proc"]["options"])
    for service in ["getty@", "serial-getty@", "sshd"]:
        assert "ProtectProc" not in out["services"].get(service, {}).get("serviceConfig", {})
    waiver = out["manifest"]["security"]["waivers"]["mount.proc"]["reason"]
    assert "cgroups v2" in waiver
    assert "private mount namespace" in waiver
    # The audit reads the same manifest: the check is reported as waived, with this reason.
    assert manifests.load_document(out["manifest"]).security.waivers["mount.proc"] == waiver


@needs_lib
def test_a_waiver_drops_its_check_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    waived = 'pantheros.security.waivers."sysctl.kernel.kptr_restrict".reason = "kernel dev box";'
    out = evaluated(tmp_path, SECURE % ("baseline", waived))
    assert out["sysctl"]["kernel.kptr_restrict"] == 1  # NixOS's own default, not the table's
    assert out["manifest"]["security"]["waivers"] == {
        "sysctl.kernel.kptr_restrict": {"reason": "kernel dev box"}
    }
    out = evaluated(
        tmp_path, SECURE % ("baseline", 'pantheros.security.waivers."sysctl.bogus".reason = "x";')
    )
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
    assert out["etc"] == ["pantheros/manifest.json"]


@needs_lib
def test_persisted_files_keep_their_mode_and_parents_their_declaration(tmp_path: Path) -> None:
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
    host = f"""
      pantheros.impermanence.persistenceFile = {data};
      pantheros.impermanence.directories = [
        {{ directory = "/var/lib/app"; user = "app"; group = "app"; mode = "0750"; }}
      ];
      pantheros.impermanence.files = [
        {{ file = "/var/lib/app/key"; user = "app"; mode = "0400"; }}
      ];
    """
    out = evaluated(tmp_path, BASE % host)
    paths = {e["path"]: e for e in out["manifest"]["persistence"]}
    assert paths["/var/lib/from-file"]["mode"] == "0755"
    assert paths["/etc/from-file.conf"]["mode"] == "0600"
    # impermanence has no per-file mode: tmpfiles sets it on the persistent copy.
    assert "z /persist/etc/from-file.conf 0600 root root - -" in out["tmpfilesRules"]
    assert "z /persist/var/lib/app/key 0400 app root - -" in out["tmpfilesRules"]
    persisted = out["persistence"]["/persist"]
    assert "/var/lib/from-file" in [d["directory"] for d in persisted["directories"]]
    files = {f["file"]: f["parentDirectory"] for f in persisted["files"]}
    assert files["/var/lib/app/key"] == {"user": "app", "group": "app", "mode": "0750"}
    assert files["/etc/from-file.conf"] == {"user": "root", "group": "root", "mode": "0755"}
    # One table, two readers: panther fills in what the file leaves out as the module does.
    for entry in hostfile.entries(hostfile.read(hostfile.HostFile(data, None))):
        assert dataclasses.asdict(entry) == paths[entry.path]


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
        ('pantheros.storage.subvolumes.home.name = "nix";', "used twice: nix"),
        ('pantheros.storage.oldRoots = "root/old";', "must not overlap"),
        ('pantheros.storage.blankSnapshot = "old_roots/blank";', "must not overlap"),
        ('pantheros.storage.esp.mountPoint = "/home";', "is also a subvolume's mount point"),
        ('pantheros.impermanence.directories = [ "/var" ];', "hold a mount point"),
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
        # Typos, in PantherOS's options and in NixOS's.
        (
            "pantheros.impermanence.enabel = true;",
            "The option `pantheros.impermanence.enabel' does not exist.",
        ),
        (
            "boot.initrd.systemd.storePathz = [ ];",
            "The option `boot.initrd.systemd.storePathz' does not exist.",
        ),
        ("services.opensssh.enable = true;", "The option `services.opensssh' does not exist."),
        # Wrong types.
        ('pantheros.impermanence.retention.keepMin = "three";', "is not of type"),
        ('pantheros.security.level = "paranoid";', "is not of type"),
        ('pantheros.impermanence.directories = [ "/var/lib/../etc" ];', "is not of type"),
        ('pantheros.impermanence.files = [ "/etc//x" ];', "is not of type"),
        ("pantheros.impermanence.retention.maxCount = 100001;", "is not of type"),
        (
            'boot.kernel.sysctl."kernel.kptr_restrict" = [ 7 ];',
            "is not of type `sysctl option value'",
        ),
        ('services.openssh.settings.PermitRootLogin = "maybe";', "is not of type `one of"),
        ('fileSystems."/data".options = "noatime";', "is not of type `non-empty (list of"),
        (
            'boot.initrd.systemd.services.x.serviceConfig.Type = "sometimes";',
            "boot.initrd.systemd.services.x.serviceConfig' is not of type",
        ),
    ],
)
@pytest.mark.scenario("nixos-semantics: The flake exports what users import")
@pytest.mark.scenario("nixos-modules: Typos, wrong types and priority clashes fail as in NixOS")
@pytest.mark.scenario("nixos-semantics: Typo or wrong type fails")
def test_typos_and_wrong_types_fail_as_in_nixos(tmp_path: Path, setting: str, error: str) -> None:
    assert error in rejected(tmp_path, BASE % setting)


@needs_lib
@pytest.mark.scenario("nixos-modules: Typos, wrong types and priority clashes fail as in NixOS")
def test_a_priority_clash_fails_as_in_nixos(tmp_path: Path) -> None:
    """Two mkDefault definitions of a sysctl NixOS itself sets (sysctl.nix) collide."""
    stderr = rejected(
        tmp_path, BASE % 'boot.kernel.sysctl."kernel.kptr_restrict" = lib.mkDefault 2;'
    )
    assert (
        'The option `boot.kernel.sysctl."kernel.kptr_restrict"\' is defined multiple times '
        "while it's expected to be unique." in stderr
    )
    # The hardening's own priority (900) collides only with an equal one.
    stderr = rejected(
        tmp_path,
        SECURE % ("baseline", 'boot.kernel.sysctl."fs.suid_dumpable" = lib.mkOverride 900 1;'),
    )
    assert "is defined multiple times while it's expected to be unique" in stderr


@needs_lib
def test_derived_values_are_read_only(tmp_path: Path) -> None:
    stderr = rejected(tmp_path, BASE % 'pantheros.storage.btrfsDevice = "/dev/sda2";')
    assert "The option `pantheros.storage.btrfsDevice' is read-only" in stderr


@needs_lib
@pytest.mark.parametrize("role", ["workstation", "server"])
def test_roles(tmp_path: Path, role: str) -> None:
    extra = (
        'users.users.op = { isNormalUser = true; extraGroups = [ "wheel" ]; '
        'hashedPasswordFile = "/persist/op"; };'
    )
    out = evaluated(tmp_path, BARE % f'pantheros.role = "{role}"; {extra}')
    manifest = manifests.load_document(out["manifest"])
    expected = {"workstation": ("hardened", "boot-dirty"), "server": ("strict", "fail-closed")}[
        role
    ]
    assert (manifest.security.level, manifest.impermanence.fail_policy.value) == expected


@needs_lib
def test_role_persistence_follows_the_services_the_host_runs(tmp_path: Path) -> None:
    out = evaluated(tmp_path, BASE % 'pantheros.role = "workstation";')
    paths = {e["path"] for e in out["manifest"]["persistence"]}
    assert "/etc/NetworkManager/system-connections" in paths
    assert "/var/lib/bluetooth" not in paths
    out = evaluated(
        tmp_path, BASE % 'pantheros.role = "workstation"; hardware.bluetooth.enable = true;'
    )
    assert "/var/lib/bluetooth" in {e["path"] for e in out["manifest"]["persistence"]}


@needs_lib
@pytest.mark.parametrize(
    "users",
    [
        "",
        'users.users.root.openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAA root@x" ];',
        'users.users.nobody2 = { isSystemUser = true; group = "nogroup"; };',
    ],
)
def test_ssh_without_a_way_in_is_refused(tmp_path: Path, users: str) -> None:
    out = evaluated(
        tmp_path, SECURE_BARE % ("hardened", f"services.openssh.enable = true; {users}")
    )
    assert any("the owner would be locked out" in m for m in out["failedAssertions"])


@pytest.mark.scenario("nixos-semantics: Example hosts at every level")
@needs_lib
@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("level", LEVELS)
def test_example_hosts_evaluate_at_every_level(tmp_path: Path, host: str, level: str) -> None:
    out = evaluated(
        tmp_path, host_module(host, f'pantheros.security.level = lib.mkForce "{level}";')
    )
    assert out["failedAssertions"] == []
    manifest = manifests.load_document(out["manifest"], host)
    assert (manifest.host, manifest.security.level) == (host, level)
    sysctls = table_values("sysctl", level)
    assert {k: out["sysctl"][k] for k in sysctls} == sysctls
    ssh = table_values("ssh", level)
    assert {k: out["sshSettings"][k] for k in ssh} == ssh
    unit = out["initrd"]["services"]["pantheros-rollback"]
    policy = manifest.impermanence.fail_policy.value
    assert f"--fail-policy {policy}" in unit["serviceConfig"]["ExecStart"]
    assert unit["requiredBy"] == (["sysroot.mount"] if policy == "fail-closed" else [])
    assert out["initrd"]["storePaths"] == [BOOTSTEP]
    assert out["fileSystems"]["/persist"]["neededForBoot"] is True


@needs_lib
def test_example_server_has_a_way_in_and_persists_only_what_it_runs(tmp_path: Path) -> None:
    out = evaluated(tmp_path, host_module("server"))
    admin = out["users"]["admin"]
    assert "wheel" in admin["extraGroups"]
    assert admin["keys"]
    assert out["sshSettings"]["PermitRootLogin"] == "no"
    paths = {e["path"] for e in out["manifest"]["persistence"]}
    assert not {p for p in paths if p.startswith(("/var/lib/acme", "/var/lib/postgresql"))}
    assert "/etc/ssh/ssh_host_ed25519_key" in paths


@needs_lib
def test_the_template_evaluates(tmp_path: Path) -> None:
    module = f"{{ ... }}: {{ imports = [ {REPO}/templates/host/default.nix ]; }}"
    out = evaluated(tmp_path, module)
    assert out["failedAssertions"] == []
    assert manifests.load_document(out["manifest"], "template").host == "my-host"


@needs_lib
@pytest.mark.parametrize(
    "host",
    [
        '{ ... }: { networking.hostName = "plain"; }',
        "{ ... }: { users.users.bob.isNormalUser = true; services.openssh.enable = true; }",
    ],
)
def test_importing_the_modules_changes_nothing_until_the_host_opts_in(
    tmp_path: Path, host: str
) -> None:
    with_modules = evaluated(tmp_path, host)
    without = evaluated(tmp_path, host, "--arg", "withPantheros", "false")
    assert {k: with_modules[k] for k in without} == without


@needs_lib
@pytest.mark.parametrize(
    ("module", "host", "fact"),
    [
        ("security", 'pantheros.security.enable = true; networking.hostName = "s";', "sysctl"),
        ("storage", 'pantheros.storage.enable = true; networking.hostName = "s";', "fileSystems"),
        (
            "impermanence",
            "boot.initrd.systemd.enable = true; pantheros.storage.enable = true; "
            'pantheros.impermanence.enable = true; networking.hostName = "s";',
            "initrd",
        ),
    ],
)
def test_each_feature_module_works_alone(tmp_path: Path, module: str, host: str, fact: str) -> None:
    out = evaluated(tmp_path, f"{{ ... }}: {{ {host} {ADMIN} }}", "--argstr", "module", module)
    assert out["failedAssertions"] == []
    assert out["etc"] == ["pantheros/manifest.json"]
    manifests.load_document(out["manifest"], module)
    assert out[fact]


@needs_lib
def test_lab_host_storage_is_the_lab_manifest(tmp_path: Path) -> None:
    """The boot tests format a disk from the lab manifest and boot the unit rendered here."""
    out = evaluated(tmp_path, f"{{ ... }}: {{ imports = [ {REPO}/nix/tests/lab-host.nix ]; }}")
    nix = manifests.load_document(out["manifest"], "lab-host.nix")
    lab = manifests.load(REPO / "src/pantheros/data/manifests/lab.json")

    def by_name(storage: Any) -> Any:
        return dataclasses.replace(
            storage, subvolumes=tuple(sorted(storage.subvolumes, key=lambda s: s.name))
        )

    assert by_name(nix.storage) == by_name(lab.storage)
    assert nix.impermanence == lab.impermanence


def rerun(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PANTHEROS_NIXPKGS_LIB": str(NIXPKGS_LIB)}
    return subprocess.run(
        [str(REPO / "scripts" / script), "--check"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


@needs_lib
def test_options_doc_is_current() -> None:
    proc = rerun("gen-options")
    assert proc.returncode == 0, proc.stderr


@needs_lib
def test_generated_initrd_units_are_current() -> None:
    proc = rerun("render-initrd-units")
    assert proc.returncode == 0, proc.stderr


def test_generated_initrd_units_have_the_contract_shape() -> None:
    """What the QEMU boot tests read, checked everywhere (the file is kept in the repository)."""
    document = json.loads(GENERATED.read_text())
    assert set(document) == {"bootstep", "boot-dirty", "fail-closed"}
    assert document["bootstep"].startswith("/nix/store/")
    for policy in ["boot-dirty", "fail-closed"]:
        rendered = document[policy]
        assert set(rendered) == {"units", "wants", "requires"}
        text = rendered["units"]["pantheros-rollback.service"]
        assert text.startswith("[Unit]\n")
        assert "\n[Service]\n" in text
        assert "ConditionKernelCommandLine=!pantheros.norollback\n" in text
        assert "Before=sysroot.mount\n" in text
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        assert exec_start.startswith(
            f"ExecStart={document['bootstep']}/bin/pantheros-btrfs rollback "
        )
        assert f"--fail-policy {policy} " in exec_start
        assert rendered["wants"] == {"initrd.target": ["pantheros-rollback.service"]}
    assert document["boot-dirty"]["requires"] == {}
    assert document["fail-closed"]["requires"] == {"sysroot.mount": ["pantheros-rollback.service"]}


VM_TESTS = ["rollback", "retention", "diff", "audit"]


@needs_lib
def test_the_vm_tests_pantheros_settings_evaluate(tmp_path: Path) -> None:
    """The settings nix/tests/lib.nix boots (the VM tests themselves need nixpkgs to evaluate)."""
    host = f"""
      {{ ... }}: {{
        imports = [ (import {REPO}/nix/tests/lib.nix {{ pkgs = null; self = null; }}).pantheros ];
        # What NixOS's test driver gives root: a console login without a password.
        users.users.root.initialHashedPassword = "";
        boot.initrd.systemd.enable = true;
        pantheros.storage.enable = true;
        pantheros.impermanence.enable = true;
      }}
    """
    out = evaluated(tmp_path, host)
    assert out["failedAssertions"] == []
    manifest = manifests.load_document(out["manifest"], "nix/tests/lib.nix")
    assert manifest.storage.esp is None
    assert {e.path for e in manifest.persistence} >= {"/var/lib/kept", "/etc/kept.conf"}
    assert "/boot" not in out["fileSystems"]
    assert "z /persist/etc/kept.conf 0600 root root - -" in out["tmpfilesRules"]


@pytest.mark.parametrize("name", VM_TESTS)
def test_vm_tests_boot_pantheros_from_the_second_disk_and_reboot(name: str) -> None:
    """nixpkgs' install-to-a-second-disk pattern: the shared first boot, then reboots."""
    text = (REPO / "nix" / "tests" / f"{name}.nix").read_text()
    assert "pkgs.testers.runNixOSTest" in text
    assert "common.node" in text
    assert "${common.firstBoot}" in text
    reboots = text.count("machine.reboot()")
    loops = [int(n) for n in re.findall(r"for boot in range\((\d+)\)", text)]
    assert reboots >= 1
    assert loops
    assert max(loops) >= 2
    lib = (REPO / "nix" / "tests" / "lib.nix").read_text()
    for needed in ["useBootLoader = true", "mountHostNixStore = true", "panther disk format"]:
        assert needed in lib
    assert "bootctl set-default nixos-generation-1-specialisation-pantheros.conf" in lib


@needs_lib
def test_units_are_written_as_nixos_writes_them(tmp_path: Path) -> None:
    """nix/eval/systemd.nix follows systemd-lib.nix: sorted keys, lists repeat, JSON env."""
    host = """
      { ... }: {
        boot.initrd.systemd.services.pantheros-demo = {
          description = "Demo";
          wantedBy = [ "initrd.target" "sysinit.target" ];
          requiredBy = [ "sysroot.mount" ];
          after = [ "a.service" "b.service" ];
          environment = { GREETING = "hi there"; UNSET = null; };
          unitConfig.DefaultDependencies = false;
          serviceConfig = {
            Type = "oneshot";
            ExecStartPre = [ "/bin/one" "/bin/two" ];
            RemainAfterExit = true;
          };
        };
      }
    """
    units = evaluated(tmp_path, host)["initrdUnits"]
    assert units["units"]["pantheros-demo.service"] == (
        "[Unit]\n"
        "After=a.service b.service\n"
        "DefaultDependencies=false\n"
        "Description=Demo\n"
        "\n"
        "[Service]\n"
        'Environment="GREETING=hi there"\n'
        "ExecStartPre=/bin/one\n"
        "ExecStartPre=/bin/two\n"
        "RemainAfterExit=true\n"
        "Type=oneshot\n"
        "\n"
        "[Install]\n"
        "WantedBy=initrd.target sysinit.target\n"
    )
    assert units["wants"] == {
        "initrd.target": ["pantheros-demo.service"],
        "sysinit.target": ["pantheros-demo.service"],
    }
    assert units["requires"] == {"sysroot.mount": ["pantheros-demo.service"]}


@needs_lib
def test_strict_tmp_takes_nixos_own_options_where_nixos_exposes_them(tmp_path: Path) -> None:
    """Newer NixOS declares boot.tmp.tmpfsFinalOptions; the strict /tmp mount then uses it."""
    newer = """
      options.boot.tmp.tmpfsFinalOptions = lib.mkOption {
        type = lib.types.listOf lib.types.str;
        readOnly = true;
      };
      config.boot.tmp.tmpfsFinalOptions = [ "mode=1777" "rw" "nosuid" "nodev" "size=2G" ];
    """
    module = tmp_path / "newer-nixos.nix"
    module.write_text(f"{{ lib, ... }}: {{ {newer} }}")
    out = evaluated(tmp_path, SECURE % ("strict", f"imports = [ {module} ];"))
    assert out["fileSystems"]["/tmp"]["options"] == [
        *("mode=1777", "rw", "nosuid", "nodev", "size=2G"),
        "noexec",
    ]
