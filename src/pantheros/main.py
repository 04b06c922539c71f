"""The `panther` command's entry point: what starts before the command line is loaded.

`panther audit` of this machine spends most of its time in one file walk that needs nothing the
command line knows, so the walk starts here, first, and runs while the rest loads; the audit
takes it over when it walks exactly that (pantheros.audit.inventory.ahead, D156). Everything
else goes straight to pantheros.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def audits_this_machine(words: Sequence[str]) -> bool:
    """Whether the command line is `panther audit` of the running machine (no --root, no
    --lab; nor only its help)."""
    return words[:1] == ["audit"] and not any(
        word.startswith(("--root", "--lab", "-h", "--help")) for word in words[1:]
    )


def main() -> int:
    if audits_this_machine(sys.argv[1:]):
        from pantheros.audit import inventory

        inventory.ahead()
    from pantheros.cli import main as run

    return run()
