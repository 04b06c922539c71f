"""Initrd size: what the boot step adds to a systemd initrd that already supports btrfs.

Builds, with the boot tests' own builder (tests/boot/initrd.py: Debian's dracut and kernel),
the baseline initramfs (systemd, udev, a btrfs root) and the same initramfs plus the boot step
for each fail policy: the unit texts from nix/generated/initrd-units.json, the script and its
compiled helper, and the tools the script runs that the baseline lacks. Prints compressed
(zstd, what sits on the ESP) and uncompressed sizes, the difference, and the files added.
Builds are cached like the boot tests' (PANTHER_BOOT_CACHE).

    sudo .venv/bin/python bench/initrd_size.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from _lab import REPO

sys.path.insert(0, str(REPO))
from tests.boot import initrd

TARGET = 1 << 20


def unpacked_bytes(image: Path) -> int:
    out = subprocess.run(["zstd", "-dc", str(image)], capture_output=True, check=True)
    return len(out.stdout)


def files(image: Path) -> dict[str, int]:
    """Path -> size of every entry (lsinitrd's ls -l listing)."""
    out = subprocess.run(["lsinitrd", str(image)], capture_output=True, text=True, check=True)
    listing: dict[str, int] = {}
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 9 and fields[0][:1] in "-dlcbps" and fields[4].isdigit():
            listing[fields[8]] = int(fields[4])
    return listing


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/initrd_size.py needs root (dracut reads the kernel's modules)")
    baseline, _ = initrd.cached(None)
    base_zst, base_raw = baseline.stat().st_size, unpacked_bytes(baseline)
    base_files = files(baseline)
    print(f"baseline (systemd initrd, btrfs root): {base_zst:>10,} B zstd  {base_raw:>11,} B raw")
    for policy in initrd.POLICIES:
        image, _ = initrd.cached(initrd.Overlay(policy))
        zst, raw = image.stat().st_size, unpacked_bytes(image)
        added = zst - base_zst
        verdict = "within" if added <= TARGET else "OVER"
        print(f"with the boot step ({policy}): {zst:>10,} B zstd  {raw:>11,} B raw")
        print(
            f"  the step adds {added:,} B zstd ({added / TARGET:.3f} MiB, {verdict} the 1 MiB"
            f" target), {raw - base_raw:,} B raw"
        )
        new = {p: n for p, n in files(image).items() if p not in base_files}
        for path, size in sorted(new.items()):
            print(f"    + {size:>9,} {path}")


if __name__ == "__main__":
    main()
