"""`panther diff` beside the raw send pipeline, find-new and a full walk, with recall.

A lab whose blank holds N files (default 200,000) and a root with 1,000 mixed changes recorded
by the test suite's mutation script (tests/state/mutate.py). Every method runs in the same run on
the same root; recall is the share of the recorded changes each method names. The default
method (the trees) and the raw pipeline alternate --runs times: medians, spread, and the CPU
time each used (user + system, which the machine's load does not inflate). panther runs as
installed code runs, from bytecode (kept in a temporary PYTHONPYCACHEPREFIX).

    sudo .venv/bin/python bench/diff.py [--files 200000] [--changes 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _lab import PANTHER, REPO, sh, timed, workspace

sys.path.insert(0, str(REPO))
from pantheros.machine import Machine
from tests.state import mutate
from tests.state.test_diff import bless_blank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with workspace() as base:
        lab = base / "lab"
        sh(*PANTHER, "lab", "up", str(lab), "--size", "8G")
        root = lab / "mnt"
        print(
            f"preparing: a blank of {args.files:,} files, {args.changes:,} changes ...", flush=True
        )
        files = [f.encode() for f in populate_paths(root, args.files)]
        bless_blank(lab)  # the root with those files is the blank now, recorded as such
        machine = Machine.select(str(lab))
        truth = mutate.apply(root, files, random_changes=max(0, args.changes - 30))
        truth_paths = {os.fsdecode(p) for p in truth if truth[p] != "times"}
        subprocess.run(["sync"], check=True)

        pycache = str(base / "pycache")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pycache
        out: dict[str, Any] = {}  # method -> its `diff --json` document

        def panther_diff(method: str) -> None:
            argv = [*PANTHER, "diff", "--json", "--lab", str(lab), "--method", method]
            proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                sys.exit(f"panther diff --method {method}: {proc.stderr.strip()}")
            out[method] = json.loads(proc.stdout)

        panther_diff("auto")  # compiles the bytecode, warms the caches both sides read through
        chosen = out["auto"]["method"]
        walls: dict[str, list[float]] = {"tree": [], "raw": []}
        cpus: dict[str, list[float]] = {"tree": [], "raw": []}
        dump: list[str] = []
        for _ in range(args.runs):
            with machine.top_level() as top:
                snap = top / "bench-snap"
                # The whole raw procedure: a read-only snapshot to send, the pipeline, the
                # cleanup (panther's own figure includes the same snapshot's life).
                pipeline = (
                    f"btrfs subvolume snapshot -r {top}/root {snap} >/dev/null && "
                    f"btrfs send --quiet --no-data -p {top}/root-blank {snap} "
                    # receive may exit at the stream's END before send has closed: its status
                    # counts.
                    f"| btrfs receive --dump; status=${{PIPESTATUS[1]}}; "
                    f"btrfs subvolume delete {snap} >/dev/null; exit $status"
                )

                def raw(pipeline: str = pipeline) -> None:
                    dump[:] = [sh("bash", "-c", pipeline).stdout]

                measure("raw", raw, walls, cpus)
            measure("tree", lambda: panther_diff("auto"), walls, cpus)
        results = [
            (
                f"panther diff (auto: {chosen})",
                walls["tree"],
                recall(truth_paths, found(out["auto"])),
            ),
        ]
        mentioned = set()
        for line in dump[0].splitlines():
            for token in re.findall(r"\./bench-snap(/\S*)", line):
                mentioned.add(token)
        results.append(
            (
                "snapshot + send --no-data | receive --dump",
                walls["raw"],
                recall(truth_paths, mentioned),
            )
        )
        send_s = timed(lambda: panther_diff("send"))
        results.append(
            ("panther diff --method send", [send_s], recall(truth_paths, found(out["send"])))
        )
        with machine.top_level() as top:
            marker = sh("btrfs", "subvolume", "find-new", str(top / "root-blank"), "9999999")
            gen = marker.stdout.split()[-1]
            found_new: list[str] = []
            find_s = timed(
                lambda: found_new.append(
                    sh("btrfs", "subvolume", "find-new", str(top / "root"), gen).stdout
                )
            )
            paths = {
                "/" + ln.split(" ", 16)[-1]
                for ln in found_new[0].splitlines()
                if ln.startswith("inode")
            }
            results.append(
                ("btrfs subvolume find-new (fs-diff.sh)", [find_s], recall(truth_paths, paths))
            )
        walk_s = timed(lambda: panther_diff("walk"))
        results.append(
            ("panther diff --method walk", [walk_s], recall(truth_paths, found(out["walk"])))
        )

    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average after measuring: {load} on {os.cpu_count()} CPUs")
    print(f"{'method':44} {'seconds':>9} {'(min-max of runs)':>18} {'recall':>8}")
    for name, seconds, rec in results:
        spread = f"{min(seconds):.3f}-{max(seconds):.3f}" if len(seconds) > 1 else ""
        print(f"{name:44} {statistics.median(seconds):9.3f} {spread:>18} {rec:8.1%}")
    tree_s, raw_s = statistics.median(walls["tree"]), statistics.median(walls["raw"])
    ratios = [t / r for t, r in zip(walls["tree"], walls["raw"], strict=True)]
    print(
        f"panther / raw send pipeline: {tree_s / raw_s:.2f}x (each run: "
        f"{', '.join(f'{r:.2f}' for r in ratios)}; target <= 0.5x)"
    )
    cpu_ratio = statistics.median(cpus["tree"]) / statistics.median(cpus["raw"])
    print(
        f"CPU time, panther / raw: {statistics.median(cpus['tree']):.3f} s / "
        f"{statistics.median(cpus['raw']):.3f} s = {cpu_ratio:.2f}x"
    )
    print(f"panther --method send / raw send pipeline: {send_s / raw_s:.2f}x")
    print(f"full walk / panther: {walk_s / tree_s:.1f}x")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    name: str,
    action: Callable[[], object],
    walls: dict[str, list[float]],
    cpus: dict[str, list[float]],
) -> None:
    before = children_cpu()
    walls[name].append(timed(action))
    cpus[name].append(children_cpu() - before)


def found(report: dict[str, Any]) -> set[str]:
    return {c["path"] for c in report["changes"]}


def populate_paths(root: Path, files: int) -> list[str]:
    return [os.fsdecode(p) for p in mutate.populate(root, files)]


def recall(truth: set[str], found: set[str]) -> float:
    return len(truth & found) / len(truth) if truth else 1.0


if __name__ == "__main__":
    main()
