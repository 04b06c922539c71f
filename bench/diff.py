"""`panther diff` beside the raw send pipeline, find-new and a full walk, with recall.

A lab whose blank holds N files (default 200,000) and a root with 1,000 mixed changes recorded
by the test suite's mutation script (tests/state/mutate.py). Every method runs in the same run on
the same root; recall is the share of the recorded changes each method names.

    sudo .venv/bin/python bench/diff.py [--files 200000] [--changes 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from _lab import PANTHER, REPO, sh, timed, workspace

sys.path.insert(0, str(REPO))
from tests.state import mutate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()
    from pantheros.machine import Machine

    with workspace() as base:
        lab = base / "lab"
        sh(*PANTHER, "lab", "up", str(lab), "--size", "8G")
        root = lab / "mnt"
        print(
            f"preparing: a blank of {args.files:,} files, {args.changes:,} changes ...", flush=True
        )
        files = [f.encode() for f in populate_paths(root, args.files)]
        sh(*PANTHER, "lab", "down", str(lab))
        machine = Machine.select(str(lab))
        with machine.top_level() as top:
            from pantheros import btrfs

            blank = top / "root-blank"
            btrfs.set_readonly(blank, False)
            btrfs.delete_subvolume(blank)
            btrfs.snapshot(top / "root", blank, readonly=True)
        sh(*PANTHER, "lab", "up", str(lab))
        sh(*PANTHER, "lab", "reboot", str(lab))
        truth = mutate.apply(root, files, random_changes=max(0, args.changes - 30))
        truth_paths = {os.fsdecode(p) for p in truth if truth[p] != "times"}
        subprocess.run(["sync"], check=True)

        results = []
        out: dict[str, Any] = {}  # method -> its `diff --json` document

        def panther_diff(method: str) -> None:
            proc = sh(*PANTHER, "diff", "--json", "--lab", str(lab), "--method", method)
            out[method] = json.loads(proc.stdout)

        send_s = timed(lambda: panther_diff("send"))
        found = {c["path"] for c in out["send"]["changes"]}
        results.append(("panther diff (send)", send_s, recall(truth_paths, found)))

        with machine.top_level() as top:
            snap = top / "bench-snap"
            # The whole raw procedure: a read-only snapshot to send, the pipeline, the cleanup
            # (panther's own figure includes the same snapshot's life).
            pipeline = (
                f"btrfs subvolume snapshot -r {top}/root {snap} >/dev/null && "
                f"btrfs send --quiet --no-data -p {top}/root-blank {snap} "
                # receive may exit at the stream's END before send has closed: its status counts.
                f"| btrfs receive --dump; status=${{PIPESTATUS[1]}}; "
                f"btrfs subvolume delete {snap} >/dev/null; exit $status"
            )
            dump: list[str] = []
            raw_s = timed(lambda: dump.append(sh("bash", "-c", pipeline).stdout))
            mentioned = set()
            for line in dump[0].splitlines():
                for token in re.findall(r"\./bench-snap(/\S*)", line):
                    mentioned.add(token)
            results.append(
                (
                    "snapshot + send --no-data | receive --dump",
                    raw_s,
                    recall(truth_paths, mentioned),
                )
            )
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
                ("btrfs subvolume find-new (fs-diff.sh)", find_s, recall(truth_paths, paths))
            )

        walk_s = timed(lambda: panther_diff("walk"))
        walked = {c["path"] for c in out["walk"]["changes"]}
        results.append(("full walk of both trees", walk_s, recall(truth_paths, walked)))

    print(f"{'method':40} {'seconds':>9} {'recall':>8}")
    for name, seconds, rec in results:
        print(f"{name:40} {seconds:9.3f} {rec:8.1%}")
    print(f"panther / raw send pipeline: {send_s / raw_s:.2f}x (target <= 1.5x)")
    print(f"full walk / panther:         {walk_s / send_s:.2f}x (target >= 4x)")


def populate_paths(root: Path, files: int) -> list[str]:
    return [os.fsdecode(p) for p in mutate.populate(root, files)]


def recall(truth: set[str], found: set[str]) -> float:
    return len(truth & found) / len(truth) if truth else 1.0


if __name__ == "__main__":
    main()
