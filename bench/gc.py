"""`roots gc` in bulk: deleting 2,000 old roots, beside `btrfs subvolume delete` of the same.

One image holds N + 10 read-only old roots (default N = 2,000; snapshots of a root of 1,000
files, every 100th with a nested subvolume) and a retention of `max_count: 10`, so gc deletes
the N oldest. gc is timed as `panther roots gc` runs it (pantheros.impermanence.rollback.gc in a
fresh Python process: the lock, the scan, pins, mounts in every mount namespace, nested
subvolumes first, each root checked again just before it goes, and the final commit). The
baseline, on a copy of the same image, is one `btrfs subvolume delete` of the same paths (nested
ones first, their parents made writable by `btrfs property set`, no checks at all) and
`btrfs filesystem sync`. Each copy is mounted afresh.

    sudo .venv/bin/python bench/gc.py [--roots 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from _lab import format_image, many_old_roots, mounted_top, populate, sh, timed, workspace

KEEP = 10
NESTED_EVERY = 100
TARGET_S = 10.0

GC = """
import sys
from pathlib import Path
from pantheros import manifest
from pantheros.impermanence import rollback
plan, deleted = rollback.gc(Path(sys.argv[1]), manifest.load(Path(sys.argv[2])), dry_run=False)
print(len([d for d in plan.decisions if not d.keep]), len(deleted))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roots", type=int, default=2_000, help="old roots gc deletes")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from pantheros import manifest as manifests

    with workspace() as base:
        manifest = base / "manifest.json"
        doc = json.loads(manifests.bundled_path("lab").read_text())
        doc["impermanence"]["retention"] = {"keep_min": 3, "max_count": KEEP}
        manifest.write_text(json.dumps(doc))
        total = args.roots + KEEP
        print(f"preparing: {total:,} old roots ...", flush=True)
        image = format_image(base, "base.img", 4, manifest)
        with mounted_top(base, image, "setup", setup=True) as top:
            populate(top / "root", 1_000)
            names = [f"{n:012d}-gc" for n in range(total)]
            many_old_roots(top, top / "root", names, nested_every=NESTED_EVERY)
            sh("btrfs", "filesystem", "sync", str(top))
        doomed = names[: args.roots]
        paths = [
            f"old_roots/{name}/nested" for n, name in enumerate(doomed) if n % NESTED_EVERY == 0
        ] + [f"old_roots/{name}" for name in doomed]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent / "src")}

        def gc(top: Path) -> None:
            proc = subprocess.run(
                [sys.executable, "-c", GC, str(top), str(manifest)],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
            expected = [str(args.roots), str(len(paths))]  # roots, and paths with nested ones
            if proc.returncode != 0 or proc.stdout.split() != expected:
                raise SystemExit(f"gc: exit {proc.returncode}: {proc.stdout} {proc.stderr}")

        def raw(top: Path) -> None:
            # A subvolume in a read-only one goes only once that one is writable.
            for path in paths:
                if path.endswith("/nested"):
                    sh(
                        "btrfs",
                        "property",
                        "set",
                        str(top / path).removesuffix("/nested"),
                        "ro",
                        "false",
                    )
            proc = subprocess.run(
                ["btrfs", "subvolume", "delete", *(str(top / p) for p in paths)],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode != 0:
                raise SystemExit(f"btrfs subvolume delete: {proc.stderr.strip()[-2000:]}")
            sh("btrfs", "filesystem", "sync", str(top))

        def on_copy(label: str, action: Callable[[Path], None]) -> float:
            copy = base / f"{label}.img"
            sh("cp", "--sparse=always", str(image), str(copy))
            subprocess.run(["sync"], check=True)
            try:
                with mounted_top(base, copy, label) as top:
                    seconds = timed(lambda: action(top))
                    left = len(list((top / "old_roots").iterdir()))
                    if left != KEEP:
                        raise SystemExit(f"{label}: {left} old roots left, not {KEEP}")
            finally:
                copy.unlink()
            return seconds

        walls: dict[str, list[float]] = {"gc": [], "raw": []}
        for _ in range(args.runs):
            walls["gc"].append(on_copy("gc", gc))
            walls["raw"].append(on_copy("raw", raw))

    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average after measuring: {load} on {os.cpu_count()} CPUs")
    print(f"{'method':52} {'s':>7} {'(min-max of runs)':>18}")
    for name, label in (
        (f"roots gc of {args.roots:,} old roots (all its checks)", "gc"),
        ("btrfs subvolume delete of the same + sync (no checks)", "raw"),
    ):
        spread = f"{min(walls[label]):.2f}-{max(walls[label]):.2f}"
        print(f"{name:52} {statistics.median(walls[label]):7.2f} {spread:>18}")
    gc_s = statistics.median(walls["gc"])
    print(
        f"roots gc: {gc_s:.2f} s (target <= {TARGET_S:.0f} s); "
        f"gc / raw delete: {gc_s / statistics.median(walls['raw']):.2f}x"
    )


if __name__ == "__main__":
    main()
