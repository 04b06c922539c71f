"""`panther host new NAME`: a host directory of a flake, as the flake's hosts are written.

hosts/NAME/ gets default.nix (the host: its role, its disk by /dev/disk/by-id, LUKS or not, a
login user whose password hash lives on /persist, where nixos-facter's report goes), hardware.nix
(what the report does not cover) and persistence.json (what `panther persist add` records).
The flake imports PantherOS, disko and nix-community/impermanence for every directory under
hosts/. Written into a private directory beside it and renamed into place without replacing
anything, so a host is written whole or not at all.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs
from pantheros.errors import Refused, UsageError

# NixOS's networking.hostName rule (a DNS label), which names the directory too.
NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?")
# The names udev gives under /dev/disk/by-id (odd bytes escaped as \xNN).
BY_ID = re.compile(r"/dev/disk/by-id/([A-Za-z0-9._:+@=,#-]|\\x[0-9a-f]{2})+")
USER = re.compile(r"[a-z_][a-z0-9_-]{0,30}")
SSH_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|"
    r"sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [ -~]*)?"
)
ROLES = ("workstation", "server")
PASSPHRASE_FILE = "/tmp/pantheros-disk.key"  # noqa: S105 - where the passphrase goes, not it
RESERVED_USERS = ("root", "nobody")


@dataclass(frozen=True)
class HostSpec:
    name: str
    disk: str
    role: str
    luks: bool
    user: str
    ssh_keys: tuple[str, ...] = ()


def nix_string(text: str) -> str:
    """text as a Nix double-quoted string."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def check(spec: HostSpec) -> None:
    """Refuse what would not make a host, each with one line."""
    if not NAME.fullmatch(spec.name):
        raise UsageError(
            f"host name {spec.name!r}: letters, digits, '-' and '_', at most 63, starting and "
            "ending with a letter or digit (it is the machine's hostName)"
        )
    if not BY_ID.fullmatch(spec.disk):
        raise UsageError(
            f"--disk {spec.disk!r}: name the disk by /dev/disk/by-id/... (the same disk at every "
            "boot and on any machine; `ls -l /dev/disk/by-id` on the target lists them)"
        )
    if spec.role not in ROLES:
        raise UsageError(f"--role {spec.role!r}: one of {', '.join(ROLES)}")
    if not USER.fullmatch(spec.user) or spec.user in RESERVED_USERS:
        raise UsageError(
            f"--user {spec.user!r}: a login name (lowercase letters, digits, '-', '_'), not root"
        )
    for key in spec.ssh_keys:
        if not SSH_KEY.fullmatch(key):
            raise UsageError(f"--ssh-key: not an OpenSSH public key line: {key[:60]!r}")


def read_ssh_key(path: str) -> str:
    """The one public key line in path (an OpenSSH .pub file)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(64 * 1024)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ssh-key {path}: cannot read: {exc}") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise UsageError(f"--ssh-key {path}: expected one public key line, found {len(lines)}")
    return lines[0]


def render(spec: HostSpec) -> dict[str, str]:
    """The files of hosts/NAME/, by name."""
    luks = (
        f"\n    luks = {{\n      enable = true;\n"
        f"      # The passphrase is asked at every boot. disko reads it from this file when it\n"
        f"      # formats the disk: `panther install` sends it there (from the NixOS installer,\n"
        f"      # write it there first).\n"
        f"      passphraseFile = {nix_string(PASSPHRASE_FILE)};\n    }};"
        if spec.luks
        else ""
    )
    keys = "".join(f"\n      {nix_string(k)}" for k in spec.ssh_keys)
    login = (
        f"    # Logs in with this key over SSH; sudo asks for the password.\n"
        f"    openssh.authorizedKeys.keys = [{keys}\n    ];\n"
        if spec.ssh_keys
        else "    # No SSH key: logs in on the console (add openssh.authorizedKeys.keys for SSH).\n"
    )
    efi = "  boot.loader.efi.canTouchEfiVariables = true;\n" if spec.role == "workstation" else ""
    default = f"""# {spec.name}: a PantherOS host, written by `panther host new`. The flake imports
# PantherOS, nix-community/disko and nix-community/impermanence for every host under hosts/.
# Install it with `panther install {spec.name} --target root@ADDRESS` (README, "Install on a real
# machine").
{{ ... }}:
{{
  imports = [ ./hardware.nix ];

  networking.hostName = {nix_string(spec.name)};
  pantheros.role = {nix_string(spec.role)};
  pantheros.storage = {{
    enable = true;
    # The whole disk disko lays out: everything on it is erased when the host is installed.
    device = {nix_string(spec.disk)};{luks}
  }};
  pantheros.impermanence = {{
    enable = true;
    # What is kept across reboots: `panther persist add PATH --host-file ./persistence.json`.
    persistenceFile = ./persistence.json;
  }};
  # nixos-facter's report of this machine: `panther install` has nixos-anywhere write it here
  # on the first install (commit it); NixOS reads it once it exists.
  pantheros.install.hardwareReport = ./facter.json;

  boot.loader.systemd-boot.enable = true;
{efi}
  # Users are declarative under PantherOS (users.mutableUsers = false): this is who exists
  # after every reboot. The password hash lives on /persist, where `panther install` puts it.
  users.users.{spec.user} = {{
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    hashedPasswordFile = {nix_string(f"/persist/secrets/passwords/{spec.user}")};
{login}  }};

  system.stateVersion = "25.05";
}}
"""
    hardware = """# What nixos-facter's report (./facter.json, read through
# pantheros.install.hardwareReport) does not say about this machine. Without fileSystems:
# pantheros.storage declares them.
{ lib, ... }:
{
  boot.initrd.systemd.enable = true;
  nixpkgs.hostPlatform = lib.mkDefault "x86_64-linux";
}
"""
    persistence = '{\n  "version": 1,\n  "directories": [],\n  "files": []\n}\n'
    return {"default.nix": default, "hardware.nix": hardware, "persistence.json": persistence}


def write(flake: Path, spec: HostSpec) -> Path:
    """Write hosts/NAME/ under the flake at flake; return it. Refuses an existing host."""
    check(spec)
    if not (flake / "flake.nix").is_file():
        raise UsageError(f"{flake} has no flake.nix: give the flake's directory with --flake")
    hosts = flake / "hosts"
    if hosts.is_symlink():
        raise Refused(f"{hosts} is a symlink: the host would be written elsewhere")
    hosts.mkdir(exist_ok=True)
    target = hosts / spec.name
    if target.exists() or target.is_symlink():
        raise Refused(f"{target} exists: a host of that name is already there (nothing written)")
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=hosts))
    try:
        for name, text in render(spec).items():
            (staging / name).write_text(text, encoding="utf-8")
        os.chmod(staging, 0o755)  # noqa: S103 - a source directory, as git checks it out
        try:
            btrfs.renameat2(staging, target, btrfs.RENAME_NOREPLACE)
        except btrfs.BtrfsError:
            if target.exists() or target.is_symlink():  # made meanwhile, by another command
                raise Refused(f"{target} exists: a host of that name is already there") from None
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target
