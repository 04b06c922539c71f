"""Rollback wall time: the boot step beside the widely copied shell recipe.

All run on copies of one image holding 10 old roots of N files each (default 200,000) plus a dirty
root of N files, each copy mounted afresh, as a boot finds its disk. The shell recipe is the
impermanence README's: `mv` to old_roots/<mtime date>, `find -mtime +30` and a recursive delete over
`btrfs subvolume list -o`, `btrfs subvolume create`; it prunes on the boot path and does not commit,
so a second line times it followed by `btrfs filesystem sync` (what durability costs). The boot step
(`pantheros-btrfs rollback`, what the initrd runs: D155) finds the fresh root that stage 2 of the
previous boot prepared (`pantheros-rollback --prepare`, as `panther rollback --finish` runs it: a
snapshot of the blank), swaps it in and archives the previous root, and prunes nothing and commits
nothing (D154: the next transaction makes its renames durable). The step, the recipe and the recipe
+ sync alternate --runs times: medians, spread, and the CPU time each used (user + system of the
process and its children, which the machine's load does not inflate). The first boot (no prepared
root: the step snapshots the blank itself, as before D150) and `panther rollback --gc` (step, stage
2's prepare and gc) are timed too, for comparison. History (D151): the same run times the step on a
copy holding --history old roots (read-only snapshots of the blank beside the 10) against the step
with 10. Floor (D153): the first change after a fresh mount (a mkdir and rmdir in this process),
which every method pays in its first write.

    sudo .venv/bin/python bench/rollback.py [--files 200000] [--runs 7] [--history 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from _lab import PANTHER, format_image, many_old_roots, mounted_top, populate, sh, timed, workspace

RECIPE = r"""
set -euo pipefail
cd "$1"
if [[ -e root ]]; then
  mkdir -p old_roots
  timestamp=$(date --date="@$(stat -c %Y root)" "+%Y-%m-%-d_%H:%M:%S")
  mv root "old_roots/$timestamp"
fi
delete_subvolume_recursively() {
  IFS=$'\n'
  for i in $(btrfs subvolume list -o "$1" | cut -f 9- -d ' '); do
    delete_subvolume_recursively "$PWD/$i"
  done
  btrfs subvolume delete "$1"
}
for i in $(find old_roots/ -maxdepth 1 -mindepth 1 -mtime +30); do
  delete_subvolume_recursively "$i"
done
btrfs subvolume create root
"""

OLD_ROOTS = 10
PRUNED = 6  # of the 11 old roots after archiving: panther by max_count=5, the recipe by age
TARGET_MS = 10.0
TARGET_RATIO = 5.0
TARGET_HISTORY = 1.5


def prepare(top: Path, files: int) -> None:
    """10 old roots and a dirty root, each holding `files` files (snapshots of one seed)."""
    from pantheros import btrfs

    seed = top / "seed"
    btrfs.create_subvolume(seed)
    populate(seed, files)
    btrfs.sync(top)
    btrfs.delete_subvolume(top / "root")
    forty_days = time.time() - 40 * 86400
    for number in range(OLD_ROOTS + 1):
        btrfs.snapshot(seed, top / "root")
        (top / "root" / "boot").write_text(str(number))
        if number == OLD_ROOTS:
            break
        btrfs.sync(top)
        name = top / "old_roots" / f"{number:012d}-seed"
        os.rename(top / "root", name)
        if number < PRUNED:
            # The recipe prunes by directory mtime: age the roots that panther's count prunes.
            os.utime(name, (forty_days, forty_days))
        btrfs.set_readonly(name, True)
    btrfs.delete_subvolume(seed)
    btrfs.sync(top)
    # Let the cleaner finish dropping the seed, so no method pays for it in its first commit.
    sh("btrfs", "subvolume", "sync", str(top))


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def old_roots_left(top: Path) -> int:
    return len([p for p in (top / "old_roots").iterdir() if not p.name.startswith(".")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--history", type=int, default=10_000, help="old roots of the history line (default 10,000)"
    )
    args = parser.parse_args()
    from pantheros import manifest as manifests
    from pantheros.impermanence import bootstep

    with workspace() as base:
        manifest = base / "manifest.json"
        doc = json.loads(
            Path(__file__)
            .parent.parent.joinpath("src/pantheros/data/manifests/lab.json")
            .read_text()
        )
        doc["impermanence"]["retention"] = {"keep_min": 3, "max_count": 5}
        manifest.write_text(json.dumps(doc))
        loaded = manifests.load(manifest)
        print(
            f"preparing: {OLD_ROOTS} old roots and a root of {args.files:,} files each ...",
            flush=True,
        )
        first_boot = format_image(base, "base.img", 8, manifest)
        with mounted_top(base, first_boot, "prep") as top:
            prepare(top, args.files)
        # What the previous boot's stage 2 leaves: the next root prepared beside the root.
        prepared = base / "base-prepared.img"
        sh("cp", "--sparse=always", str(first_boot), str(prepared))
        with mounted_top(base, prepared, "prepare") as top:
            sh(*bootstep.argv(loaded, top=top, prepare=True))
        # The same, with --history old roots (read-only snapshots of the blank) beside the 10.
        history = base / "base-history.img"
        sh("cp", "--sparse=always", str(prepared), str(history))
        print(f"preparing: {args.history:,} old roots ...", flush=True)
        with mounted_top(base, history, "history-setup", setup=True) as top:
            extra = [f"{n:012d}-history" for n in range(args.history - OLD_ROOTS)]
            many_old_roots(top, top / "root-blank", extra)
            sh("btrfs", "filesystem", "sync", str(top))
            if old_roots_left(top) != args.history:
                raise SystemExit(f"the history image holds {old_roots_left(top)} old roots")
        step_argv = bootstep.argv(loaded, top=Path("TOP"))

        def on_copy(image: Path, label: str, action: Callable[[Path], object]) -> float:
            """Time action on a fresh copy of image, mounted afresh (copy and mount untimed)."""
            copy = base / f"{label}.img"
            sh("cp", "--sparse=always", str(image), str(copy))
            subprocess.run(["sync"], check=True)
            try:
                with mounted_top(base, copy, label) as top:
                    before = children_cpu()
                    seconds = timed(lambda: action(top))
                    cpus[label].append(children_cpu() - before)
                    left[label] = old_roots_left(top)
            finally:
                copy.unlink()
            return seconds

        def step(top: Path, *, prepared: bool = True) -> None:
            out = sh(*[str(top) if a == "TOP" else a for a in step_argv]).stdout
            if ("note=using the fresh root prepared for this boot" in out) != prepared:
                raise SystemExit(f"the boot step took the wrong path:\n{out}")

        def recipe(top: Path) -> None:
            sh("bash", "-c", RECIPE, "recipe", str(top))

        def recipe_sync(top: Path) -> None:
            sh("bash", "-c", RECIPE + 'btrfs filesystem sync "$1"\n', "recipe", str(top))

        def first_change(top: Path) -> None:
            (top / "floor").mkdir()
            (top / "floor").rmdir()

        labels = ["step", "recipe", "recipe-sync", "first-boot", "history", "floor"]
        labels.append("floor-history")
        walls: dict[str, list[float]] = {label: [] for label in labels}
        cpus: dict[str, list[float]] = {label: [] for label in labels}
        left: dict[str, int] = {}
        for _ in range(args.runs):
            walls["step"].append(on_copy(prepared, "step", step))
            walls["recipe"].append(on_copy(first_boot, "recipe", recipe))
            walls["recipe-sync"].append(on_copy(first_boot, "recipe-sync", recipe_sync))
            walls["first-boot"].append(
                on_copy(first_boot, "first-boot", lambda top: step(top, prepared=False))
            )
            walls["history"].append(on_copy(history, "history", step))
            walls["floor"].append(on_copy(first_boot, "floor", first_change))
            walls["floor-history"].append(on_copy(history, "floor-history", first_change))

        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(base / "pycache")
        gc_argv = [*PANTHER, "rollback", "--manifest", str(manifest), "--gc", "--top"]
        subprocess.run([*PANTHER, "--version"], env=env, check=True, capture_output=True)

        def panther_gc(top: Path) -> None:
            proc = subprocess.run([*gc_argv, str(top)], env=env, capture_output=True, check=False)
            if proc.returncode != 0:
                raise SystemExit(f"panther rollback --gc: {proc.stderr.decode().strip()}")

        cpus["panther"] = []
        panther_s = on_copy(prepared, "panther", panther_gc)

    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"load average after measuring: {load} on {os.cpu_count()} CPUs")
    print(f"{'method':44} {'ms':>8} {'(min-max of runs)':>18} {'CPU ms':>8} {'old roots':>10}")
    rows = [
        ("boot step (pantheros-btrfs rollback)", "step"),
        ("shell recipe (impermanence README)", "recipe"),
        ("shell recipe + btrfs filesystem sync", "recipe-sync"),
        ("boot step, first boot (no prepared root)", "first-boot"),
        (f"boot step, {args.history:,} old roots", "history"),
        ("floor: first change after mount, in-process", "floor"),
        (f"floor with {args.history:,} old roots", "floor-history"),
    ]
    for name, label in rows:
        ms = [w * 1000 for w in walls[label]]
        spread = f"{min(ms):.1f}-{max(ms):.1f}"
        # The floor runs in this process: no child's CPU time to show.
        cpu = "-" if label.startswith("floor") else f"{statistics.median(cpus[label]) * 1000:.1f}"
        print(f"{name:44} {statistics.median(ms):8.1f} {spread:>18} {cpu:>8} {left[label]:10}")
    print(
        f"{'panther rollback --gc (step + stage 2)':44} {panther_s * 1000:8.1f} {'':>18} "
        f"{cpus['panther'][0] * 1000:8.1f} {left['panther']:10}"
    )
    step_ms = statistics.median(walls["step"]) * 1000
    recipe_ms = statistics.median(walls["recipe"]) * 1000
    ratios = [r / s for s, r in zip(walls["step"], walls["recipe"], strict=True)]
    cpu_ratio = statistics.median(cpus["recipe"]) / statistics.median(cpus["step"])
    print(
        f"boot step: {step_ms:.1f} ms (target <= {TARGET_MS:.0f} ms); recipe / boot step: "
        f"{recipe_ms / step_ms:.1f}x (each run: {', '.join(f'{r:.1f}' for r in ratios)}; "
        f"target >= {TARGET_RATIO:.0f}x); CPU time, recipe / boot step: {cpu_ratio:.1f}x"
    )
    synced_ms = statistics.median(walls["recipe-sync"]) * 1000
    print(f"(recipe + sync) / boot step: {synced_ms / step_ms:.1f}x")
    floor_ms = statistics.median(walls["floor"]) * 1000
    print(
        f"net of the floor (paid by whoever writes first after the mount): boot step "
        f"{step_ms - floor_ms:.1f} ms, recipe {recipe_ms - floor_ms:.1f} ms, recipe + sync "
        f"{synced_ms - floor_ms:.1f} ms; recipe / boot step: "
        f"{(recipe_ms - floor_ms) / max(step_ms - floor_ms, 0.1):.1f}x"
    )
    history_ms = statistics.median(walls["history"]) * 1000
    print(
        f"history: boot step with {args.history:,} old roots / with {OLD_ROOTS}: "
        f"{history_ms / step_ms:.2f}x (target <= {TARGET_HISTORY}x)"
    )
    # btrfs loads more free-space metadata before the first change of a filesystem holding
    # 10,000 more subvolumes; the step itself reads no old root (D151).
    floor_history_ms = statistics.median(walls["floor-history"]) * 1000
    net = (history_ms - floor_history_ms) / max(step_ms - floor_ms, 0.1)
    print(
        f"history net of each image's floor: {history_ms - floor_history_ms:.1f} ms / "
        f"{step_ms - floor_ms:.1f} ms = {net:.2f}x"
    )


if __name__ == "__main__":
    main()
