"""Rollback wall time: the boot step beside the widely copied shell recipe.

All run on identical images holding 10 old roots of N files each (default 200,000) plus a
dirty root of N files. The shell recipe is the impermanence README's: `mv` to
old_roots/<mtime date>, `find -mtime +30` and a recursive delete over `btrfs subvolume list
-o`, `btrfs subvolume create`; it prunes on the boot path and does not commit, so a second
line times it followed by `btrfs filesystem sync` (what durability costs). The boot step
(`pantheros-rollback`, what the initrd runs) archives, makes the fresh root and commits, and
prunes nothing: retention runs in stage 2, timed on its own line as `panther rollback --gc`
(the step plus Python's gc, on a fourth image) for comparison.

    sudo .venv/bin/python bench/rollback.py [--files 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

from _lab import PANTHER, format_image, mounted_top, populate, sh, timed, workspace

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    with workspace() as base:
        manifest = base / "manifest.json"
        doc = json.loads(
            Path(__file__)
            .parent.parent.joinpath("src/pantheros/data/manifests/lab.json")
            .read_text()
        )
        doc["impermanence"]["retention"] = {"keep_min": 3, "max_count": 5}
        manifest.write_text(json.dumps(doc))
        print(
            f"preparing: {OLD_ROOTS} old roots and a root of {args.files:,} files each ...",
            flush=True,
        )
        image = format_image(base, "panther.img", 8, manifest)
        with mounted_top(base, image, "prep") as top:
            prepare(top, args.files)
        copy = base / "recipe.img"
        sh("cp", "--sparse=always", str(image), str(copy))

        step_image = base / "step.img"
        sh("cp", "--sparse=always", str(image), str(step_image))
        from pantheros import manifest as manifests
        from pantheros.impermanence import bootstep

        step_argv = bootstep.argv(manifests.load(manifest), top=Path("TOP"))
        subprocess.run(["sync"], check=True)
        with mounted_top(base, step_image, "step") as top:
            argv = [str(top) if a == "TOP" else a for a in step_argv]
            step_s = timed(lambda: sh(*argv))
            step_left = len(
                [p for p in (top / "old_roots").iterdir() if not p.name.startswith(".")]
            )
        subprocess.run(["sync"], check=True)
        with mounted_top(base, image, "panther") as top:
            argv = [*PANTHER, "rollback", "--manifest", str(manifest), "--top", str(top), "--gc"]
            panther_s = timed(lambda: sh(*argv))
            left = len([p for p in (top / "old_roots").iterdir() if not p.name.startswith(".")])
        subprocess.run(["sync"], check=True)
        synced = base / "recipe-sync.img"
        sh("cp", "--sparse=always", str(copy), str(synced))
        with mounted_top(base, copy, "recipe") as top:
            recipe_s = timed(lambda: sh("bash", "-c", RECIPE, "recipe", str(top)))
            recipe_left = len(list((top / "old_roots").iterdir()))
        subprocess.run(["sync"], check=True)
        with mounted_top(base, synced, "synced") as top:
            durable = RECIPE + 'btrfs filesystem sync "$1"\n'
            synced_s = timed(lambda: sh("bash", "-c", durable, "recipe", str(top)))

    print(f"{'method':38} {'seconds':>9} {'old roots left':>15}")
    print(f"{'boot step (pantheros-rollback)':38} {step_s:9.3f} {step_left:15}")
    print(f"{'panther rollback --gc (step + stage 2)':38} {panther_s:9.3f} {left:15}")
    print(f"{'shell recipe (impermanence README)':38} {recipe_s:9.3f} {recipe_left:15}")
    print(f"{'shell recipe + btrfs filesystem sync':38} {synced_s:9.3f} {recipe_left:15}")
    print(
        f"boot step: {step_s * 1000:.0f} ms; "
        f"boot step / (recipe + sync): {step_s / synced_s:.2f}x; "
        f"boot step / recipe: {step_s / recipe_s:.2f}x"
    )


if __name__ == "__main__":
    main()
