"""`panther persist add` of a 1 GiB tree beside `cp -a` of the same tree, in the same run.

persist add copies (cp -a --reflink=auto), then verifies every byte, owner, mode, time and
xattr, renames into place, bind-mounts and empties the original; cp -a only copies.

    sudo .venv/bin/python bench/persist.py [--mib 1024]
"""

from __future__ import annotations

import argparse
import os
import subprocess

from _lab import PANTHER, sh, timed, workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    args = parser.parse_args()
    with workspace() as base:
        lab = base / "lab"
        sh(*PANTHER, "lab", "up", str(lab), "--size", f"{max(4, args.mib * 4 // 1024 + 2)}G")
        root = lab / "mnt"
        print(f"preparing: a {args.mib} MiB tree of 4 MiB files ...", flush=True)
        for name in ("big", "big-for-cp", "big-for-cp-data"):
            tree = root / "var" / "lib" / name
            tree.mkdir(parents=True)
        for number in range(args.mib // 4):
            block = os.urandom(4 * 1024 * 1024)
            for name in ("big", "big-for-cp", "big-for-cp-data"):
                (root / "var" / "lib" / name / f"f{number:04}").write_bytes(block)
        subprocess.run(["sync"], check=True)
        data_s = timed(
            lambda: sh(
                "cp",
                "-a",
                "--reflink=never",
                str(root / "var/lib/big-for-cp-data"),
                str(root / "persist" / "cp-data-copy"),
            )
        )
        subprocess.run(["sync"], check=True)
        cp_s = timed(
            lambda: sh(
                "cp", "-a", str(root / "var/lib/big-for-cp"), str(root / "persist" / "cp-copy")
            )
        )
        subprocess.run(["sync"], check=True)
        add_s = timed(lambda: sh(*PANTHER, "persist", "add", "/var/lib/big", "--lab", str(lab)))
        sh(*PANTHER, "lab", "down", str(lab))
    print(f"{'method':34} {'seconds':>9}")
    print(f"{'cp -a (reflink: coreutils default)':34} {cp_s:9.3f}")
    print(f"{'cp -a --reflink=never':34} {data_s:9.3f}")
    print(f"{'panther persist add (verified)':34} {add_s:9.3f}")
    print(
        f"ratio persist add / cp -a: {add_s / cp_s:.2f}x; "
        f"persist add / cp -a --reflink=never: {add_s / data_s:.2f}x"
    )


if __name__ == "__main__":
    main()
