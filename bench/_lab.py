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
def mounted_top(base: Path, image: Path, label: str, *, setup: bool = False) -> Iterator[Path]:
    """The image's top level, mounted at base/top-<label> (and its loop device detached after).
    setup: mounted without write barriers, for building an image fast (never for timing)."""
    dev = sh("losetup", "--find", "--show", "--partscan", str(image)).stdout.strip()
    subprocess.run(["partx", "--update", dev], check=False, capture_output=True)
    top = base / f"top-{label}"
    top.mkdir(exist_ok=True)
    options = "subvolid=5,noatime" + (",nobarrier" if setup else "")
    sh("mount", "-o", options, f"{dev}p2", str(top))
    try:
        yield top
    finally:
        sh("umount", str(top))
        detach(dev, image)


def detach(dev: str, image: Path) -> None:
    """Detach our loop device. A device still open (udev probing it) is detached by the kernel
    when let go: a second detach then finds it gone, which is what was wanted."""
    proc = subprocess.run(["losetup", "--detach", dev], check=False, capture_output=True, text=True)
    backing = Path("/sys/block", Path(dev).name, "loop", "backing_file")
    try:
        still = backing.read_text().strip() == str(image)
    except OSError:
        still = False
    if proc.returncode != 0 and still:
        sys.exit(f"losetup --detach {dev}: {proc.stderr.strip()}")
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


def many_old_roots(top: Path, source: Path, names: list[str], *, nested_every: int = 0) -> None:
    """Read-only snapshots of source as old roots named names, by the boot step's helper in one
    process (`serve`: a request per snapshot). nested_every=N: every Nth holds a nested
    subvolume (made writable, the nested one created, read-only again)."""
    from pantheros.impermanence import bootstep

    helper = str(bootstep.artifact_dir() / bootstep.HELPER)
    requests = []
    for i, name in enumerate(names):
        dest = str(top / "old_roots" / name)
        if nested_every and i % nested_every == 0:
            requests += [
                ["snapshot", str(source), dest],
                ["create", f"{dest}/nested"],
                ["readonly", dest],
            ]
        else:
            requests.append(["snapshot-readonly", str(source), dest])
    data = b"".join(b"".join(f"{x}".encode() + b"\0" for x in [len(r), *r]) for r in requests)
    proc = subprocess.run([helper, "serve"], input=data, capture_output=True, check=False)
    answers = [line for line in proc.stdout.split(b"\n") if line.startswith(b"= ")]
    if proc.returncode != 0 or answers != [b"= 0"] * len(requests):
        sys.exit(f"making old roots failed: {proc.stderr.decode(errors='replace').strip()}")
