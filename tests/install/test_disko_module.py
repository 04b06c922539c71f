"""pantheros.storage as disko.devices (nix/modules/disko.nix), evaluated with disko's own module.

disko's module (PANTHEROS_DISKO) is imported as its flake exports it; its types make the
scripts and the NixOS file systems from the declaration the storage module writes. Each test
runs on the stand-in and, where PANTHEROS_NIXOS_MODULES is given, over NixOS's own module files
too. Running disko's scripts is tests/install/test_disko_guest.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.install import nixeval

pytestmark = pytest.mark.skipif(
    nixeval.disko_reason() is not None, reason=nixeval.disko_reason() or ""
)
BY_ID = "/dev/disk/by-id/nvme-Example_SSD_S1234"


def _facts(tmp_path: Path, host: str, *, real: bool, disko: bool = True) -> dict[str, Any]:
    out = nixeval.evaluate(tmp_path, host, disko=disko, real=real)
    assert out.get("failedAssertions") == [], out.get("failedAssertions")
    facts: dict[str, Any] = out["facts"]
    facts["diskoScripts"] = out.get("diskoScripts")
    facts["luks"] = out["luks"]
    return facts


def _failed(tmp_path: Path, host: str, *, real: bool = False) -> list[str]:
    out = nixeval.evaluate(tmp_path, host, real=real)
    messages: list[str] = out["failedAssertions"]
    return messages


@pytest.mark.parametrize("real", nixeval.EVALUATORS)
@pytest.mark.parametrize("name", ["server", "workstation", "vm"])
def test_the_file_systems_come_from_disko_and_are_the_layouts(
    tmp_path: Path, name: str, real: bool
) -> None:
    """With disko the file systems are disko's, from the same layout: the same mount points,
    types and options as without it, the devices as disko names them, neededForBoot beside."""
    host = nixeval.example_host(name)
    without = _facts(tmp_path, host, real=real, disko=False)
    with_disko = _facts(tmp_path, host, real=real)
    assert with_disko["warnings"] == []
    assert set(with_disko["fileSystems"]) == set(without["fileSystems"])
    for point, fs in without["fileSystems"].items():
        made = with_disko["fileSystems"][point]
        assert (made["fsType"], made["options"], made["neededForBoot"]) == (
            fs["fsType"],
            fs["options"],
            fs["neededForBoot"],
        ), point
    persist = with_disko["fileSystems"]["/persist"]
    assert persist["neededForBoot"] is True
    luks = name == "workstation"
    btrfs = with_disko["fileSystems"]["/"]["device"]
    esp = with_disko["fileSystems"]["/boot"]["device"]
    assert re.fullmatch(r"/dev/disk/by-partuuid/[0-9a-f-]{36}", esp)
    if luks:
        assert btrfs == "/dev/mapper/cryptroot"
        # One LUKS device in the initrd, on the partition disko formats.
        [(mapping, device)] = with_disko["luks"].items()
        assert mapping == "cryptroot"
        assert device["device"] in with_disko["diskoScripts"]["_create"]
        assert device["allowDiscards"] is True
    else:
        assert re.fullmatch(r"/dev/disk/by-partuuid/[0-9a-f-]{36}", btrfs)
        assert with_disko["luks"] == {}
    # Without disko nothing changed: the layout's own devices.
    assert without["fileSystems"]["/boot"]["device"] == "/dev/disk/by-label/PANTHER-ESP"


def test_disko_declaration_is_the_manifest_layout(tmp_path: Path) -> None:
    """What disko is told: partitions named, typed and sized as `panther disk format` makes
    them, the label, LUKS2, the subvolumes and their options, and the hook."""
    host = nixeval.example_host("workstation", f'pantheros.storage.device = lib.mkForce "{BY_ID}";')
    out = nixeval.evaluate(tmp_path, host)
    create = out["diskoScripts"]["_create"]
    manifest = out["manifest"]
    assert f'sgdisk --clear "{BY_ID}"' in create
    assert re.search(r"--new=1:0:\+512M \\\s+--partition-guid=\"1:[0-9a-f-]{36}\"", create)
    assert '--change-name="1:PANTHER-ESP"' in create
    assert "--typecode=1:ef00" in create
    # To the last usable sector, as panther disk format ends it.
    assert re.search(r"--set-alignment=1 \\\s+--new=2:0:-0 \\\s+--partition-guid=\"2:", create)
    assert '--change-name="2:pantheros"' in create
    assert "--typecode=2:8309" in create
    assert "mkfs.vfat \\\n" in create
    assert "-F 32 -n PANTHER-ESP" in create
    assert "luksFormat" in create
    assert "--type luks2 --label pantheros-luks" in create
    # The passphrase from the file nixos-anywhere sends (`--disk-encryption-keys`).
    assert "cat /tmp/pantheros-disk.key" in create
    assert "--allow-discards" in create
    assert "--persistent" in create
    assert 'mkfs.btrfs "/dev/mapper/cryptroot" --force --label pantheros' in create
    for sub in manifest["storage"]["subvolumes"]:
        assert f'SUBVOL_ABS_PATH="$MNTPOINT/{sub["name"]}"' in create
    hook = create.index("disk finish --manifest - /dev/mapper/cryptroot")
    assert hook > create.index('SUBVOL_ABS_PATH="$MNTPOINT/root"')
    mount = out["diskoScripts"]["_mount"]
    assert "-o compress=zstd -o noatime -o subvol=root" in mount
    assert "-o 'umask=0077'" in mount


def test_the_hook_gets_the_manifest_the_system_installs(tmp_path: Path) -> None:
    out = nixeval.evaluate(tmp_path, nixeval.example_host("server"))
    create = out["diskoScripts"]["_create"]
    found = re.search(r"printf '%s\\n' '(\{.*\})' \\\n", create)
    assert found, create[-2000:]
    assert json.loads(found.group(1)) == out["manifest"]
    assert out["manifest"]["first_boot"]["directories"]


def test_a_luks_host_without_a_passphrase_file_has_disko_ask(tmp_path: Path) -> None:
    host = nixeval.example_host(
        "workstation", "pantheros.storage.luks.passphraseFile = lib.mkForce null;"
    )
    create = nixeval.evaluate(tmp_path, host)["diskoScripts"]["_create"]
    assert "Enter password for" in create
    assert "pantheros-disk.key" not in create


def test_another_definition_of_a_layout_file_system_is_refused(tmp_path: Path) -> None:
    """A hardware-configuration.nix from nixos-generate-config declares / and /boot itself."""
    hardware = tmp_path / "hardware-configuration.nix"
    hardware.write_text(
        '{ ... }: { fileSystems."/" = { device = "/dev/disk/by-uuid/1234"; fsType = "btrfs"; };'
        ' fileSystems."/home".options = [ "compress=zstd" ]; }\n'
    )
    host = nixeval.example_host("server", imports=(hardware,))
    [message] = _failed(tmp_path, host)
    assert '"/" is defined in' in message
    assert '"/home" is defined in' in message
    assert str(hardware) in message
    assert "disko/module.nix" in message
    assert "nixos-generate-config --no-filesystems" in message


def test_the_security_modules_mount_options_are_not_a_second_definition(tmp_path: Path) -> None:
    # strict hardens /boot's mount options (security.nix): on purpose, not refused.
    out = nixeval.evaluate(tmp_path, nixeval.example_host("server"))
    assert out["failedAssertions"] == []
    assert {"nosuid", "nodev", "noexec"} <= set(out["fileSystems"]["/boot"]["options"])


def test_disko_needs_the_disk_named(tmp_path: Path) -> None:
    host = nixeval.example_host("server", "pantheros.storage.device = lib.mkForce null;")
    [message] = _failed(tmp_path, host)
    assert message.startswith("pantheros.storage.device: disko lays out this disk")


def test_with_disko_config_off_the_layout_declares_the_file_systems(tmp_path: Path) -> None:
    """disko.enableConfig = false (an installer image that carries the layout's scripts):
    disko defines no file systems, so pantheros.storage does, once."""
    host = nixeval.example_host("server", "disko.enableConfig = false;")
    out = nixeval.evaluate(tmp_path, host)
    assert out["failedAssertions"] == []
    root = out["fileSystems"]["/"]
    assert root["device"] == "/dev/disk/by-label/pantheros"
    assert root["options"].count("subvol=root") == 1
    assert out["diskoScripts"]["_create"]


def test_partition_guids_are_the_hosts_own(tmp_path: Path) -> None:
    """Fixed by host, disk and partition (a rerun keeps them), different for another host."""

    def guids(name: str) -> list[str]:
        create = nixeval.evaluate(tmp_path, nixeval.example_host("server", name))["diskoScripts"][
            "_create"
        ]
        return re.findall(r'--partition-guid="\d:([0-9a-f-]{36})"', create)

    first = guids('networking.hostName = lib.mkForce "alpha";')
    assert len(set(first)) == 2
    assert guids('networking.hostName = lib.mkForce "alpha";') == first
    assert set(guids('networking.hostName = lib.mkForce "beta";')).isdisjoint(first)
    for guid in first:
        assert guid[14] == "8"
        assert guid[19] == "8"


def test_build_vm_with_disko_leaves_the_boot_alone(tmp_path: Path) -> None:
    """qemu-vm.nix replaces the file systems (mkVMOverride): disko's go with them, and the boot
    is left alone with a warning, as without disko (D95)."""
    out = nixeval.evaluate(tmp_path, nixeval.example_host("vm"), args=("--arg", "qemuVm", "true"))
    assert out["failedAssertions"] == []
    assert out["fileSystems"]["/"]["fsType"] == "ext4"
    assert "/persist" not in out["fileSystems"]
    assert any("not the PantherOS layout" in w for w in out["warnings"])


def test_without_an_esp_the_partition_starts_at_one_mib(tmp_path: Path) -> None:
    host = nixeval.example_host("server", "pantheros.storage.esp.enable = lib.mkForce false;")
    create = nixeval.evaluate(tmp_path, host)["diskoScripts"]["_create"]
    assert "--new=1:1M:-0" in create
    assert "--new=2:" not in create
