"""The audit's file walk as it was before pantheros.audit.inventory: one `find` pass.

Kept as the reference the new walk must agree with (tests/audit/test_inventory.py) and as the
baseline bench/audit.py measures it against.
"""

from __future__ import annotations

import os
import re
import subprocess


def find_walk(
    base: str, tops: list[str], pruned: list[str]
) -> tuple[list[str], list[str], list[str]]:
    """(setuid/setgid files, files with capabilities, world-writable entries without sticky)."""
    prune: list[str] = []
    for path in pruned:
        # -path takes a glob: a literal path must not match what its brackets would.
        prune += ["-path", re.sub(r"([\\*?\[])", r"\\\1", path), "-o"]
    skipped = ["(", *prune[:-1], ")", "-prune", "-o"] if prune else []  # `( )` is an error
    argv = [
        "find",
        *tops,
        *skipped,
        "-type",
        "d",
        "-uid",
        "0",
        "!",
        "-perm",
        "/011",
        "-prune",
        "-o",
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
    proc = subprocess.run(
        argv, capture_output=True, errors="surrogateescape", text=True, check=False
    )
    suid: list[str] = []
    caps: list[str] = []
    writable: list[str] = []
    cut = len(base.rstrip("/"))
    for record in proc.stdout.split("\0"):
        if not record:
            continue
        mode_text, kind, full = record.split(" ", 2)
        mode = int(mode_text, 8)
        rel = full[cut:]
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
