"""What one boot of the lab VM is: its configuration, as a NixOS generation would carry it.

On NixOS, a generation holds the machine's /etc (fstab, sysctl, modprobe, sshd, the manifest)
and its kernel command line, and activation puts /etc in place before systemd starts. The lab's
Debian does the same from its initramfs: `lab boot` writes the configuration of this boot (the
lab's manifest with the entries of persistence.json, the hardening level's settings from
data/hardening.json, the firewall) into the initramfs overlay, and an initrd unit copies it into
the fresh root after the boot step and the root's mount, before /persist is mounted and before
the switch to the root. A second initrd unit keeps the machine-id in /persist (made at the first
boot) and bind-mounts it, so systemd reads it from its first instruction on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from pantheros import manifest as manifests
from pantheros.lab.guestos import USER
from pantheros.lab.initrd import Overlay, add_lab_basics
from pantheros.manifest.models import PersistenceEntry

LEVELS = ("baseline", "hardened", "strict")
GENERATION = "usr/lib/pantheros-lab/generation"
AUTHORIZED_KEYS = "etc/pantheros/lab/authorized_keys"
TPM2_ENROLL = "etc/pantheros/lab/tpm2-enroll"
# The login user's key, kept in /persist like the host keys and the machine-id.
CREDENTIALS = (PersistenceEntry("/etc/ssh/authorized_keys.d", "directory", "root", "root", "0755"),)
# What every lab boot puts on the kernel command line (the serial console is the lab's log).
BASE_CMDLINE = ("console=ttyS0", "systemd.log_color=0")
FIREWALL = """\
#!/usr/sbin/nft -f
# PantherOS lab: default-deny input (the level's firewall.enabled); SSH and DHCP let in.
flush ruleset
table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iif lo accept
    meta l4proto { 1, 58 } accept  # icmp, ipv6-icmp (no /etc/protocols here)
    tcp dport 22 accept
    udp dport 68 accept
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
  }
}
"""
ACTIVATE_UNIT = """\
[Unit]
Description=PantherOS lab: activate this boot's configuration in the new root
DefaultDependencies=no
Requires=sysroot.mount
After=sysroot.mount
Before=initrd-root-fs.target initrd-parse-etc.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/cp -a /usr/lib/pantheros-lab/generation/. /sysroot/

[Install]
WantedBy=initrd-root-fs.target
"""
IDENTITY_UNIT = """\
[Unit]
Description=PantherOS lab: the machine-id and the login key, kept in /persist
DefaultDependencies=no
After=initrd-fs.target
Before=initrd.target
RequiresMountsFor={persist}

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/bash /usr/lib/pantheros-lab/identity

[Install]
WantedBy=initrd.target
"""
# Runs in the initrd (bash, coreutils, mount): the first boot makes the machine-id and seeds the
# login key in /persist; every boot binds the machine-id over the root's (an empty file there).
IDENTITY_SCRIPT = """\
set -euo pipefail
persist=/sysroot{persist}
mkdir -p "$persist/etc"
if [[ ! -s "$persist/etc/machine-id" ]]; then
  id=$(tr -d '\\n-' </proc/sys/kernel/random/uuid)
  printf '%s\\n' "$id" >"$persist/etc/machine-id.new"
  chmod 0444 "$persist/etc/machine-id.new"
  mv "$persist/etc/machine-id.new" "$persist/etc/machine-id"
  echo "pantheros-lab: made the machine-id in {persist}/etc/machine-id"
fi
[[ -e /sysroot/etc/machine-id ]] || : >/sysroot/etc/machine-id
mount --bind "$persist/etc/machine-id" /sysroot/etc/machine-id
keys="$persist/etc/ssh/authorized_keys.d"
if [[ ! -e "$keys/{user}" && -s /sysroot/{authorized_keys} ]]; then
  mkdir -p "$keys"
  cp /sysroot/{authorized_keys} "$keys/{user}.new"
  chmod 0644 "$keys/{user}.new"
  mv "$keys/{user}.new" "$keys/{user}"
  echo "pantheros-lab: the login key of {user} is in {persist}/etc/ssh/authorized_keys.d"
fi
# D90's rule: a password hash comes from /persist at every boot, never from the root's shadow.
password="$persist/secrets/passwords/{user}"
if [[ -s "$password" ]]; then
  read -r hash <"$password"
  if [[ -n "$hash" && "$hash" != *:* ]]; then
    new=/sysroot/etc/shadow.pantheros-new
    while IFS= read -r line || [[ -n "$line" ]]; do
      if [[ "$line" == "{user}:"* ]]; then
        rest="${{line#{user}:}}"
        line="{user}:$hash:${{rest#*:}}"
      fi
      printf '%s\n' "$line"
    done </sysroot/etc/shadow >"$new"
    chmod --reference=/sysroot/etc/shadow "$new"
    chown --reference=/sysroot/etc/shadow "$new"
    mv "$new" /sysroot/etc/shadow
  fi
fi
"""


def hardening_table() -> dict[str, Any]:
    text = (resources.files("pantheros") / "data" / "hardening.json").read_text()
    table: dict[str, Any] = json.loads(text)
    return table


@dataclass(frozen=True)
class Level:
    """One hardening level's settings, as the table sets them (its `set` values)."""

    name: str
    sysctls: dict[str, Any]
    cmdline: tuple[str, ...]
    modules_off: tuple[str, ...]
    mounts: dict[str, tuple[str, ...]]
    ssh: dict[str, Any]
    features: frozenset[str]

    @classmethod
    def of(cls, name: str) -> Level:
        sysctls: dict[str, Any] = {}
        cmdline: list[str] = []
        modules: list[str] = []
        mounts: dict[str, tuple[str, ...]] = {}
        ssh: dict[str, Any] = {}
        features: set[str] = set()
        for check in hardening_table()["checks"]:
            setting = check["levels"].get(name)
            if setting is None or "set" not in setting:
                continue
            value = setting["set"]
            area = check["area"]
            if area == "sysctl":
                sysctls[check["key"]] = value
            elif area == "cmdline" and value is True:
                cmdline.append(check["param"])
            elif area == "module" and value == "disabled":
                modules.append(check["module"])
            elif area == "mount":
                mounts[check["path"]] = tuple(value)
            elif area == "ssh":
                ssh[check["key"]] = value
            elif value is True:
                features.add(check["id"])
        return cls(name, sysctls, tuple(cmdline), tuple(modules), mounts, ssh, frozenset(features))

    def kernel_params(self) -> list[str]:
        params = list(self.cmdline)
        if "mac.apparmor" in self.features:
            params += ["apparmor=1", "security=apparmor"]
        return params


def _ssh_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class Boot:
    """The inputs of one boot's configuration."""

    manifest: dict[str, Any]  # the lab's manifest.json, as JSON
    level: str
    persistence: tuple[PersistenceEntry, ...]  # what persistence.json adds
    authorized_key: str
    tpm2: bool

    def machine_manifest(self) -> dict[str, Any]:
        """The lab's manifest as the VM's /etc/pantheros/manifest.json: the level of this boot,
        and persistence.json's entries and the lab's credentials declared beside the manifest's
        (what the NixOS module writes from its options)."""
        data: dict[str, Any] = json.loads(json.dumps(self.manifest))
        data["security"]["level"] = self.level
        declared = {entry["path"] for entry in data["persistence"]}
        for entry in (*self.persistence, *CREDENTIALS):
            if entry.path not in declared:
                declared.add(entry.path)
                data["persistence"].append(
                    {
                        "path": entry.path,
                        "kind": entry.kind,
                        "user": entry.user,
                        "group": entry.group,
                        "mode": entry.mode,
                    }
                )
        manifests.loads(json.dumps(data), "the lab VM's manifest")  # checked as a host would
        return data

    def storage(self) -> manifests.Manifest:
        return manifests.loads(json.dumps(self.manifest), "the lab's manifest")

    def device(self) -> str:
        """The btrfs device, as NixOS names it (nix/modules/storage.nix)."""
        storage = self.storage().storage
        if storage.luks:
            return storage.luks.mapper_path
        return f"/dev/disk/by-label/{storage.btrfs_label}"

    def persist_mountpoint(self) -> str:
        persist = self.storage().persist
        assert persist is not None, "a lab manifest has a persist subvolume"
        return persist.mountpoint

    def fstab(self, level: Level) -> str:
        storage = self.storage().storage
        lines = ["# PantherOS lab: this boot's fstab (written by the initrd's activation)"]
        for sv in storage.ordered_subvolumes():
            options = storage.mount_options_for(sv)
            if sv.needed_for_boot:
                options.append("x-initrd.mount")  # NixOS's neededForBoot: mounted in the initrd
            lines.append(f"{self.device()} {sv.mountpoint} btrfs {','.join(options)} 0 0")
        if storage.esp:
            options = ["umask=0077", *level.mounts.get(storage.esp.mountpoint, ()), "nofail"]
            lines.append(
                f"/dev/disk/by-label/{storage.esp.label} {storage.esp.mountpoint} vfat "
                f"{','.join(options)} 0 0"
            )
        if "/tmp" in level.mounts:
            lines.append(f"tmpfs /tmp tmpfs mode=1777,{','.join(level.mounts['/tmp'])} 0 0")
        if "/dev/shm" in level.mounts:
            lines.append(f"tmpfs /dev/shm tmpfs {','.join(level.mounts['/dev/shm'])} 0 0")
        if "/proc" in level.mounts:
            lines.append(f"proc /proc proc {','.join(level.mounts['/proc'])} 0 0")
        return "\n".join(lines) + "\n"

    def kernel_cmdline(self) -> str:
        storage = self.storage().storage
        flags = ",".join(storage.mount_options_for(storage.root))
        words = [f"root={self.device()}", "rootfstype=btrfs", f"rootflags={flags}", "rw"]
        return " ".join([*words, *BASE_CMDLINE, *Level.of(self.level).kernel_params()])

    def files(self) -> dict[str, tuple[int, str]]:
        """The generation: files for the VM's root, by path (relative to /)."""
        level = Level.of(self.level)
        host = self.storage().host
        files: dict[str, tuple[int, str]] = {
            "etc/pantheros/manifest.json": (
                0o644,
                json.dumps(self.machine_manifest(), indent=2) + "\n",
            ),
            "etc/hostname": (0o644, host + "\n"),
            "etc/hosts": (0o644, f"127.0.0.1 localhost\n127.0.1.1 {host}\n::1 localhost\n"),
            "etc/fstab": (0o644, self.fstab(level)),
            "etc/nftables.conf": (0o755, FIREWALL),
        }
        if self.authorized_key.strip():
            files[AUTHORIZED_KEYS] = (0o644, self.authorized_key.strip() + "\n")
        if level.sysctls:
            text = "".join(f"{key} = {_ssh_value(v)}\n" for key, v in level.sysctls.items())
            # Last of all sysctl.d files by name (Debian's protect-links.conf sets one of these).
            files["etc/sysctl.d/zz-pantheros-hardening.conf"] = (0o644, text)
        if level.modules_off:
            text = "".join(f"install {m} /bin/false\nblacklist {m}\n" for m in level.modules_off)
            files["etc/modprobe.d/pantheros-hardening.conf"] = (0o644, text)
        if level.ssh:
            text = "".join(f"{key} {_ssh_value(v)}\n" for key, v in level.ssh.items())
            # sshd takes the first value it reads for a key: this file comes first.
            files["etc/ssh/sshd_config.d/00-pantheros-hardening.conf"] = (0o644, text)
        if self.tpm2:
            files[TPM2_ENROLL] = (0o644, "PCR 7\n")
        return files

    def links(self) -> dict[str, str]:
        level = Level.of(self.level)
        if "audit.auditd" in level.features:
            wants = "etc/systemd/system/multi-user.target.wants"
            return {f"{wants}/auditd.service": "/lib/systemd/system/auditd.service"}
        return {}

    def add_to(self, overlay: Overlay) -> None:
        """The generation and the two initrd units that put it in place."""
        add_lab_basics(overlay)
        for path, (mode, text) in self.files().items():
            overlay.add(f"{GENERATION}/{path}", text, mode)
        for path, target in self.links().items():
            overlay.link(f"{GENERATION}/{path}", target)
        system = "etc/systemd/system"
        overlay.add(f"{system}/pantheros-lab-activate.service", ACTIVATE_UNIT)
        overlay.link(
            f"{system}/initrd-root-fs.target.wants/pantheros-lab-activate.service",
            "../pantheros-lab-activate.service",
        )
        persist = self.persist_mountpoint()
        sysroot_persist = str(PurePosixPath("/sysroot") / persist.lstrip("/"))
        overlay.add(
            f"{system}/pantheros-lab-identity.service",
            IDENTITY_UNIT.format(persist=sysroot_persist),
        )
        overlay.link(
            f"{system}/initrd.target.wants/pantheros-lab-identity.service",
            "../pantheros-lab-identity.service",
        )
        overlay.add(
            "usr/lib/pantheros-lab/identity",
            IDENTITY_SCRIPT.format(persist=persist, user=USER, authorized_keys=AUTHORIZED_KEYS),
            0o755,
        )


def crypttab(manifest: manifests.Manifest) -> str:
    """The initrd's /etc/crypttab as NixOS writes it for boot.initrd.luks.devices (the device by
    its partition label), with systemd-cryptsetup trying a TPM2 first when one is enrolled."""
    luks = manifest.storage.luks
    assert luks is not None
    options = ["luks", "tpm2-device=auto"] + (["discard"] if luks.allow_discards else [])
    device = f"/dev/disk/by-partlabel/{manifest.storage.partition_label}"
    return f"{luks.name} {device} - {','.join(options)}\n"
