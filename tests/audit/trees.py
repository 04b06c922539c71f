"""An offline tree that fails every check an offline tree can show, from the table itself."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pantheros.audit.checks import load_table

LEVEL = "strict"


def bad_value(expect: dict[str, Any]) -> Any:
    """A value outside what the table expects."""
    if "min" in expect:
        return expect["min"] - 1
    if "max" in expect:
        return expect["max"] + 1
    wanted = expect["equals"] if "equals" in expect else expect["one_of"][0]
    if isinstance(wanted, bool):
        return "no" if wanted else "yes"
    if isinstance(wanted, int):
        return wanted + 1
    return "QUIET" if wanted.isupper() else "yes"


def failing_tree(root: Path) -> Path:
    """sysctl.d, sshd_config, fstab, GRUB defaults, users and files all wrong at LEVEL."""
    checks = [c for c in load_table()["checks"] if LEVEL in c["levels"]]
    sysctls = [c for c in checks if c["area"] == "sysctl"]
    ssh = [c for c in checks if c["area"] == "ssh"]
    lines = [f"{c['key']} = {bad_value(c['levels'][LEVEL]['expect'])}" for c in sysctls]
    files = {
        # Spread over the places sysctl reads, one with the "ignore errors" dash.
        "etc/sysctl.d/10-bad.conf": "\n".join(lines[1:-1]) + "\n",
        "etc/sysctl.conf": lines[0] + "\n",
        "usr/lib/sysctl.d/50-default.conf": "-" + lines[-1] + "\n",
        # sshd keeps the first value: the drop-in one wins over the main file.
        "etc/ssh/sshd_config.d/10-local.conf": (
            f"{ssh[0]['key']} {bad_value(ssh[0]['levels'][LEVEL]['expect'])}\n"
        ),
        "etc/ssh/sshd_config": "".join(
            f"{c['key']} {bad_value(c['levels'][LEVEL]['expect'])}\n" for c in ssh[1:]
        )
        + "Match User backup\n  PasswordAuthentication yes\n",
        "etc/fstab": (
            "# comment /tmp\n"
            "tmpfs /tmp tmpfs mode=1777 0 0\n"
            "tmpfs /dev/shm tmpfs defaults 0 0\n"
            "proc /proc proc defaults 0 0\n"
            "UUID=1234 /boot vfat umask=0077 0 2\n"
        ),
        "etc/default/grub": 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="quiet init_on_alloc=0"\n',
        "etc/passwd": (
            "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbob:x:1000:100::/:/bin/sh\n"
        ),
        "etc/shadow": "root:!:1::::::\ntoor:!:1::::::\nbob::1::::::\n",
        "etc/NIXOS": "",
        "usr/bin/tool": "#!/bin/sh\n",
        "var/drop/file": "x",
    }
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    os.chmod(root / "usr/bin/tool", 0o4755)
    os.chmod(root / "var/drop", 0o777)
    os.chmod(root / "var/drop/file", 0o666)
    return root
