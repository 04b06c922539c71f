"""The checks: pure functions of the hardening table, the level, the waivers and a System."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from pantheros.audit import fixes
from pantheros.audit.fixes import Definition, Expr, Lines
from pantheros.audit.system import Evidence, System

TABLE = Path(__file__).resolve().parent.parent / "data" / "hardening.json"
SEVERITIES = ("low", "medium", "high")
OFFLINE = "offline tree: only a running system shows this"


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
    nixos: list[Definition] = field(default_factory=list)
    nixos_note: str = ""  # the NixOS fix in words, where no option definition fits
    plain_fix: str = ""  # shell: composable file edits (see pantheros.audit.fixes)
    plain_apply: str = ""  # shell: what makes plain_fix take effect
    anchors: dict[str, str] = field(default_factory=dict)
    location: str = ""  # the file that holds the evidence, as the machine sees it
    line: int | None = None
    # A skipped check is either unevaluated (no evidence: counts against coverage) or does
    # not apply here (no SSH server, a sysctl this kernel lacks).
    applicable: bool = True
    by_effect: bool = False  # verified by what the kernel does, not by what was asked

    @property
    def nixos_fix(self) -> str:
        return fixes.render(self.nixos) or self.nixos_note

    @property
    def evaluated(self) -> bool:
        return self.status is not Status.SKIPPED

    def skip(self, reason: str, *, applicable: bool = True) -> None:
        self.status, self.reason, self.applicable = Status.SKIPPED, reason, applicable

    def evidence(self, found: Evidence) -> str:
        self.location, self.line = found.path, found.line
        return found.value


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


# Table checks, one function per area


def _sysctl(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    key = spec["key"]
    f.nixos = [(f'boot.kernel.sysctl."{key}"', level["set"])]
    f.plain_fix = fixes.sysctl(key, level["set"])
    f.plain_apply = "sysctl --system"
    found = system.sysctl(key)
    if found is None:
        if system.live:
            f.skip(f"{key} does not exist on this kernel", applicable=False)
        else:
            f.skip(f"{key} is not set in sysctl.d (the kernel default applies, unknown here)")
        return
    actual = f.actual = f.evidence(found)
    effect = SYSCTL_EFFECTS.get(key)
    if effect is not None and system.live:
        actual, note = effect(system, actual)
        if note:
            f.actual, f.reason = f"{f.actual} (in force: {actual})", note
    f.status = Status.PASS if within(level["expect"], actual) else Status.FAIL
    declared = system.declared_sysctls.get(key)
    if system.live and system.is_nixos and declared is not None and declared.value != found.value:
        # NixOS applies sysctl.d at activation: a live value that differs was set by hand.
        f.drift = "changed by hand"
        f.reason = f"declared {declared.value} in {declared.path}, live {found.value}"


def _perf_in_force(system: System, value: str) -> tuple[str, str]:
    """Mainline kernels accept perf_event_paranoid=3 but behave as 2; try it to know."""
    if not value.strip().lstrip("-").isdigit() or int(value) < 3:
        return value, ""
    allowed = system.unprivileged_perf_allowed
    if allowed is None:
        return value, "could not try perf_event_open as an unprivileged user"
    if allowed:
        return "2", "the kernel accepts 3 but behaves as 2: unprivileged perf_event_open works"
    return value, "unprivileged perf_event_open is refused"


SYSCTL_EFFECTS: dict[str, Callable[[System, str], tuple[str, str]]] = {
    "kernel.perf_event_paranoid": _perf_in_force,
}
LOCKDOWN_ORDER = ("none", "integrity", "confidentiality")


def _cmdline(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    param = spec["param"]
    f.nixos = [("boot.kernelParams", [param])]
    f.plain_fix = fixes.grub_param(param)
    f.plain_apply = "update-grub (or grub2-mkconfig -o /boot/grub2/grub.cfg); reboot"
    found = system.cmdline
    if found is None:
        f.skip("no kernel command line to read here" if system.live else "no kernel-params here")
        return
    present = param in f.evidence(found).split()
    f.actual = "present" if present else "absent"
    f.status = Status.PASS if present else Status.FAIL
    if spec.get("verify") == "effect":
        if not system.live:
            f.reason = "offline tree: the request is checked, not its effect"
            return
        try:
            state, actual, why = CMDLINE_EFFECTS[param](system, param)
        except NotApplicable as exc:
            f.location, f.line = EFFECT_EVIDENCE[param], None
            f.actual = "present" if present else "absent"
            f.skip(str(exc), applicable=False)
            return
        f.location, f.line = EFFECT_EVIDENCE[param], None
        if state is None:
            f.skip(f"cannot see what is in force: {why}")
            return
        f.status = Status.PASS if state else Status.FAIL
        f.actual = f"{actual} ({'requested' if present else 'not requested'})"
        f.reason = why
        return
    if present or not system.is_nixos:
        return
    current, booted = system.kernel_params("current"), system.kernel_params("booted")
    if current is not None and param in current and (booted is None or param not in booted):
        f.drift = "pending reboot"
        f.reason = "the current NixOS system sets it; the booted one did not"
    elif booted is not None and param in booted:
        f.drift = "changed by hand"
        f.reason = "the booted NixOS system sets it, but the kernel was started without it"


# What is in force for a kernel parameter the kernel may ignore: (in force?, what, why).
Effect = tuple[bool | None, str, str]


class NotApplicable(Exception):
    """The check cannot hold on this machine whatever is configured; the message says why."""


def _lockdown_in_force(system: System, param: str) -> Effect:
    """The kernel ignores lockdown= unless the lockdown LSM is built in and active.

    A kernel built without it (NixOS's kernels are: the LSM needs module signing) makes the
    check not applicable, with that reason; one that has it but does not start it fails.
    """
    wanted = param.split("=", 1)[1]
    mode = system.lockdown
    if mode in LOCKDOWN_ORDER:
        good = LOCKDOWN_ORDER.index(mode) >= LOCKDOWN_ORDER.index(wanted)
        return good, f"{mode} in force", ""
    lsm = system.lsm
    config = system.kernel_config or {}
    if config and config.get("CONFIG_SECURITY_LOCKDOWN_LSM") != "y":
        raise NotApplicable(
            "the running kernel is built without the lockdown LSM (CONFIG_SECURITY_LOCKDOWN_LSM;"
            " NixOS's kernels are), so lockdown= has no effect: boot a kernel built with it"
        )
    if lsm is not None and "lockdown" not in lsm:
        hint = ": list it in lsm= (security.lsm on NixOS)" if config else ""
        return False, "no lockdown", f"the lockdown LSM is not active (LSMs: {','.join(lsm)}){hint}"
    return None, "", "/sys/kernel/security/lockdown is not readable"


def _vsyscall_in_force(system: System, param: str) -> Effect:
    maps = system.read("proc/self/maps")
    if maps is None:
        return None, "", "/proc/self/maps is not readable"
    if "[vsyscall]" in maps:
        return False, "vsyscall page mapped", "every process still gets the vsyscall page"
    return True, "no vsyscall page", ""


def _shuffle_in_force(system: System, param: str) -> Effect:
    text = system.read("sys/module/page_alloc/parameters/shuffle")
    if text is None:
        return None, "", "/sys/module/page_alloc/parameters/shuffle is not readable"
    on = text.strip() == "Y"
    return on, "shuffling on" if on else "shuffling off", ""


CMDLINE_EFFECTS: dict[str, Callable[[System, str], Effect]] = {
    "lockdown=confidentiality": _lockdown_in_force,
    "vsyscall=none": _vsyscall_in_force,
    "page_alloc.shuffle=1": _shuffle_in_force,
}
EFFECT_EVIDENCE = {
    "lockdown=confidentiality": "/sys/kernel/security/lockdown",
    "vsyscall=none": "/proc/self/maps",
    "page_alloc.shuffle=1": "/sys/module/page_alloc/parameters/shuffle",
}


def _module(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    module = spec["module"]
    name = module.replace("-", "_")
    f.nixos = [
        ("boot.blacklistedKernelModules", [module]),
        ("boot.extraModprobeConfig", Lines(f"install {module} /bin/false")),
    ]
    f.plain_fix = fixes.modprobe_off(module)
    blacklisted, disabled = system.modprobe
    loaded = system.loaded_modules
    f.location = "/etc/modprobe.d"
    if loaded is not None and name in loaded:
        f.status, f.actual, f.location = Status.FAIL, "loaded", "/proc/modules"
        f.plain_apply = f"modprobe -r {module}"
        return
    if name in disabled:
        f.status, f.actual = Status.PASS, f.evidence(disabled[name])
    elif name in blacklisted:
        f.status, f.actual = Status.PASS, f.evidence(blacklisted[name])
    else:
        f.status, f.actual = Status.FAIL, "loadable"


SPECIAL_FILESYSTEMS = ("/dev/shm", "/proc")  # NixOS mounts these itself


def _mount(spec: dict[str, Any], level: dict[str, Any], system: System, f: Finding) -> None:
    path = spec["path"]
    wanted = level["expect"]["includes"]
    option = "boot.specialFileSystems" if path in SPECIAL_FILESYSTEMS else "fileSystems"
    f.nixos = [(f'{option}."{path}".options', list(wanted))]
    f.plain_fix = fixes.fstab_options(path, wanted)
    f.plain_apply = f"mount -o remount {path}"
    found = system.mount_options(path)
    if found is None:
        if not system.live and system.read("etc/fstab") is None:
            f.skip(system.tree.why("etc/fstab"))
        else:
            f.skip(f"{path} is not a separate mount here", applicable=False)
        return
    options = f.evidence(found).split(",")
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
    f.nixos = [(f"services.openssh.settings.{key}", level["set"])]
    f.plain_fix = fixes.sshd(key, _show(level["set"]))
    f.plain_apply = "systemctl reload sshd || systemctl reload ssh"
    settings = system.sshd
    if settings is None:
        f.skip("no SSH server configured", applicable=False)
        return
    where = (system.sshd_lines or {}).get(key.lower())
    f.location = "/etc/ssh/sshd_config"
    if where is not None:
        f.evidence(where)
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
    fixes_by_id: dict[str, tuple[Definition, str]] = {
        "firewall.enabled": (
            ("networking.firewall.enable", True),
            "nft add chain inet filter input '{ type filter hook input priority 0; policy drop; }'",
        ),
        "audit.auditd": (
            ("security.auditd.enable", True),
            "apt-get install auditd; systemctl enable --now auditd",
        ),
        "mac.apparmor": (
            ("security.apparmor.enable", True),
            "apt-get install apparmor; add apparmor=1 security=apparmor to the kernel command line",
        ),
        "sudo.wheel_only": (
            ("security.sudo.execWheelOnly", True),
            "",
        ),
    }
    definition, f.plain_fix = fixes_by_id[cid]
    f.nixos = [definition]
    state: bool | None = None
    why = OFFLINE
    if cid == "firewall.enabled":
        policy = system.input_policy
        state = None if policy is None else policy == "drop"
        f.actual = policy or ""
        if system.live:
            why = "no nft or iptables to read the ruleset"
    elif cid == "audit.auditd":
        state = system.process_running("auditd")
    elif cid == "mac.apparmor":
        if system.live:
            enabled = system.read("sys/module/apparmor/parameters/enabled")
            state = (enabled or "").strip() == "Y"
    else:
        sudo = next(
            (p for p in ("run/wrappers/bin/sudo", "usr/bin/sudo") if system.tree.exists(p)), None
        )
        st = system.tree.stat(sudo) if sudo else None
        if sudo is None or st is None:
            f.skip("sudo is not installed", applicable=False)
            return
        state = not st.st_mode & 0o001
        f.actual = f"{st.st_mode & 0o7777:04o}"
        f.location = "/" + sudo
        f.plain_fix = f"chgrp wheel {fixes.q(f.location)} && chmod 4750 {fixes.q(f.location)}"
    if state is None:
        f.skip(why)
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
    f.nixos_note = "declare what needs privileges in security.wrappers; remove other setuid bits"
    if system.is_nixos and unexpected:
        f.status, f.reason = Status.FAIL, "outside /run/wrappers: " + ", ".join(unexpected[:10])
        f.plain_fix = fixes.chmod("u-s,g-s", unexpected)
    else:
        f.status = Status.PASS
        f.reason = ", ".join(suid[:20]) if suid else "none"


def _world_writable(system: System, f: Finding) -> None:
    _, _, writable = system.special_files
    f.nixos_note = "create these with systemd.tmpfiles.rules and a mode others cannot write"
    f.actual = str(len(writable))
    f.status = Status.FAIL if writable else Status.PASS
    if writable:
        f.reason = ", ".join(writable[:10])
        directories = [p for p in writable if system.tree.is_dir(p)]
        files = [p for p in writable if p not in directories]
        # A shared directory keeps working with the sticky bit; a file just loses o+w.
        parts = [fixes.chmod("o-w", files)] if files else []
        parts += [fixes.chmod("+t", directories)] if directories else []
        f.plain_fix = "; ".join(parts)


def _uid0(system: System, f: Finding) -> None:
    if system.passwd is None:
        f.skip(system.tree.why("etc/passwd"))
        return
    f.location = "/etc/passwd"
    extra = [(n, row[0]) for n, row in system.passwd if len(row) > 2 and row[2] == "0"]
    extra = [(n, name) for n, name in extra if name != "root"]
    f.status = Status.FAIL if extra else Status.PASS
    f.actual = ", ".join(["root", *(name for _, name in extra)])
    if extra:
        f.line = extra[0][0]
        used = {row[2] for _, row in system.passwd if len(row) > 2}
        free = (str(uid) for uid in range(1000, 60000) if str(uid) not in used)
        moves = [(name, int(next(free))) for _, name in extra]
        f.nixos = [(f"users.users.{fixes.nix_attr(name)}.uid", uid) for name, uid in moves]
        f.plain_fix = fixes.passwd_uid(moves)


def _empty_passwords(system: System, f: Finding) -> None:
    if system.shadow is None:
        f.skip(f"not readable: {system.tree.why('etc/shadow')}")
        return
    f.location = "/etc/shadow"
    empty = [(n, row[0]) for n, row in system.shadow if len(row) > 1 and row[1] == ""]
    f.status = Status.FAIL if empty else Status.PASS
    f.actual = ", ".join(name for _, name in empty) or "none"
    if empty:
        f.line = empty[0][0]
        f.nixos = [(f"users.users.{fixes.nix_attr(name)}.hashedPassword", "!") for _, name in empty]
        f.plain_fix = fixes.shadow_lock([name for _, name in empty])


def _listening(system: System, f: Finding) -> None:
    f.nixos = [("networking.firewall.enable", True)]
    f.plain_fix = "stop the services, or filter them with a default-deny firewall"
    sockets = system.listening
    if sockets is None:
        f.skip(OFFLINE)
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
    f.nixos = [("boot.kernelPackages", Expr("pkgs.linuxPackages_hardened"))]
    f.plain_fix = "use a kernel built with these options"
    config = system.kernel_config
    if config is None:
        f.skip("no kernel config (/proc/config.gz, /boot/config-*)")
        return
    missing = [k for k, v in KCONFIG.items() if config.get(k) != v]
    f.status = Status.FAIL if missing else Status.PASS
    f.actual = f"{len(KCONFIG) - len(missing)}/{len(KCONFIG)} set"
    f.reason = ("not set: " + ", ".join(missing)) if missing else ""


Builtin = tuple[str, str, str, str, Callable[[System, Finding], None], dict[str, str]]
WALK_CHECKS = (_suid, _world_writable)  # the checks that wait for the file walk
BUILTINS: list[Builtin] = [
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


# The impermanence checks. pantheros.audit.impermanence runs them; they are listed here so a
# machine without a manifest reports them without loading the btrfs and persistence machinery.
IMPERMANENCE = (
    ("impermanence.root_fresh", "The root was made from the blank at this boot", "high"),
    ("impermanence.blank", "The blank is read-only and unchanged since it was made", "high"),
    ("impermanence.old_roots", "Old roots are read-only and within the retention policy", "medium"),
    ("impermanence.rollback", "The last rollback made a fresh root", "high"),
    ("impermanence.mounts", "Persistent storage and logs mounted, needed for boot", "high"),
    (
        "impermanence.persistence",
        "Every declared persistent path is bind-mounted from persistent storage",
        "medium",
    ),
    ("impermanence.identity", "machine-id and SSH host keys are persistent", "medium"),
    ("impermanence.persist_top", "Nothing writable by others atop persistent storage", "medium"),
)


def impermanence_findings(not_applicable: str = "") -> list[Finding]:
    """The impermanence checks, not yet run (or, given a reason, not applicable)."""
    findings = []
    for cid, title, severity in IMPERMANENCE:
        f = Finding(cid, "impermanence", title, severity, Status.SKIPPED)
        f.anchors = {"pantheros": "impermanence"}
        if not_applicable:
            f.skip(not_applicable, applicable=False)
        findings.append(f)
    return findings


def run_checks(
    system: System, level: str, waivers: dict[str, str], table: dict[str, Any] | None = None
) -> Iterator[Finding]:
    table = table or load_table()
    system.start_inventory()  # the file walk runs while the checks before it do
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
            by_effect=spec.get("verify") == "effect",
        )
        AREA_CHECKS[spec["area"]](spec, levels[level], system, f)
        yield waive(f, waivers)
    builtins = [
        (Finding(cid, area, title, severity, Status.SKIPPED, anchors=anchors), check)
        for cid, area, title, severity, check, anchors in BUILTINS
    ]
    # The checks of the file walk last: the others run while it does. Reported in table order.
    for f, check in sorted(builtins, key=lambda built: built[1] in WALK_CHECKS):
        check(system, f)
    for f, _ in builtins:
        yield waive(f, waivers)


def waive(f: Finding, waivers: dict[str, str]) -> Finding:
    if f.id in waivers and f.status is not Status.SKIPPED:
        f.status, f.reason = Status.WAIVED, waivers[f.id]
    return f
