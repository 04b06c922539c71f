"""A full `panther audit` of this machine beside `lynis audit system --quick`, same run.

Prints both wall times and the ratio (target: >= 150x, and panther <= 0.3 s), the spread of
panther's runs, its CPU time (user + system of it and its walker: what the machine's load does
not inflate), where its time goes (the file walk as the audit runs it, in `pantheros-walk` with
its threads and with one, the `find` walk it falls back to, the single `find` walk before both,
and everything else),
then which Lynis test ids and kernel-hardening-checker checks the hardening table covers (from
its anchors). Lynis comes with `scripts/setup --tests`.

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
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from _lab import PANTHER, REPO, timed

sys.path.insert(0, str(REPO))
from tests.audit.findwalk import find_walk

RUNS = 5


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    if shutil.which("lynis") is None:
        sys.exit("lynis not found: run scripts/setup --tests")
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
        walks, rest_s = breakdown()
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
    print(f"{'tool':44} {'seconds':>9}")
    spread = f"(runs {min(walls):.3f}-{max(walls):.3f})"
    print(f"{f'panther audit (all checks, median of {RUNS})':44} {panther_s:9.3f} {spread}")
    print(f"{'  CPU (user + system, with its find processes)':44} {panther_cpu:9.3f}")
    for name, (seconds, cpu) in walks.items():
        print(f"{'  ' + name:44} {seconds:9.3f} (CPU {cpu:.3f})")
    print(f"{'  every other check (in process)':44} {rest_s:9.3f}")
    print(f"{'lynis audit system --quick':44} {lynis_s:9.3f}")
    ratio = lynis_s / panther_s
    print(f"ratio (lynis / panther): {ratio:.1f}x (target >= 150x, panther <= 0.3 s)")

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


def breakdown() -> tuple[dict[str, tuple[float, float]], float]:
    """Seconds and CPU seconds of the file walk four ways (each the median of RUNS, in this
    process), and of all other checks."""
    from pantheros.audit import inventory, walkstart
    from pantheros.audit.checks import run_checks
    from pantheros.audit.system import System

    system = System(base=Path("/"), live=True)
    tops, pruned = walkstart.plan("/")
    skipped = frozenset(pruned)
    threads = walkstart.default_threads()
    ways = {
        f"the walk as the audit runs it ({threads} threads)": lambda: inventory.walk(
            "/", tops, skipped
        ),
        "the walk with one thread": lambda: inventory.Walk("/", tops, skipped, 1).result(),
        f"find's walk, the fallback ({inventory.default_lanes()} find now)": lambda: inventory.Walk(
            "/", tops, skipped, find=True
        ).result(),
        "the single find walk before both": lambda: find_walk("/", tops, pruned),
    }
    walks = {}
    for name, way in ways.items():
        seconds, cpu = [], []
        for _ in range(RUNS):
            before = own_cpu()
            seconds.append(timed(way))
            cpu.append(own_cpu() - before)
        walks[name] = (statistics.median(seconds), statistics.median(cpu))
    system.special_files  # noqa: B018 - the checks below must not time the walk
    start = time.perf_counter()
    list(run_checks(system, "baseline", {}))
    return walks, time.perf_counter() - start


def own_cpu() -> float:
    """CPU seconds of this process and of its waited-for children (walk helpers, find)."""
    mine = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


if __name__ == "__main__":
    main()
