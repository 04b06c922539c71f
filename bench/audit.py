"""A full `panther audit` of this machine beside `lynis audit system --quick`, same run.

Prints both wall times and the ratio (target: >= 40x, and panther <= 0.7 s), panther's CPU time
(user + system: what the machine's load does not inflate), where panther's time goes (the one
file walk against everything else), then which Lynis test ids and kernel-hardening-checker checks
the hardening table covers (from its anchors). Installs Debian's lynis if missing.

panther runs as installed code runs: from bytecode (kept in a temporary PYTHONPYCACHEPREFIX,
written by a first, unmeasured run that also warms the caches both tools read through).

    sudo .venv/bin/python bench/audit.py
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _lab import PANTHER, REPO, timed

RUNS = 5


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    if shutil.which("lynis") is None:
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "lynis"], check=True, capture_output=True
        )
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = f"{tmp}/pycache"

        def audit() -> None:
            subprocess.run([*PANTHER, "audit", "--json"], capture_output=True, env=env, check=False)

        audit()
        walls, cpus = [], []
        for _ in range(RUNS):
            before = children_cpu()
            walls.append(timed(audit))
            cpus.append(children_cpu() - before)
        panther_s, panther_cpu = statistics.median(walls), statistics.median(cpus)
        walk_s, rest_s = breakdown()
        lynis_s = timed(
            lambda: subprocess.run(
                [
                    "lynis",
                    "audit",
                    "system",
                    "--quick",
                    "--no-colors",
                    "--logfile",
                    f"{tmp}/lynis.log",
                    "--report-file",
                    f"{tmp}/report.dat",
                ],
                capture_output=True,
                check=False,
            )
        )
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average while measuring: {load} on {os.cpu_count()} CPUs")
    print(f"{'tool':40} {'seconds':>9}")
    print(f"{'panther audit (all checks, median of 5)':40} {panther_s:9.3f}")
    print(f"{'  of which CPU (user + system)':40} {panther_cpu:9.3f}")
    print(f"{'  the one file walk (in process)':40} {walk_s:9.3f}")
    print(f"{'  every other check (in process)':40} {rest_s:9.3f}")
    print(f"{'lynis audit system --quick':40} {lynis_s:9.3f}")
    ratio = lynis_s / panther_s
    print(f"ratio (lynis / panther): {ratio:.1f}x (target >= 40x, panther <= 0.7 s)")

    table = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
    from pantheros.audit.checks import BUILTINS

    anchors = [(c["id"], c["anchors"]) for c in table["checks"]] + [(b[0], b[5]) for b in BUILTINS]
    by_source: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for cid, refs in anchors:
        for source in ("lynis", "khc"):
            if source in refs:
                by_source[source][refs[source]].append(cid)
    for source, title in (("lynis", "Lynis test id"), ("khc", "kernel-hardening-checker check")):
        print(f"\n{title:34} panther checks")
        for ref, ids in sorted(by_source[source].items()):
            print(f"{ref:34} {', '.join(ids)}")


def breakdown() -> tuple[float, float]:
    """Seconds of the inventory walk, and of all other checks, in this process."""
    from pantheros.audit.checks import run_checks
    from pantheros.audit.system import System

    system = System(base=Path("/"), live=True)
    start = time.perf_counter()
    system.special_files  # noqa: B018 - computing the cached walk is the point
    walk = time.perf_counter() - start
    start = time.perf_counter()
    list(run_checks(system, "baseline", {}))
    return walk, time.perf_counter() - start


if __name__ == "__main__":
    main()
