"""The checks: pure functions of the hardening table, the level, the waivers and a System."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pantheros.audit.system import System

TABLE = Path(__file__).resolve().parent.parent / "data" / "hardening.json"
SEVERITIES = ("low", "medium", "high")


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a status, not a password
    FAIL = "fail"
    WAIVED = "waived"
    SKIPPED = "skipped"


@dataclass
class Finding:
    id: str
    area: str
    title: str
    severity: str
    status: Status
    expected: str = ""
    actual: str = ""
    reason: str = ""  # why skipped or waived, or what failed
    drift: str | None = None  # "pending reboot" | "changed by hand"
    nixos_fix: str = ""
    plain_fix: str = ""
    anchors: dict[str, str] = field(default_factory=dict)
    location: str = ""  # the file that holds the evidence


def load_table() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(TABLE.read_text())
    return data


def describe(expect: dict[str, Any]) -> str:
    for key, text in (("min", ">= {}"), ("max", "<= {}"), ("equals", "{}")):
        if key in expect:
            return text.format(_show(expect[key]))
    if "one_of" in expect:
        return "one of " + ", ".join(_show(v) for v in expect["one_of"])
    if "includes" in expect:
        return "includes " + ",".join(expect["includes"])
    if "present" in expect:
        return "present"
    if "not_loadable" in expect:
        return "cannot be loaded"
    return json.dumps(expect)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def within(expect: dict[str, Any], actual: str) -> bool:
    """Whether a value read from the system (text) is in the expected range."""

    def num() -> int | None:
        try:
            return int(actual.split()[0])
        except (ValueError, IndexError):
            return None

    if "min" in expect:
        n = num()
        return n is not None and n >= expect["min"]
    if "max" in expect:
        n = num()
        return n is not None and n <= expect["max"]
    if "equals" in expect:
        return _same(expect["equals"], actual)
    if "one_of" in expect:
        return any(_same(v, actual) for v in expect["one_of"])
    return False


def _same(expected: Any, actual: str) -> bool:
    if isinstance(expected, bool):
        return actual.lower() in (("yes", "true", "1") if expected else ("no", "false", "0"))
    if isinstance(expected, int):
        return actual.split()[:1] == [str(expected)]
    return actual.strip().lower() == str(expected).lower()


def nix_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[ " + " ".join(f'"{v}"' for v in value) + " ]"
    return f'"{value}"'


# Table checks, one function per area


def _sysctl(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    key = spec["key"]
    f.location = "/proc/sys/" + key.replace(".", "/")
    f.nixos_fix = f'boot.kernel.sysctl."{key}" = {nix_value(level["set"])};'
    f.plain_fix = (
        f"echo '{key} = {level['set']}' > /etc/sysctl.d/90-hardening.conf; sysctl --system"
    )
    actual = system.sysctl(key)
    if actual is None:
        f.status, f.reason = Status.SKIPPED, f"{key} does not exist on this kernel"
        return
    f.actual = actual
    f.status = Status.PASS if within(level["expect"], actual) else Status.FAIL
    declared = system.declared_sysctls.get(key)
    if system.live and system.is_nixos and declared is not None and declared != actual:
        # NixOS applies sysctl.d at activation: a live value that differs was set by hand.
        f.drift = "changed by hand"
        f.reason = f"declared {declared} in /etc/sysctl.d, live {actual}"


def _cmdline(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    param = spec["param"]
    f.location = "/proc/cmdline"
    f.nixos_fix = f'boot.kernelParams = [ "{param}" ];'
    f.plain_fix = f"add {param} to GRUB_CMDLINE_LINUX in /etc/default/grub; update-grub; reboot"
    cmdline = system.cmdline
    if cmdline is None:
        f.status, f.reason = Status.SKIPPED, "no kernel command line to read here"
        return
    present = param in cmdline
    f.actual = "present" if present else "absent"
    f.status = Status.PASS if present else Status.FAIL
    if present or not system.is_nixos:
        return
    current, booted = system.kernel_params("current"), system.kernel_params("booted")
    if current is not None and param in current and (booted is None or param not in booted):
        f.drift = "pending reboot"
        f.reason = "the current NixOS system sets it; the booted one did not"
    elif booted is not None and param in booted:
        f.drift = "changed by hand"
        f.reason = "the booted NixOS system sets it, but the kernel was started without it"


def _module(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    name = spec["module"].replace("-", "_")
    f.location = "/etc/modprobe.d"
    f.nixos_fix = (
        f'boot.blacklistedKernelModules = [ "{spec["module"]}" ]; '
        f'boot.extraModprobeConfig = "install {spec["module"]} /bin/false";'
    )
    f.plain_fix = (
        f"echo 'install {spec['module']} /bin/false' > /etc/modprobe.d/{spec['module']}.conf"
    )
    blacklisted, disabled = system.modprobe
    loaded = system.loaded_modules
    if loaded is not None and name in loaded:
        f.status, f.actual = Status.FAIL, "loaded"
        return
    if name in disabled:
        f.status, f.actual = Status.PASS, "install ... /bin/false"
    elif name in blacklisted:
        f.status, f.actual = Status.PASS, "blacklisted"
    else:
        f.status, f.actual = Status.FAIL, "loadable"


def _mount(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    path = spec["path"]
    wanted = level["expect"]["includes"]
    f.location = "/proc/self/mountinfo" if system.live else "/etc/fstab"
    f.nixos_fix = f'fileSystems."{path}".options = {nix_value(wanted)};'
    f.plain_fix = f"add {','.join(wanted)} to the options of {path} in /etc/fstab"
    options = system.mount_options(path)
    if options is None:
        f.status, f.reason = Status.SKIPPED, f"{path} is not a separate mount here"
        return
    hidden = {"2", "invisible", "4", "ptraceable"}

    def has(option: str) -> bool:
        if option.startswith("hidepid="):
            return any(o.startswith("hidepid=") and o.split("=", 1)[1] in hidden for o in options)
        return option in options

    missing = [o for o in wanted if not has(o)]
    f.actual = ",".join(
        o for o in options if o in ("nosuid", "nodev", "noexec") or o.startswith("hidepid")
    )
    f.status = Status.FAIL if missing else Status.PASS
    if missing:
        f.reason = "missing " + ",".join(missing)


def _ssh(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    key = spec["key"]
    f.location = "/etc/ssh/sshd_config"
    f.nixos_fix = f"services.openssh.settings.{key} = {nix_value(level['set'])};"
    f.plain_fix = f"set '{key} {_show(level['set'])}' in /etc/ssh/sshd_config; reload sshd"
    settings = system.sshd
    if settings is None:
        f.status, f.reason = Status.SKIPPED, "no SSH server configured"
        return
    actual = settings.get(key.lower())
    if actual is None:
        actual = SSHD_DEFAULTS.get(key.lower(), "")
    f.actual = actual
    f.status = Status.PASS if within(level["expect"], actual) else Status.FAIL


# OpenSSH's compiled-in defaults, for keys a config file does not set.
SSHD_DEFAULTS = {
    "permitrootlogin": "prohibit-password",
    "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes",
    "permitemptypasswords": "no",
    "x11forwarding": "no",
    "maxauthtries": "6",
    "allowagentforwarding": "yes",
    "allowtcpforwarding": "yes",
    "loglevel": "INFO",
}


def _feature(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    cid = spec["id"]
    fixes = {
        "firewall.enabled": (
            "networking.firewall.enable = true;",
            "nft add chain inet filter input '{ type filter hook input priority 0; policy drop; }'",
        ),
        "audit.auditd": (
            "security.auditd.enable = true;",
            "apt-get install auditd; systemctl enable --now auditd",
        ),
        "mac.apparmor": (
            "security.apparmor.enable = true;",
            "apt-get install apparmor; add apparmor=1 security=apparmor to the kernel command line",
        ),
        "sudo.wheel_only": (
            "security.sudo.execWheelOnly = true;",
            "chgrp wheel /usr/bin/sudo; chmod 4750 /usr/bin/sudo",
        ),
    }
    f.nixos_fix, f.plain_fix = fixes[cid]
    state: bool | None
    if cid == "firewall.enabled":
        policy = system.input_policy
        state = None if policy is None else policy == "drop"
        f.actual = policy or ""
        why = "no nft or iptables to read the ruleset" if system.live else "offline tree"
    elif cid == "audit.auditd":
        state = system.process_running("auditd")
        why = "offline tree"
    elif cid == "mac.apparmor":
        enabled = system.read("sys/module/apparmor/parameters/enabled") if system.live else None
        state = None if not system.live else (enabled or "").strip() == "Y"
        why = "offline tree"
    else:
        sudo = next(
            (
                system.path(p)
                for p in ("run/wrappers/bin/sudo", "usr/bin/sudo")
                if system.path(p).exists()
            ),
            None,
        )
        if sudo is None:
            state, why = None, "sudo is not installed"
        else:
            mode = sudo.stat().st_mode
            state = not mode & 0o001
            f.actual = f"{mode & 0o7777:04o}"
    if state is None:
        f.status, f.reason = Status.SKIPPED, why
    else:
        f.status = Status.PASS if state else Status.FAIL


AREA_CHECKS: dict[str, Callable[[dict[str, Any], dict[str, Any], System, Finding], None]] = {
    "sysctl": _sysctl,
    "cmdline": _cmdline,
    "module": _module,
    "mount": _mount,
    "ssh": _ssh,
    "firewall": _feature,
    "audit": _feature,
    "mac": _feature,
    "sudo": _feature,
}


# Checks that need no table value: inventories and integrity


def _suid(system: System, f: Finding) -> None:
    suid, caps, _ = system.special_files
    unexpected = [p for p in suid if not p.startswith("/run/wrappers/")] if system.is_nixos else []
    f.actual = f"{len(suid)} setuid/setgid, {len(caps)} with capabilities"
    f.nixos_fix = "security.wrappers: declare what needs privileges; remove other setuid bits"
    f.plain_fix = "chmod u-s,g-s on binaries that do not need it"
    if system.is_nixos and unexpected:
        f.status, f.reason = Status.FAIL, "outside /run/wrappers: " + ", ".join(unexpected[:10])
    else:
        f.status = Status.PASS
        f.reason = ", ".join(suid[:20]) if suid else "none"


def _world_writable(system: System, f: Finding) -> None:
    _, _, writable = system.special_files
    f.nixos_fix = "systemd.tmpfiles.rules: create these with a mode that others cannot write"
    f.plain_fix = "chmod o-w on each, or chmod +t on shared directories"
    f.actual = str(len(writable))
    f.status = Status.FAIL if writable else Status.PASS
    if writable:
        f.reason = ", ".join(writable[:10])


def _uid0(system: System, f: Finding) -> None:
    f.nixos_fix = "users.users.<name>.uid: give every account but root a uid other than 0"
    f.plain_fix = "usermod -u <new uid> <user>"
    if system.passwd is None:
        f.status, f.reason = Status.SKIPPED, "no /etc/passwd"
        return
    extra = [row[0] for row in system.passwd if len(row) > 2 and row[2] == "0" and row[0] != "root"]
    f.status = Status.FAIL if extra else Status.PASS
    f.actual = ", ".join(["root", *extra])


def _empty_passwords(system: System, f: Finding) -> None:
    f.nixos_fix = 'users.users.<name>.hashedPassword = "!"; (or a real hash)'
    f.plain_fix = "passwd -l <user>"
    if system.shadow is None:
        f.status, f.reason = Status.SKIPPED, "/etc/shadow is not readable"
        return
    empty = [row[0] for row in system.shadow if len(row) > 1 and row[1] == ""]
    f.status = Status.FAIL if empty else Status.PASS
    f.actual = ", ".join(empty) or "none"


def _listening(system: System, f: Finding) -> None:
    f.nixos_fix = (
        "networking.firewall.enable = true; (open only networking.firewall.allowedTCPPorts)"
    )
    f.plain_fix = "stop the services, or filter them with a default-deny firewall"
    sockets = system.listening
    if sockets is None:
        f.status, f.reason = Status.SKIPPED, "offline tree"
        return
    f.actual = ", ".join(sockets) or "none"
    exposed = sockets and system.input_policy != "drop"
    f.status = Status.FAIL if exposed else Status.PASS
    if exposed:
        f.reason = "listening beyond loopback without a default-deny input policy"


KCONFIG = {
    "CONFIG_STRICT_KERNEL_RWX": "y",
    "CONFIG_RANDOMIZE_BASE": "y",
    "CONFIG_STACKPROTECTOR_STRONG": "y",
    "CONFIG_HARDENED_USERCOPY": "y",
    "CONFIG_SECURITY_YAMA": "y",
    "CONFIG_SLAB_FREELIST_HARDENED": "y",
}


def _kconfig(system: System, f: Finding) -> None:
    f.nixos_fix = "boot.kernelPackages = pkgs.linuxPackages_hardened;"
    f.plain_fix = "use a kernel built with these options"
    config = system.kernel_config
    if config is None:
        f.status, f.reason = Status.SKIPPED, "no kernel config (/proc/config.gz, /boot/config-*)"
        return
    missing = [k for k, v in KCONFIG.items() if config.get(k) != v]
    f.status = Status.FAIL if missing else Status.PASS
    f.actual = f"{len(KCONFIG) - len(missing)}/{len(KCONFIG)} set"
    f.reason = ("not set: " + ", ".join(missing)) if missing else ""


BUILTINS: list[tuple[str, str, str, str, Callable[[System, Finding], None], dict[str, str]]] = [
    (
        "files.suid",
        "files",
        "Setuid/setgid and capability inventory",
        "high",
        _suid,
        {"cis": "6.1.13", "lynis": "FILE-7524", "stig": "V-268144"},
    ),
    (
        "files.world_writable",
        "files",
        "No world-writable files or unsticky directories",
        "medium",
        _world_writable,
        {"cis": "6.1.11", "lynis": "FILE-7524"},
    ),
    (
        "users.uid0",
        "users",
        "Only root has uid 0",
        "high",
        _uid0,
        {"cis": "5.4.2.1", "lynis": "AUTH-9204"},
    ),
    (
        "users.empty_password",
        "users",
        "No account has an empty password",
        "high",
        _empty_passwords,
        {"cis": "5.4.2", "lynis": "AUTH-9283"},
    ),
    (
        "network.listening",
        "network",
        "Listening sockets are filtered",
        "medium",
        _listening,
        {"cis": "2.1.22", "lynis": "NETW-3012"},
    ),
    (
        "kernel.config",
        "kernel",
        "Kernel built with hardening options",
        "medium",
        _kconfig,
        {"kspp": "CONFIG_*", "khc": "kconfig"},
    ),
]


def run_checks(
    system: System, level: str, waivers: dict[str, str], table: dict[str, Any] | None = None
) -> Iterator[Finding]:
    table = table or load_table()
    for spec in table["checks"]:
        levels = spec["levels"]
        if level not in levels:
            continue
        f = Finding(
            spec["id"],
            spec["area"],
            spec["title"],
            spec["severity"],
            Status.SKIPPED,
            expected=describe(levels[level]["expect"]),
            anchors=spec["anchors"],
        )
        AREA_CHECKS[spec["area"]](spec, levels[level], system, f)
        yield _waive(f, waivers)
    for cid, area, title, severity, check, anchors in BUILTINS:
        f = Finding(cid, area, title, severity, Status.SKIPPED, anchors=anchors)
        check(system, f)
        yield _waive(f, waivers)


def _waive(f: Finding, waivers: dict[str, str]) -> Finding:
    if f.id in waivers and f.status is not Status.SKIPPED:
        f.status, f.reason = Status.WAIVED, waivers[f.id]
    return f
