"""Shared fixtures: real loop devices and btrfs, always cleaned up, also when a test fails."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _root_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices, mount, mkfs)"
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control (loop devices)"
    for tool in ("mkfs.btrfs", "losetup", "sgdisk", "partx"):
        if shutil.which(tool) is None:
            return f"needs {tool} (run scripts/setup)"
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read():
            return "needs a kernel with btrfs"
    return None


ROOT_REASON = _root_reason()
needs_root = pytest.mark.skipif(ROOT_REASON is not None, reason=ROOT_REASON or "")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") and ROOT_REASON:
            item.add_marker(pytest.mark.skip(reason=ROOT_REASON))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _loops_backed_under(base: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "--json", "--list"], capture_output=True, text=True, check=True
    )
    if not out.stdout.strip():
        return []
    devices = json.loads(out.stdout)["loopdevices"]
    prefix = str(base.resolve()) + "/"
    return [d["name"] for d in devices if (d.get("back-file") or "").startswith(prefix)]


def _mounts_to_undo(base: Path, loops: list[str]) -> list[str]:
    """Mount points under base, or of a file system on one of our loop devices (or partitions)."""
    prefix = str(base.resolve()) + "/"
    ours = re.compile("^(" + "|".join(re.escape(Path(d).name) for d in loops) + r")(p\d+)?$")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            point = fields[4]
            source = line.split(" - ", 1)[1].split(" ")[1]
            ours_by_device = bool(loops) and ours.match(Path(source).name) is not None
            if point.startswith(prefix) or point == prefix[:-1] or ours_by_device:
                points.append(point)
    return points


def cleanup_under(base: Path) -> None:
    """Unmount what lives under base or on its images, then detach the images' loop devices."""
    loops = _loops_backed_under(base)
    for point in reversed(_mounts_to_undo(base, loops)):
        subprocess.run(["umount", point], check=False)
    for point in reversed(_mounts_to_undo(base, loops)):
        subprocess.run(["umount", "--lazy", point], check=True)
    for dev in loops:
        subprocess.run(["losetup", "--detach", dev], check=True)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private directory; panther's state lives in it; all mounts and loops there are removed."""
    state = tmp_path / "state"
    monkeypatch.setenv("PANTHER_STATE_DIR", str(state))
    from pantheros.storage import layout

    monkeypatch.setattr(layout, "STATE_DIR", state)
    try:
        yield tmp_path
    finally:
        if ROOT_REASON is None:
            cleanup_under(tmp_path)


@pytest.fixture
def image(workdir: Path) -> Callable[..., Path]:
    """Factory: a sparse image file of the given size in MiB."""

    def make(size_mib: int = 512, name: str = "disk.img") -> Path:
        path = workdir / name
        with open(path, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        return path

    return make


@pytest.fixture
def btrfs_top(workdir: Path) -> Iterator[Path]:
    """A plain btrfs file system on a loop device, its top level mounted; removed afterwards."""
    img = workdir / "btrfs.img"
    with open(img, "wb") as f:
        f.truncate(1024 * 1024 * 1024)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
    top = workdir / "top"
    top.mkdir()
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(img)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mount", "-o", "commit=300", dev, str(top)], check=True)
        yield top
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cleanup_under(workdir)


def panther(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            user: int | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Run the real command line in a subprocess."""
    argv = [sys.executable, "-m", "pantheros", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run(argv, capture_output=True, text=True, input=input, env=full_env,
                          check=False)  # fmt: skip


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the failure is one clear line on stderr and return it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("panther: error: "), proc.stderr
    return lines[0]
