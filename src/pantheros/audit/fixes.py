"""Fixes that compose: NixOS definitions that merge into one snippet, shell edits that stack.

A NixOS fix is a list of definitions (option path, value). Gathered over a report, list options
are joined, line options (`boot.extraModprobeConfig`) concatenated and equal definitions kept
once, so `panther audit --fix-snippet` prints one module a user can paste.

A plain fix (for systems other than NixOS) edits configuration files so that applying every
fix of a report, in any order, leaves all of them in effect: each one replaces or adds the line
for its own key and leaves other keys alone, and running it twice changes nothing more. What
makes the edit take effect (`sysctl --system`, a reboot) is kept apart, in `plain_apply`. Every
file a plain fix touches is written as a single-quoted absolute path ('/etc/...'), so a test can
apply the fixes to a scratch tree by rewriting that prefix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# Option values


@dataclass(frozen=True)
class Expr:
    """A Nix expression written as is (`pkgs.linuxPackages_hardened`)."""

    text: str


@dataclass(frozen=True)
class Lines:
    """A `types.lines` value: definitions are joined with newlines."""

    text: str


Definition = tuple[str, Any]


def nix_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return '"' + escaped.replace("\n", "\\n") + '"'


def nix_value(value: Any) -> str:
    if isinstance(value, Expr):
        return value.text
    if isinstance(value, Lines):
        return nix_string(value.text + "\n")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[ " + " ".join(nix_value(v) for v in value) + " ]"
    return nix_string(str(value))


def nix_attr(name: str) -> str:
    """An attribute name, quoted unless it is a plain identifier."""
    return name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_'-]*", name) else nix_string(name)


def render(definitions: Sequence[Definition]) -> str:
    return " ".join(f"{path} = {nix_value(value)};" for path, value in definitions)


def merge(definitions: Iterable[Definition]) -> tuple[list[Definition], list[str]]:
    """One definition per option; the second list names conflicting ones (first kept)."""
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    for path, value in definitions:
        if path not in merged:
            merged[path] = list(value) if isinstance(value, list) else value
        elif isinstance(value, list) and isinstance(merged[path], list):
            merged[path] += [v for v in value if v not in merged[path]]
        elif isinstance(value, Lines) and isinstance(merged[path], Lines):
            if value.text not in merged[path].text.split("\n"):
                merged[path] = Lines(merged[path].text + "\n" + value.text)
        elif merged[path] != value:
            conflicts.append(
                f"{path}: wanted both {nix_value(merged[path])} and {nix_value(value)}"
            )
    return list(merged.items()), conflicts


def snippet(fixes: Sequence[tuple[str, Sequence[Definition], str]]) -> str:
    """A NixOS module from (check id, definitions, note) of every failure."""
    definitions, conflicts = merge(d for _, defs, _ in fixes for d in defs)
    lines = [
        "# panther audit: fixes for every failing check. Add this file to `imports`.",
        "{ lib, pkgs, ... }:",
        "{",
    ]
    lines += [f"  {path} = {nix_value(value)};" for path, value in definitions]
    notes = [(cid, note) for cid, defs, note in fixes if note and not defs]
    if notes:
        lines.append("")
        lines.append("  # Fixes that need a decision (no single option fits):")
        lines += [f"  # {cid}: {note}" for cid, note in notes]
    lines += [f"  # conflict, first kept: {c}" for c in conflicts]
    lines.append("}")
    return "\n".join(lines) + "\n"


# Plain fixes (shell); q() quotes a path so the test's prefix rewrite sees "'/".


def q(path: str) -> str:
    return "'" + path.replace("'", "'\\''") + "'"


SYSCTL_FILE = "/etc/sysctl.d/99-zz-pantheros.conf"  # read after every other sysctl.d file


def _bre(text: str) -> str:
    """text as a literal in a sed basic regular expression between double quotes."""
    return re.sub(r"([.\[\]*^$\\/])", r"\\\1", text)


def sysctl(key: str, value: Any) -> str:
    """Comment the key out wherever it is set, then set it in one file of our own."""
    line = f"{key} = {value}"
    return (
        f'for f in {q("/etc/sysctl.conf")} {q("/etc/sysctl.d/")}*.conf; do [ -f "$f" ] && '
        f'sed -i "s/^[[:space:]]*-\\{{0,1\\}}{_bre(key)}[[:space:]]*=/# &/" "$f"; done; '
        f"mkdir -p {q('/etc/sysctl.d')} && echo '{line}' >> {q(SYSCTL_FILE)}"
    )


def modprobe_off(module: str) -> str:
    line = f"install {module} /bin/false"
    path = q(f"/etc/modprobe.d/pantheros-{module}.conf")
    return f"mkdir -p {q('/etc/modprobe.d')} && echo '{line}' > {path}"


def sshd(key: str, value: str) -> str:
    """sshd keeps the first value it reads: comment the key out everywhere, then put it first."""
    return (
        f"for f in {q('/etc/ssh/sshd_config.d/')}*.conf {q('/etc/ssh/sshd_config')}; do "
        f'[ -f "$f" ] && sed -i "s/^[[:space:]]*{_bre(key)}[[:space:]]/# &/I" "$f"; done; '
        f'f={q("/etc/ssh/sshd_config")}; mkdir -p "${{f%/*}}" && touch "$f" && '
        f'{{ echo \'{key} {value}\'; cat "$f"; }} > "$f.pantheros" && '
        'cat "$f.pantheros" > "$f" && rm "$f.pantheros"'
    )


def grub_param(param: str) -> str:
    """Append the parameter to GRUB_CMDLINE_LINUX unless it is there (the kernel takes the last
    value of a repeated key, so appending also overrides an earlier conflicting one)."""
    pattern = re.sub(r"([.\[\]()*+?{}|^$\\])", r"\\\1", param)  # literal in grep -E
    return (
        f'f={q("/etc/default/grub")}; mkdir -p "${{f%/*}}" && touch "$f"; '
        f'grep -q \'^GRUB_CMDLINE_LINUX=\' "$f" || echo \'GRUB_CMDLINE_LINUX=""\' >> "$f"; '
        f'grep -Eq \'^GRUB_CMDLINE_LINUX="([^"]* )?{pattern}[ "]\' "$f" || '
        f'sed -i \'s/^\\(GRUB_CMDLINE_LINUX="[^"]*\\)"/\\1 {_bre(param)}"/\' "$f"'
    )


FSTYPES = {"/tmp": "tmpfs", "/dev/shm": "tmpfs", "/proc": "proc"}


def fstab_options(mountpoint: str, options: Sequence[str]) -> str:
    """Add the missing options to the mount point's fstab line (or add a line for it)."""
    wanted = ",".join(options)
    awk = (
        'BEGIN { n = split(o, want, ",") } '
        '$1 !~ /^#/ && $2 == p { for (i = 1; i <= n; i++) if (index("," $4 ",", "," want[i] ",")'
        ' == 0) $4 = $4 "," want[i] } { print }'
    )
    text = f'f={q("/etc/fstab")}; touch "$f"; '
    fstype = FSTYPES.get(mountpoint)
    if fstype is not None:
        text += (
            f"awk -v p={mountpoint} '$1 !~ /^#/ && $2 == p {{ found = 1 }} END {{ exit !found }}'"
            f' "$f" || echo \'{fstype} {mountpoint} {fstype} defaults 0 0\' >> "$f"; '
        )
    text += (
        f'awk -v p={mountpoint} -v o={wanted} \'{awk}\' "$f" > "$f.pantheros" && '
        'cat "$f.pantheros" > "$f" && rm "$f.pantheros"'
    )
    return text


def chmod(mode: str, paths: Sequence[str]) -> str:
    return f"chmod {mode} " + " ".join(q(p) for p in paths)


def _sed(expression: str) -> str:
    """A sed -e argument in single quotes: names read from a tree are data, never shell."""
    return "-e '" + expression.replace("'", "'\\''") + "'"


def _replacement(text: str) -> str:
    return re.sub(r"([\\&/])", r"\\\1", text)


def shadow_lock(users: Sequence[str]) -> str:
    """Put '*' where the empty password is: no password will ever match it."""
    edits = " ".join(_sed(f"s/^{_bre(u)}::/{_replacement(u)}:*:/") for u in users)
    return f"sed -i {edits} {q('/etc/shadow')}"


def passwd_uid(moves: Sequence[tuple[str, int]]) -> str:
    edits = " ".join(
        _sed(f"s/^{_bre(user)}:\\([^:]*\\):0:/{_replacement(user)}:\\1:{uid}:/")
        for user, uid in moves
    )
    return f"sed -i {edits} {q('/etc/passwd')}"
