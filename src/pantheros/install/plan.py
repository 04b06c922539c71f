"""What `panther install` knows of a host before it touches anything: the host's install plan
(`pantheros.install.plan`, read with `nix eval`), checked, and shown as the user reviews it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import manifest as manifests
from pantheros import process
from pantheros.errors import PantherError, UsageError
from pantheros.manifest import Manifest
from pantheros.manifest.models import Role

PLAN_VERSION = 1
# user@host or host; never an option (it reaches ssh's command line).
TARGET = re.compile(r"([A-Za-z0-9._-]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.:_-]*)")
STORE_SOURCE = re.compile(r"/nix/store/[0-9a-z]{32}-[^/]+/(.+)")


@dataclass(frozen=True)
class HostPlan:
    """What the host declares that an install needs."""

    host: str
    manifest: Manifest
    disko: bool
    luks_passphrase_file: str | None
    # nixos-facter's report as a path in the flake (relative), and whether it is there.
    hardware_report: str | None
    hardware_report_present: bool

    @property
    def disk(self) -> str:
        device = self.manifest.storage.device
        assert device is not None, "checked when the plan is read"
        return device


def eval_argv(flake: str, host: str) -> list[str]:
    attr = f'nixosConfigurations."{host}".config.pantheros.install.plan'
    return [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        f"{flake}#{attr}",
    ]


def read(flake: str, host: str) -> HostPlan:
    """The host's plan, evaluated by Nix from the flake at flake."""
    proc = process.run(eval_argv(flake, host), check=False)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        detail = next(
            (line for line in lines if "error" in line.lower()), lines[-1] if lines else ""
        )
        raise PantherError(
            f"nix eval of host {host} failed: {detail.strip()} (a new host must be known to git: "
            f"git add hosts/{host})"
        )
    try:
        doc = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise PantherError(f"nix eval of host {host}: not JSON: {exc.msg}") from None
    return load(doc, host, Path(flake))


def load(doc: Any, host: str, flake: Path) -> HostPlan:
    """Check the plan document and the manifest in it; refuse what cannot be installed."""
    if not isinstance(doc, dict) or doc.get("version") != PLAN_VERSION:
        raise UsageError(
            f"host {host}: its pantheros.install.plan is not version {PLAN_VERSION} (is the "
            "flake's PantherOS as new as this panther?)"
        )
    manifest = manifests.load_document(doc.get("manifest"), f"host {host}")
    if not doc.get("disko"):
        raise UsageError(
            f"host {host} does not import disko's module: add inputs.disko.nixosModules.disko to "
            "its modules (the flake's hosts do), so that its layout is disko's"
        )
    storage = manifest.storage
    if storage.device is None:
        raise UsageError(f"host {host}: pantheros.storage.device is not set")
    passphrase_file = doc.get("luks_passphrase_file")
    if storage.luks is not None and not passphrase_file:
        raise UsageError(
            f"host {host}: set pantheros.storage.luks.passphraseFile (for example "
            '"/tmp/pantheros-disk.key"): nixos-anywhere sends the passphrase there for disko, '
            "which would otherwise ask for it on the target"
        )
    if manifest.persist is None or storage.by_role(Role.ROOT) is None:
        raise UsageError(f"host {host}: the layout has no root or persist subvolume")
    report = doc.get("hardware_report")
    return HostPlan(
        host=host,
        manifest=manifest,
        disko=True,
        luks_passphrase_file=passphrase_file if storage.luks is not None else None,
        hardware_report=None if report is None else flake_path(str(report), flake),
        hardware_report_present=bool(doc.get("hardware_report_present")),
    )


def flake_path(path: str, flake: Path) -> str:
    """A path Nix gave (in the store copy of the flake, or in the flake itself) as a path
    relative to the flake's directory."""
    found = STORE_SOURCE.fullmatch(path)
    if found:
        return found.group(1)
    try:
        return str(Path(path).relative_to(flake.resolve()))
    except ValueError:
        raise UsageError(f"the hardware report {path} is not in the flake at {flake}") from None


def check_target(target: str) -> str:
    """The address part of target (user@address), which names the machine in known_hosts."""
    if not TARGET.fullmatch(target):
        raise UsageError(f"--target {target!r}: give root@ADDRESS (or ADDRESS)")
    return target.rsplit("@", 1)[-1]


def layout_lines(manifest: Manifest) -> list[str]:
    """The layout, as the plan shows it."""
    st = manifest.storage
    lines = ["GPT partition table:"]
    number = 1
    if st.esp:
        lines.append(
            f"  {number}. {st.esp.label}: {st.esp.size_mib} MiB, EFI system partition, vfat "
            f"labelled {st.esp.label}, mounted at {st.esp.mountpoint}"
        )
        number += 1
    if st.luks:
        inner = (
            f"LUKS2 labelled {st.luks.label or '(none)'}, opened as {st.luks.name} "
            "(the passphrase is asked at every boot), holding "
        )
    else:
        inner = ""
    lines.append(
        f"  {number}. {st.partition_label}: the rest of the disk, {inner}btrfs labelled "
        f"{st.btrfs_label}"
    )
    lines.append(f"btrfs subvolumes (mount options {','.join(st.btrfs_mount_options)}):")
    for sub in st.ordered_subvolumes():
        extra = ",".join(sub.mount_options)
        note = (
            f", rolled back at every boot from the read-only {st.blank_snapshot}"
            if sub.role is Role.ROOT
            else ""
        )
        lines.append(
            f"  {sub.name} -> {sub.mountpoint}{' (+' + extra + ')' if extra else ''}"
            f"{' (in the initrd)' if sub.needed_for_boot else ''}{note}"
        )
    lines.append(f"  old roots are kept in {st.old_roots}/")
    return lines
