"""What the audit reads: the system under a root directory, live (/) or offline (--root, --lab).

Every read goes through `System`, and every file read through its `Tree`, which keeps it inside
the machine (see pantheros.audit.tree); the checks are pure functions over a System, so tests
build a fake /proc and /etc in a temporary directory. Where a value comes from a file, the file
and line are kept as the evidence (`Evidence`), for the report and for SARIF locations.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pantheros import mounttable, process
from pantheros.audit import inventory, walkstart
from pantheros.audit.tree import MAX_BYTES, Tree

NOT_LOADING = re.compile(r"^(/\S*/)?(false|true|nologin)$")


@dataclass(frozen=True)
class Evidence:
    """A value and where it was read: a path as the machine sees it, and a line (1-based)."""

    value: str
    path: str
    line: int | None = None


@dataclass
class System:
    base: Path
    live: bool
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tree = Tree(self.base)
        self._walk: inventory.Walk | None = None

    def read(self, rel: str) -> str | None:
        return self.tree.read(rel)

    @cached_property
    def is_nixos(self) -> bool:
        return self.tree.exists("etc/NIXOS")

    def _lines(self, path: str) -> list[tuple[int, str]]:
        text = self.read(path)
        return [] if text is None else list(enumerate(text.splitlines(), 1))

    # Kernel command line: live from /proc; offline from the NixOS system or GRUB's defaults.

    @cached_property
    def cmdline(self) -> Evidence | None:
        if self.live:
            sources = ["proc/cmdline"]
        else:
            sources = [
                "run/current-system/kernel-params",
                "nix/var/nix/profiles/system/kernel-params",
                "kernel-params",  # --root given a NixOS system's toplevel
            ]
        for source in sources:
            text = self.read(source)
            if text is not None:
                return Evidence(" ".join(text.split()), "/" + source)
        if self.live:
            return None
        # GRUB puts GRUB_CMDLINE_LINUX, then GRUB_CMDLINE_LINUX_DEFAULT, on the command line.
        params: dict[str, tuple[str, int]] = {}
        for number, line in self._lines("etc/default/grub"):
            match = re.match(r'\s*(GRUB_CMDLINE_LINUX(?:_DEFAULT)?)="([^"]*)"', line)
            if match:
                params[match.group(1)] = (match.group(2), number)
        if not params:
            return None
        text = " ".join(params[k][0] for k in sorted(params) if params[k][0])
        return Evidence(text, "/etc/default/grub", min(n for _, n in params.values()))

    def kernel_params(self, which: str) -> list[str] | None:
        text = self.read(f"run/{which}-system/kernel-params")
        return text.split() if text is not None else None

    # sysctls: live from /proc/sys; declared from sysctl.d

    def sysctl(self, key: str) -> Evidence | None:
        if self.live:
            path = "proc/sys/" + key.replace(".", "/")
            value = self.read(path)
            return None if value is None else Evidence(" ".join(value.split()), "/" + path)
        return self.declared_sysctls.get(key)

    @cached_property
    def declared_sysctls(self) -> dict[str, Evidence]:
        found: dict[str, Evidence] = {}
        files = self.tree.files("usr/lib/sysctl.d", ".conf")
        files += [*self.tree.files("etc/sysctl.d", ".conf"), "etc/sysctl.conf"]
        for name in files:
            for number, line in self._lines(name):
                line = line.strip()
                if not line or line[0] in "#;" or "=" not in line:
                    continue
                key, _, value = line.lstrip("-").partition("=")
                key = key.strip().replace("/", ".")
                found[key] = Evidence(" ".join(value.split()), "/" + name, number)
        return found

    # Kernel and LSMs: what is in force, not what was asked for

    @cached_property
    def lsm(self) -> list[str] | None:
        text = self.read("sys/kernel/security/lsm") if self.live else None
        return None if text is None else text.strip().split(",")

    @cached_property
    def lockdown(self) -> str | None:
        """The lockdown mode in force ('none', 'integrity', 'confidentiality'), or None."""
        text = self.read("sys/kernel/security/lockdown") if self.live else None
        match = re.search(r"\[(\w+)\]", text or "")
        return match.group(1) if match else None

    @cached_property
    def unprivileged_perf_allowed(self) -> bool | None:
        """Whether an unprivileged process may profile itself, tried for real (None: unknown)."""
        if not self.live:
            return None
        return perf_open_allowed()

    # Kernel modules

    @cached_property
    def loaded_modules(self) -> set[str] | None:
        text = self.read("proc/modules") if self.live else None
        if text is None:
            return None
        return {line.split()[0].replace("-", "_") for line in text.splitlines() if line.strip()}

    @cached_property
    def modprobe(self) -> tuple[dict[str, Evidence], dict[str, Evidence]]:
        """(blacklisted, disabled by `install X <non-loading command>`) modules, with the line."""
        blacklisted: dict[str, Evidence] = {}
        disabled: dict[str, Evidence] = {}
        for directory in ("etc/modprobe.d", "run/modprobe.d", "usr/lib/modprobe.d"):
            for name in self.tree.files(directory, ".conf"):
                for number, line in self._lines(name):
                    words = line.split()
                    if len(words) >= 2 and words[0] == "blacklist":
                        module = words[1].replace("-", "_")
                        blacklisted[module] = Evidence("blacklisted", "/" + name, number)
                    elif len(words) >= 3 and words[0] == "install" and NOT_LOADING.match(words[2]):
                        module = words[1].replace("-", "_")
                        disabled[module] = Evidence(" ".join(words[2:]), "/" + name, number)
        return blacklisted, disabled

    # Mounts

    def mount_options(self, mountpoint: str) -> Evidence | None:
        if self.live:
            found = None
            text = self.read("proc/self/mountinfo")
            for mount in mounttable.parse_mountinfo(text or ""):
                if mount.mountpoint == mountpoint:
                    found = Evidence(",".join(mount.all_options), "/proc/self/mountinfo")
            return found
        for number, line in self._lines("etc/fstab"):
            fields = line.split()
            if len(fields) >= 4 and not fields[0].startswith("#") and fields[1] == mountpoint:
                return Evidence(fields[3], "/etc/fstab", number)
        return None

    # SSH server

    @cached_property
    def sshd_lines(self) -> dict[str, Evidence] | None:
        """The first setting of each key (lowercased) in the config files, as sshd reads them."""
        if not self.tree.exists("etc/ssh/sshd_config"):
            return None
        files = [*self.tree.files("etc/ssh/sshd_config.d", ".conf"), "etc/ssh/sshd_config"]
        settings: dict[str, Evidence] = {}
        for name in files:
            for number, line in self._lines(name):
                line = line.strip()
                if line.lower().startswith("match "):
                    break
                if not line or line.startswith("#") or " " not in line:
                    continue
                key, value = _pair(line)
                settings.setdefault(key, Evidence(value, "/" + name, number))
        return settings

    @cached_property
    def sshd(self) -> dict[str, str] | None:
        """Effective sshd settings, lowercased: `sshd -T` when live, else the config files."""
        lines = self.sshd_lines
        if lines is None:
            return None
        if self.live and shutil.which("sshd"):
            proc = process.run(["sshd", "-T"], check=False)
            if proc.returncode == 0:
                return dict(_pair(line) for line in proc.stdout.splitlines() if " " in line)
            self.notes.append("sshd -T failed; read the configuration files instead")
        return {key: evidence.value for key, evidence in lines.items()}

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
        for pid in self.tree.listdir("proc"):
            if pid.isdigit() and (self.read(f"proc/{pid}/comm") or "").strip() == name:
                return True
        return False

    def _table(self, path: str) -> list[tuple[int, list[str]]] | None:
        if self.read(path) is None:
            return None
        return [(n, line.split(":")) for n, line in self._lines(path) if ":" in line]

    @cached_property
    def passwd(self) -> list[tuple[int, list[str]]] | None:
        return self._table("etc/passwd")

    @cached_property
    def shadow(self) -> list[tuple[int, list[str]]] | None:
        return self._table("etc/shadow")

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

    def start_inventory(self) -> None:
        """Start the file walk now, to run while other checks do; special_files collects it."""
        if self._walk is None and "special_files" not in self.__dict__:
            self._walk = self._begin_walk()

    def _begin_walk(self) -> inventory.Walk | None:
        tops, pruned = walkstart.plan(str(self.base))
        if not tops:
            return None
        return inventory.start(str(self.base.resolve()), tops, frozenset(pruned))

    @cached_property
    def special_files(self) -> tuple[list[str], list[str], list[str]]:
        """(setuid/setgid files, files with capabilities, world-writable entries without sticky).

        One pass over the system directories for all three; pantheros.audit.inventory says
        what it leaves out and why, and how it shares the work.
        """
        walk, self._walk = self._walk or self._begin_walk(), None
        if walk is None:
            return [], [], []
        found = walk.result()
        if found.how:
            self.notes.append(f"the file walk ran find, more slowly: {found.how}")
        if found.errors:
            self.notes.append(
                "the file walk could not read everything: " + "; ".join(found.errors)[:200]
            )
        return found.suid, found.caps, found.writable

    @cached_property
    def kernel_config(self) -> dict[str, str] | None:
        raw: str | None = None
        packed = self.tree.read_bytes("proc/config.gz") if self.live else None
        if packed is not None:
            try:
                raw = _gunzip(packed)
            except (OSError, zlib.error, EOFError):
                self.notes.append("/proc/config.gz is not a gzip file")
        if raw is None:
            release = os.uname().release if self.live else None
            names = [n for n in self.tree.listdir("boot") if n.startswith("config-")]
            for name in sorted(names):
                if release is None or name == f"config-{release}":
                    raw = self.read(f"boot/{name}") or raw
        if raw is None and self.live:
            raw = self.read("run/booted-system/kernel/config")
        if raw is None:
            return None
        return dict(
            line.split("=", 1) for line in raw.splitlines() if "=" in line and line[0] != "#"
        )


def _gunzip(data: bytes) -> str:
    """Decompress, refusing more than MAX_BYTES of output (a bomb stays a bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = inflater.decompress(data, MAX_BYTES)
    if inflater.unconsumed_tail:
        raise OSError("larger than the cap")
    return out.decode(errors="replace")


# perf_event_open(2) numbers per architecture; a kernel-facing probe cannot be portable.
_PERF_SYSCALL = {"x86_64": 298, "aarch64": 241}
_PERF_TYPE_SOFTWARE, _PERF_COUNT_SW_TASK_CLOCK = 1, 1
_DISABLED, _EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 0, 1 << 5, 1 << 6
NOBODY = 65534


class _PerfAttr(ctypes.Structure):
    # PERF_ATTR_SIZE_VER1: the oldest layout every kernel accepts.
    _fields_ = (
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("bp_addr", ctypes.c_uint64),
        ("bp_len", ctypes.c_uint64),
    )


def perf_open_allowed() -> bool | None:
    """Whether an unprivileged process may count its own user-space events.

    That is exactly what perf_event_paranoid=2 allows and what the level 3 of Debian's and
    Android's kernels forbids; mainline accepts 3 but behaves as 2. The probe runs as nobody
    (in a child when we are root), so the answer is an unprivileged user's.
    """
    number = _PERF_SYSCALL.get(os.uname().machine)
    if number is None:
        return None
    if os.geteuid() != 0:
        return _perf_probe(number)
    pid = os.fork()
    if pid == 0:  # the child drops every privilege and reports through its exit status
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os._exit(0 if _perf_probe(number) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return None if code not in (0, 1) else code == 0


def _perf_probe(number: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    attr = _PerfAttr(
        type=_PERF_TYPE_SOFTWARE,
        size=ctypes.sizeof(_PerfAttr),
        config=_PERF_COUNT_SW_TASK_CLOCK,
        flags=_DISABLED | _EXCLUDE_KERNEL | _EXCLUDE_HV,
    )
    fd: int = libc.syscall(number, ctypes.byref(attr), 0, -1, -1, 0)
    if fd >= 0:
        os.close(fd)
        return True
    return False


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
