"""The command line's start-up: lazy command modules (as shipped, D14) beside eager imports.

Eager imports would let every handler be a plain reference; this measures what that would cost.
Each figure is the median wall time of a fresh interpreter, in the same run:
- `panther --version`: the parser is built and nothing runs;
- `panther lab status DIR --json` for a directory with no lab: one light command;
- the same two with every command module imported first (the eager alternative);
- `python -c pass`: the interpreter alone.

    .venv/bin/python bench/cli_startup.py
"""

from __future__ import annotations

import pkgutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Every handler module (the commands layer, and the spec tool's), as the eager alternative would
# import them; found on disk, so that a new area is measured without a line here.
COMMAND_MODULES = tuple(
    f"{package}.{module.name}"
    for package, folder in (
        ("pantheros.commands", "pantheros/commands"),
        ("panther_spec", "panther_spec"),
    )
    for module in pkgutil.iter_modules([str(Path(__file__).resolve().parents[1] / "src" / folder)])
    if package == "pantheros.commands" or module.name in ("commands", "progress", "trace")
)
RUNS = 15


def median_ms(code: str) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def run(argv: list[str], *, eager: bool) -> str:
    imports = "".join(f"import {m}\n" for m in COMMAND_MODULES) if eager else ""
    return f"{imports}import sys\nfrom pantheros.cli import main\nsys.exit(main({argv!r}))"


def main() -> None:
    with tempfile.TemporaryDirectory() as empty:
        commands = {"--version": ["--version"], "lab status": ["lab", "status", empty, "--json"]}
        floor = median_ms("pass")
        print(f"median of {RUNS} fresh interpreters, milliseconds (python -c pass: {floor:.0f})")
        print(f"{'command':14} {'lazy':>7} {'eager':>7} {'eager / lazy':>13}")
        for name, argv in commands.items():
            lazy = median_ms(run(argv, eager=False))
            eager = median_ms(run(argv, eager=True))
            print(f"{name:14} {lazy:7.0f} {eager:7.0f} {eager / lazy:12.1f}x")


if __name__ == "__main__":
    main()
