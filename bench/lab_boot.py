"""What `panther lab boot` costs: building its OS, a first boot, reboots, through the CLI.

With an empty cache (a temporary $PANTHER_BOOT_CACHE, unless --warm keeps the usual one) it
times the image build (mmdebstrap, the OS tarball, the dracut base), then, on a new lab: `lab up`,
the first `lab boot` (the blank laid in, then boot to SSH and a started system), and N reboots
from inside (`lab reboot`). The machine's load average is printed beside the figures: under TCG,
time is CPU time, and a busy machine stretches every figure.

    sudo .venv/bin/python bench/lab_boot.py [--reboots N] [--warm]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from _lab import PANTHER, sh, timed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reboots", type=int, default=2)
    parser.add_argument("--warm", action="store_true", help="use the usual cache, if built")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (loop devices, QEMU)")
    base = Path(tempfile.mkdtemp(prefix="panther-lab-bench-", dir="/var/tmp"))
    if not args.warm:
        os.environ["PANTHER_BOOT_CACHE"] = str(base / "cache")
    os.environ["PANTHER_STATE_DIR"] = str(base / "state")
    lab = str(base / "lab")
    sys_path = Path(__file__).resolve().parent.parent / "src"
    os.environ["PYTHONPATH"] = str(sys_path)
    code = (
        "from pantheros.impermanence import bootstep; from pantheros.lab import guestos, initrd; "
        "k = initrd.find_kernel(); guestos.os_tarball(k, bootstep.artifact_dir()); "
        "initrd.base_initramfs(k)"
    )
    figures: list[tuple[str, float]] = []
    try:
        figures.append(
            ("image build (OS and initramfs)", timed(lambda: sh(PANTHER[0], "-c", code)))
        )
        figures.append(("lab up", timed(lambda: sh(*PANTHER, "lab", "up", lab))))
        figures.append(
            ("first lab boot (lay in, boot)", timed(lambda: sh(*PANTHER, "lab", "boot", lab)))
        )
        for n in range(1, args.reboots + 1):
            figures.append((f"reboot {n}", timed(lambda: sh(*PANTHER, "lab", "reboot", lab))))
    finally:
        sh(*PANTHER, "lab", "poweroff", "--force", lab)
        sh(*PANTHER, "lab", "down", "--purge", lab)
        shutil.rmtree(base)
    load = os.getloadavg()
    for what, seconds in figures:
        print(f"{what:36} {seconds:7.1f} s")
    print(f"load average (1, 5, 15 min) at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
