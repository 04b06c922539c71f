"""Shared pieces of the benchmarks: a formatted PantherOS image with its top level mounted."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PANTHER = [sys.executable, "-m", "pantheros"]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure stop the benchmark with its stderr."""
    proc = subprocess.run(
        argv, capture_output=True, text=True, errors="surrogateescape", check=False
    )
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    if os.geteuid() != 0:
        sys.exit("benchmarks need root (loop devices, mount)")
    base = Path(
        tempfile.mkdtemp(prefix="panther-bench-", dir=os.environ.get("BENCH_DIR", "/var/tmp"))
    )
    env_state = base / "state"
    os.environ["PANTHER_STATE_DIR"] = str(env_state)
    os.environ["PYTHONPATH"] = str(REPO / "src")
    try:
        yield base
    finally:
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            point = line.split()[4]
            if point.startswith(str(base)):
                subprocess.run(["umount", point], check=False)
        out = sh("losetup", "--json", "--list").stdout
        if out.strip():
            import json

            for dev in json.loads(out)["loopdevices"]:
                if (dev.get("back-file") or "").startswith(str(base)):
                    subprocess.run(["losetup", "--detach", dev["name"]], check=False)
        shutil.rmtree(base)


def format_image(base: Path, name: str, size_gib: int, manifest: Path) -> Path:
    image = base / name
    with open(image, "wb") as f:
        f.truncate(size_gib * 1024**3)
    sh(*PANTHER, "disk", "format", "--manifest", str(manifest), str(image))
    return image


@contextlib.contextmanager
def mounted_top(base: Path, image: Path, label: str) -> Iterator[Path]:
    dev = sh("losetup", "--find", "--show", "--partscan", str(image)).stdout.strip()
    subprocess.run(["partx", "--update", dev], check=False, capture_output=True)
    top = base / f"top-{label}"
    top.mkdir(exist_ok=True)
    sh("mount", "-o", "subvolid=5,noatime", f"{dev}p2", str(top))
    try:
        yield top
    finally:
        sh("umount", str(top))
        sh("losetup", "--detach", dev)


def populate(root: Path, files: int) -> None:
    """`files` small files in 20 x 20 directories, sizes 0 to 5000 bytes."""
    sizes = (0, 50, 200, 900, 1500, 3000, 5000)
    per_dir = max(1, files // 400)
    made = 0
    for a in range(20):
        for b in range(20):
            folder = root / "data" / f"d{a:02}" / f"e{b:02}"
            folder.mkdir(parents=True, exist_ok=True)
            for c in range(per_dir):
                if made >= files:
                    return
                (folder / f"f{c:05}").write_bytes(b"x" * sizes[made % len(sizes)])
                made += 1
