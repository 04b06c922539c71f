"""Block devices and loop devices (the mount table is read by pantheros.mounttable)."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import stat
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pantheros import locking, process
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.mounttable import MountEntry, mountinfo
from pantheros.storage.mounts import state_dir


def device_number(dev: str) -> str:
    st = os.stat(dev)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def is_block_device(path: str | Path) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _sys_name(dev: str) -> str:
    return Path(os.path.realpath(dev)).name


def partitions(dev: str) -> list[str]:
    """Partition device paths of a whole disk, in partition-number order (from sysfs)."""
    name = _sys_name(dev)
    base = Path("/sys/class/block") / name
    found: list[tuple[int, str]] = []
    for child in base.iterdir() if base.exists() else []:
        number = child / "partition"
        if number.exists():
            found.append((int(number.read_text()), f"/dev/{child.name}"))
    return [path for _, path in sorted(found)]


def holders(dev: str) -> list[str]:
    """Devices stacked on dev (dm-crypt mappings and the like)."""
    folder = Path("/sys/class/block") / _sys_name(dev) / "holders"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def size_bytes(dev: str) -> int:
    if is_block_device(dev):
        sectors = (Path("/sys/class/block") / _sys_name(dev) / "size").read_text()
        return int(sectors) * 512
    return os.stat(dev).st_size


def busy_reason(dev: str) -> str | None:
    """Why dev cannot be formatted now: a mount or a holder on it or one of its partitions."""
    devices = [d for d in [dev, *partitions(dev)] if os.path.exists(d)]
    # btrfs reports an anonymous device number in mountinfo, so match the source path as well.
    numbers = {device_number(d): d for d in devices}
    paths = {os.path.realpath(d): d for d in devices}
    for entry in mountinfo():
        source = os.path.realpath(entry.source) if entry.source.startswith("/dev/") else None
        found = numbers.get(entry.device) or (paths.get(source) if source else None)
        if found:
            return f"{found} is mounted at {entry.mountpoint}"
    for d in [dev, *partitions(dev)]:
        if holders(d):
            return f"{d} is in use by {', '.join(holders(d))}"
    return None


def signatures(dev: str) -> list[str]:
    """Filesystem, RAID, LUKS and partition-table signatures on dev or its partitions."""
    found = []
    for d in [dev, *partitions(dev)]:
        proc = process.run(["wipefs", "--noheadings", "--parsable", d], check=False)
        if proc.returncode != 0:
            raise PantherError(f"cannot probe {d}: {proc.stderr.strip()}")
        for line in proc.stdout.splitlines():
            # offset,uuid,label,type
            parts = line.split(",")
            if len(parts) >= 4:
                found.append(f"{d}: {parts[3]}")
    return found


def rescan_partitions(dev: str, expected: int) -> list[str]:
    """Make the kernel see dev's partition table and wait for the device nodes."""
    process.run(["partx", "--update", dev], check=True)
    deadline = time.monotonic() + 10
    while True:
        found = partitions(dev)
        if len(found) >= expected and all(os.path.exists(p) for p in found):
            return found
        if time.monotonic() > deadline:
            raise PantherError(
                f"the kernel shows {len(found)} partition(s) on {dev}, expected {expected}"
            )
        time.sleep(0.05)


# LOOP_GET_STATUS64 fills a struct loop_info64: lo_device and lo_inode are its first two u64.
_LOOP_CLR_FD = 0x4C01
_LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64_SIZE = 232


@dataclass(frozen=True)
class Backing:
    """The file behind a loop device, as the kernel holds it."""

    path: str  # /sys/block/loopN/loop/backing_file (" (deleted)" when unlinked)
    device: tuple[int, int]  # major, minor of the file's filesystem
    inode: int


def _loop_backing(fd: int, name: str) -> Backing | None:
    try:
        raw = fcntl.ioctl(fd, _LOOP_GET_STATUS64, bytes(_LOOP_INFO64_SIZE))
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a free loop device
            return None
        raise
    encoded, inode = struct.unpack_from("=QQ", raw)
    # The kernel's huge_encode_dev: minor's low byte, major, then minor's high bits.
    major = (encoded & 0xFFF00) >> 8
    minor = (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00)
    try:
        path = (Path("/sys/block") / name / "loop" / "backing_file").read_text().rstrip("\n")
    except FileNotFoundError:
        return None
    return Backing(path, (major, minor), inode)


def _backs(backing: Backing | None, image: str | Path) -> bool:
    """Whether backing is image: same path and the very same file (device and inode)."""
    if backing is None:
        return False
    try:
        st = os.stat(image)
    except FileNotFoundError:
        return False
    return (
        backing.path == os.path.realpath(image)
        and backing.device == (os.major(st.st_dev), os.minor(st.st_dev))
        and backing.inode == st.st_ino
    )


@contextmanager
def verified_loop(dev: str, image: str | Path) -> Iterator[int | None]:
    """An open descriptor of loop device dev if, and only if, image backs it; else None.

    While the descriptor is open the kernel cannot bind the device to another file (a detach
    only marks it for clearing at the last close), so what was verified stays true.
    """
    name = Path(dev).name
    if not re.fullmatch(r"loop[0-9]+", name) or not dev.startswith("/dev/"):
        yield None
        return
    try:
        fd = os.open(dev, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENXIO, errno.ENODEV):
            raise
        yield None
        return
    try:
        yield fd if _backs(_loop_backing(fd, name), image) else None
    finally:
        os.close(fd)


def loop_is_backed_by(dev: str, image: str | Path) -> bool:
    with verified_loop(dev, image) as fd:
        return fd is not None


def loop_for_image(image: str | Path) -> list[str]:
    """Loop devices currently backed by image (the same file: path, device and inode)."""
    target = os.path.realpath(image)
    found = []
    for entry in sorted(Path("/sys/block").glob("loop*")):
        try:
            path = (entry / "loop" / "backing_file").read_text().rstrip("\n")
        except FileNotFoundError:
            continue
        # Only a device naming this path is opened: other people's devices are not touched.
        if path == target and loop_is_backed_by(f"/dev/{entry.name}", image):
            found.append(f"/dev/{entry.name}")
    return found


def attached_elsewhere(image: str | Path) -> list[tuple[str, str]]:
    """(device, path) of each loop device backed by the very file image is (the same device
    and inode: a hard link, a bind mount) under another path. Read from sysfs: no device is
    opened."""
    st = os.stat(image)
    target = os.path.realpath(image)
    found = []
    for entry in sorted(Path("/sys/block").glob("loop*")):
        try:
            path = (entry / "loop" / "backing_file").read_text().rstrip("\n")
            other = os.stat(path)
        except OSError:  # detached meanwhile, or a backing file deleted since
            continue
        if path != target and (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            found.append((f"/dev/{entry.name}", path))
    return found


def attach_loop(image: str | Path) -> str:
    """Attach image to a new loop device and make its partitions visible.

    Refused when the same file is attached already under another name: a second device would
    let its filesystem be mounted twice at once (btrfs mounts a clone under a temporary fsid),
    two writers on one disk."""
    # One check-and-attach at a time among panther's commands: two `lab up` of two names of
    # one file would otherwise both find it free.
    with locking.exclusive(state_dir() / "locks" / "attach.lock", what="loop devices"):
        elsewhere = attached_elsewhere(image)
        if elsewhere:
            dev, path = elsewhere[0]
            raise Refused(
                f"{image} is the file {path}, already attached to {dev}: attaching it again "
                "would mount one filesystem twice"
            )
        proc = process.run(["losetup", "--find", "--show", "--partscan", str(image)], check=True)
    dev = proc.stdout.strip()
    if not dev.startswith("/dev/"):
        raise PantherError(f"losetup gave no device for {image}")
    scan_partitions(dev)
    return dev


def scan_partitions(dev: str) -> None:
    """Make dev's partitions visible: some kernels do not scan them on attach, and a losetup
    killed half-way leaves a device without its scan. partx asks again (harmless when seen)."""
    process.run(["partx", "--update", dev], check=False)


def detach_if_backed_by(dev: str, image: str | Path) -> bool:
    """Detach loop device dev if, and only if, image backs it; another file's device is kept.

    The kernel finishes a detach after the last descriptor closes, in the background; this
    waits for it, so the next look at the device sees it free.
    """
    with verified_loop(dev, image) as fd:
        if fd is None:
            return False
        fcntl.ioctl(fd, _LOOP_CLR_FD, 0)
    backing = Path("/sys/block") / Path(dev).name / "loop" / "backing_file"
    deadline = time.monotonic() + 10
    while True:
        try:
            if backing.read_text().rstrip("\n") != os.path.realpath(image):
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            raise PantherError(f"{dev} is still attached to {image} 10 s after detaching it")
        time.sleep(0.02)


@contextmanager
def attached(target: str) -> Iterator[tuple[str, bool]]:
    """The block device of TARGET; an image is attached to a loop device only for the duration."""
    path, is_image = resolve_target(target)
    if not is_image:
        yield path, False
        return
    dev = attach_loop(path)
    try:
        yield dev, True
    finally:
        detach_if_backed_by(dev, path)


def resolve_target(target: str) -> tuple[str, bool]:
    """(path, is_image): TARGET is a block device or an existing regular image file."""
    if is_block_device(target):
        return os.path.realpath(target), False
    if os.path.isfile(target):
        return os.path.realpath(target), True
    if os.path.exists(target):
        raise UsageError(f"target {target} is neither a block device nor an image file")
    raise UsageError(f"target {target} does not exist")


def kernel_supports(fstype: str) -> bool:
    """Whether the running kernel can mount fstype (loading its module if it can)."""

    def listed() -> bool:
        with open("/proc/filesystems", encoding="ascii") as f:
            return any(line.split()[-1] == fstype for line in f if line.strip())

    if listed():
        return True
    if shutil.which("modprobe"):
        process.run(["modprobe", "--quiet", fstype], check=False)
    return listed()


def stack(dev: str) -> set[str]:
    """dev, its partitions and what is stacked on them (dm-crypt), as real device paths."""
    found: set[str] = set()
    for d in [dev, *partitions(dev)]:
        found.add(os.path.realpath(d))
        found.update(os.path.realpath(f"/dev/{h}") for h in holders(d))
    return found


def mounts_from(devices: set[str]) -> list[MountEntry]:
    """Mounts (in mount order) whose source is one of devices."""
    return [
        m
        for m in mountinfo()
        if m.source.startswith("/dev/") and os.path.realpath(m.source) in devices
    ]
