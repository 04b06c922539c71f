"""What the audit reads: the system under a root directory, live (/) or offline (--root, --lab).

Every read goes through `System`, so the checks are pure functions over it and tests build a
fake /proc and /etc in a temporary directory.
"""

from __future__ import annotations

import glob
import gzip
import os
import re
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pantheros import process

SCAN_DIRS = (
    "bin",
    "sbin",
    "usr",
    "lib",
    "lib64",
    "opt",
    "etc",
    "var",
    "srv",
    "home",
    "root",
    "run/wrappers",
    "boot",
)
NOT_LOADING = re.compile(r"^(/\S*/)?(false|true|nologin)$")


@dataclass
class System:
    base: Path
    live: bool
    notes: list[str] = field(default_factory=list)

    def path(self, rel: str) -> Path:
        return self.base / rel.lstrip("/")

    def read(self, rel: str) -> str | None:
        try:
            return self.path(rel).read_text(errors="replace")
        except OSError:
            return None

    @property
    def is_nixos(self) -> bool:
        return self.path("etc/NIXOS").exists()

    # Kernel command line: live from /proc; current and booted NixOS systems for drift.

    @cached_property
    def cmdline(self) -> list[str] | None:
        text = self.read("proc/cmdline") if self.live else None
        if text is None and not self.live:
            text = self.read("run/current-system/kernel-params") or self.read("kernel-params")
        return text.split() if text is not None else None

    def kernel_params(self, which: str) -> list[str] | None:
        text = self.read(f"run/{which}-system/kernel-params")
        return text.split() if text is not None else None

    # sysctls: live from /proc/sys; declared from sysctl.d

    def sysctl(self, key: str) -> str | None:
        if self.live:
            value = self.read("proc/sys/" + key.replace(".", "/"))
            return None if value is None else " ".join(value.split())
        return self.declared_sysctls.get(key)

    @cached_property
    def declared_sysctls(self) -> dict[str, str]:
        found: dict[str, str] = {}
        files = sorted(glob.glob(str(self.path("usr/lib/sysctl.d/*.conf"))))
        files += sorted(glob.glob(str(self.path("etc/sysctl.d/*.conf"))))
        files += [str(self.path("etc/sysctl.conf"))]
        for name in files:
            try:
                lines = Path(name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                key, _, value = line.lstrip("-").partition("=")
                found[key.strip().replace("/", ".")] = " ".join(value.split())
        return found

    # Kernel modules

    @cached_property
    def loaded_modules(self) -> set[str] | None:
        text = self.read("proc/modules") if self.live else None
        if text is None:
            return None
        return {line.split()[0].replace("-", "_") for line in text.splitlines() if line.strip()}

    @cached_property
    def modprobe(self) -> tuple[set[str], set[str]]:
        """(blacklisted, disabled by `install X <non-loading command>`) module names."""
        blacklisted: set[str] = set()
        disabled: set[str] = set()
        patterns = [
            "etc/modprobe.d/*.conf",
            "run/modprobe.d/*.conf",
            "usr/lib/modprobe.d/*.conf",
            "lib/modprobe.d/*.conf",
        ]
        for pattern in patterns:
            for name in sorted(glob.glob(str(self.path(pattern)))):
                try:
                    lines = Path(name).read_text(errors="replace").splitlines()
                except OSError:
                    continue
                for line in lines:
                    words = line.split()
                    if len(words) >= 2 and words[0] == "blacklist":
                        blacklisted.add(words[1].replace("-", "_"))
                    elif len(words) >= 3 and words[0] == "install" and NOT_LOADING.match(words[2]):
                        disabled.add(words[1].replace("-", "_"))
        return blacklisted, disabled

    # Mounts

    def mount_options(self, mountpoint: str) -> list[str] | None:
        if self.live:
            text = self.read("proc/self/mountinfo")
            if text is None:
                return None
            found = None
            for line in text.splitlines():
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) > 5 and fields[4] == mountpoint:
                    found = fields[5].split(",") + right.split()[2].split(",")
            return found
        text = self.read("etc/fstab")
        if text is None:
            return None
        for line in text.splitlines():
            fields = line.split()
            if len(fields) >= 4 and not fields[0].startswith("#") and fields[1] == mountpoint:
                return fields[3].split(",")
        return None

    # SSH server

    @cached_property
    def sshd(self) -> dict[str, str] | None:
        """Effective sshd settings, lowercased: `sshd -T` when live, else the config files."""
        if self.live and shutil.which("sshd") and self.path("etc/ssh/sshd_config").exists():
            proc = process.run(["sshd", "-T"], check=False)
            if proc.returncode == 0:
                return dict(_pair(line) for line in proc.stdout.splitlines() if " " in line)
            self.notes.append("sshd -T failed; read the configuration files instead")
        text = self.read("etc/ssh/sshd_config")
        if text is None:
            return None
        settings: dict[str, str] = {}
        lines = text.splitlines()
        for include in glob.glob(str(self.path("etc/ssh/sshd_config.d/*.conf"))):
            lines = Path(include).read_text(errors="replace").splitlines() + lines
        for line in lines:
            line = line.strip()
            if not line or line.startswith("#") or line.lower().startswith("match "):
                if line.lower().startswith("match "):
                    break
                continue
            key, value = _pair(line)
            settings.setdefault(key, value)  # the first value wins, as in sshd
        return settings

    # Firewall

    @cached_property
    def input_policy(self) -> str | None:
        """'drop' or 'accept' (the input hook's default), or None when no tool can tell."""
        if not self.live:
            return None
        if shutil.which("nft"):
            proc = process.run(["nft", "list", "ruleset"], check=False)
            if proc.returncode == 0:
                policies = re.findall(r"hook input priority [^;]+;\s*policy (\w+);", proc.stdout)
                if policies:
                    return "drop" if all(p in ("drop", "reject") for p in policies) else "accept"
        if shutil.which("iptables-save"):
            proc = process.run(["iptables-save"], check=False)
            match = re.search(r"^:INPUT (\w+)", proc.stdout, re.M) if proc.returncode == 0 else None
            if match:
                return "drop" if match.group(1) == "DROP" else "accept"
        return "accept" if shutil.which("nft") or shutil.which("iptables-save") else None

    # Processes, users, sockets

    def process_running(self, name: str) -> bool | None:
        if not self.live:
            return None
        for comm in glob.glob(str(self.path("proc/[0-9]*/comm"))):
            try:
                if Path(comm).read_text().strip() == name:
                    return True
            except OSError:
                continue
        return False

    @cached_property
    def passwd(self) -> list[list[str]] | None:
        text = self.read("etc/passwd")
        return None if text is None else [ln.split(":") for ln in text.splitlines() if ":" in ln]

    @cached_property
    def shadow(self) -> list[list[str]] | None:
        text = self.read("etc/shadow")
        return None if text is None else [ln.split(":") for ln in text.splitlines() if ":" in ln]

    @cached_property
    def listening(self) -> list[str] | None:
        """Non-loopback listening sockets as 'proto address:port'."""
        if not self.live:
            return None
        found = []
        for proto in ("tcp", "tcp6", "udp", "udp6"):
            text = self.read(f"proc/net/{proto}")
            if text is None:
                continue
            for line in text.splitlines()[1:]:
                fields = line.split()
                if len(fields) < 4:
                    continue
                local, state = fields[1], fields[3]
                if proto.startswith("tcp") and state != "0A":
                    continue
                if proto.startswith("udp") and state != "07":
                    continue
                address, port = local.split(":")
                if _loopback(address):
                    continue
                found.append(f"{proto} {_address(address)}:{int(port, 16)}")
        return sorted(set(found))

    @cached_property
    def special_files(self) -> tuple[list[str], list[str], list[str]]:
        """(setuid/setgid files, files with capabilities, world-writable entries without sticky).

        One `find` pass over the system directories (home directories are the users' own), then
        a capability xattr lookup on the executables it named.
        """
        tops = [str(self.path(t)) for t in SCAN_DIRS if self.path(t).is_dir()]
        if not tops:
            return [], [], []
        argv = [
            "find",
            *tops,
            "-xdev",
            "(",
            "-type",
            "f",
            "(",
            "-perm",
            "/6000",
            "-o",
            "-perm",
            "-0002",
            "-o",
            "-perm",
            "/111",
            ")",
            "-o",
            "-type",
            "d",
            "-perm",
            "-0002",
            "!",
            "-perm",
            "-1000",
            ")",
            "-printf",
            "%m %y %p\\0",
        ]
        proc = process.run(argv, check=False)
        suid: list[str] = []
        caps: list[str] = []
        writable: list[str] = []
        for record in proc.stdout.split("\0"):
            if not record:
                continue
            mode_text, kind, full = record.split(" ", 2)
            mode = int(mode_text, 8)
            rel = "/" + os.path.relpath(full, self.base)
            if kind == "d" or mode & 0o002:
                writable.append(rel)
            if kind == "f" and mode & 0o6000:
                suid.append(rel)
            if kind == "f" and mode & 0o111:
                try:
                    os.getxattr(full, "security.capability", follow_symlinks=False)
                    caps.append(rel)
                except OSError:
                    pass
        return sorted(suid), sorted(caps), sorted(writable)

    @cached_property
    def kernel_config(self) -> dict[str, str] | None:
        raw: str | None = None
        if self.path("proc/config.gz").exists() and self.live:
            raw = gzip.decompress(self.path("proc/config.gz").read_bytes()).decode(errors="replace")
        if raw is None:
            release = os.uname().release if self.live else "*"
            for name in sorted(glob.glob(str(self.path(f"boot/config-{release}")))):
                raw = Path(name).read_text(errors="replace")
        if raw is None:
            raw = self.read("run/booted-system/kernel/config") if self.live else None
        if raw is None:
            return None
        return dict(
            line.split("=", 1) for line in raw.splitlines() if "=" in line and line[0] != "#"
        )


def _pair(line: str) -> tuple[str, str]:
    key, _, value = line.strip().partition(" ")
    return key.lower(), value.strip()


def _loopback(hex_address: str) -> bool:
    if len(hex_address) == 8:
        return hex_address.endswith("7F")
    return hex_address == "00000000000000000000000001000000"


def _address(hex_address: str) -> str:
    if len(hex_address) == 8:
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return "[ipv6]" if hex_address.strip("0") else "[::]"
