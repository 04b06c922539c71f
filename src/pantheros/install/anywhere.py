"""`panther install HOST --target root@ADDRESS`: nixos-anywhere, called with exactly the
arguments that install the host as it declares itself.

nixos-anywhere (nix-community) logs into the target over SSH, kexecs into a NixOS installer,
uploads the disk encryption key (`--disk-encryption-keys REMOTE LOCAL`, before disko runs), runs
the host's disko script (the layout of pantheros.storage: partitions, LUKS, btrfs, subvolumes and,
by its hook, `panther disk finish`), installs the system, copies `--extra-files` onto the new
root (/mnt, where /mnt/persist is the persistent subvolume) with `--chown` for the owners that
are not root, and reboots. With `--generate-hardware-config nixos-facter PATH` it first writes
the machine's nixos-facter report to PATH in the flake.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pantheros.install.plan import HostPlan
from pantheros.install.stage import Entry

STAGING = "<staging>"


@dataclass(frozen=True)
class Options:
    flake: str
    target: str
    identity: str | None = None


def hardware_report_path(plan: HostPlan, flake: str) -> str | None:
    """Where nixos-anywhere writes the report, when the host reads one and has none yet."""
    if plan.hardware_report is None or plan.hardware_report_present:
        return None
    return str(Path(flake) / plan.hardware_report)


def argv(
    plan: HostPlan,
    options: Options,
    entries: list[Entry],
    tree: str,
    disk_key: str | None,
) -> list[str]:
    """nixos-anywhere's command line (tree and disk_key: the staged paths)."""
    args = [
        "nixos-anywhere",
        "--flake",
        f"{options.flake}#{plan.host}",
        "--target-host",
        options.target,
    ]
    if options.identity:
        args += ["-i", options.identity]
    args += ["--extra-files", tree]
    for entry in entries:
        if entry.chown:
            args += ["--chown", entry.path, entry.chown]
    if plan.luks_passphrase_file is not None:
        assert disk_key is not None, "a LUKS host's key is staged"
        args += ["--disk-encryption-keys", plan.luks_passphrase_file, disk_key]
    report = hardware_report_path(plan, options.flake)
    if report is not None:
        args += ["--generate-hardware-config", "nixos-facter", report]
    return args
