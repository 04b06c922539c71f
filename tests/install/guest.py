"""A QEMU guest with udev and device-mapper, to run disko's scripts and `panther disk format`.

disko addresses partitions through /dev/disk/by-partlabel (udev makes those links) and LUKS
needs device-mapper; this machine has neither. The guest is Debian's kernel (the boot tests'
linux-image-cloud-amd64) with a dracut initramfs of this machine's own tools: udev, bash,
coreutils, util-linux, gptfdisk, parted, dosfstools, btrfs-progs, cryptsetup, jq and Python.
It boots under QEMU TCG with `rdinit=/guest-init` (our script is PID 1: no systemd, nothing
between the kernel and the job), starts udevd, runs the job and powers off. The initramfs is
built once per set of inputs and cached; the job (disko's scripts, panther's source, the job
runner tests/install/guest_job.py and its steps) is a cpio archive appended to it per run, so
a new job costs no rebuild. Results come back on the serial console between markers.

The target disks carry serial numbers, so the guest's udev names them
/dev/disk/by-id/virtio-SERIAL, as a host declares its disk.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros.lab import initrd as lab_initrd
from tests import helpers
from tests.boot import initrd, vm

HERE = Path(__file__).resolve().parent
JOB_RUNNER = HERE / "guest_job.py"
PYTHON = "/usr/bin/python3.11"
STDLIB = Path("/usr/lib/python3.11")
# What disko's scripts (and disk-deactivate) run, what `panther disk format` runs, and what the
# job runner uses to look at the result. dracut installs each with its libraries.
TOOLS = (
    "bash sh env cat ls mkdir rmdir rm mv cp ln chmod chown stat sync sleep mktemp dirname "
    "basename realpath readlink tr sort head tail wc grep sed awk dd pr cut printf echo true "
    "false test id uname tee install touch find xargs seq base64 "
    "mount umount findmnt blkid lsblk wipefs partx losetup flock unshare "
    "sgdisk partprobe udevadm mkfs.vfat mkfs.fat mkfs.btrfs btrfs cryptsetup dmsetup jq "
    "modprobe kmod"
)
DRACUT_MODULES = "bash udev-rules dm crypt btrfs"
DRIVERS = (
    "virtio_blk virtio_pci dm_mod dm_crypt btrfs vfat nls_cp437 nls_utf8 nls_ascii "
    "xts aes_generic sha256_generic crc32c_generic"
)
RESULT_BEGIN = "PANTHEROS-GUEST-RESULT-BEGIN"
RESULT_END = "PANTHEROS-GUEST-RESULT-END"
BUILD_TIMEOUT = 900

# PID 1: what the job needs of a running system, then the job, then the result on the console.
INIT = f"""#!/bin/bash
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp /mnt /etc
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
ln -sfn /proc/self/mounts /etc/mtab
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
echo 1 >/proc/sys/kernel/sysrq
for m in {DRIVERS}; do modprobe -q "$m" || true; done
udevd=$(ls /usr/lib/systemd/systemd-udevd /lib/systemd/systemd-udevd 2>/dev/null | head -n 1)
"$udevd" --daemon --resolve-names=never
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --action=add
udevadm settle --timeout=60
{PYTHON} -I /job/guest_job.py /job/steps.json /tmp/result.json >/dev/console 2>&1
echo "job exit $?" >/dev/console
echo {RESULT_BEGIN} >/dev/console
base64 -w 0 /tmp/result.json >/dev/console
echo >/dev/console
echo {RESULT_END} >/dev/console
sync
echo o >/proc/sysrq-trigger
sleep 60
"""


def reason() -> str | None:
    """Why the guest cannot run here, or None."""
    for tool in ("qemu-system-x86_64", "dracut", "cpio", "zstd", *TOOLS.split()):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup --tests installs it)"
    if not Path(PYTHON).exists() or not STDLIB.is_dir():
        return f"needs {PYTHON} and its standard library (Debian's python3.11)"
    if initrd.kernel() is None:
        return "needs a kernel with its modules in /boot (linux-image-cloud-amd64)"
    return None


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def base_image() -> tuple[Path, Path]:
    """(initramfs, vmlinuz): the guest's tools, built once per set of inputs."""
    found = initrd.kernel()
    assert found is not None, "no kernel with modules under /boot"
    version, vmlinuz = found
    key = _digest(
        version.encode(),
        vmlinuz.read_bytes(),
        initrd.dracut_version().encode(),
        TOOLS.encode(),
        DRACUT_MODULES.encode(),
        DRIVERS.encode(),
        Path(PYTHON).read_bytes(),
        Path(__file__).read_bytes(),
        " ".join(
            f"{d.metadata['Name']}={d.version}" for d in helpers.runtime_distributions()
        ).encode(),
    )
    directory = initrd.cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"install-guest-{key}.img"
    if path.exists():
        return path, vmlinuz
    dynload = sorted(str(p) for p in (STDLIB / "lib-dynload").glob("*.so"))
    # panther's own dependencies carry extension modules too (rpds, under jsonschema).
    dynload += sorted(
        str(dist.locate_file(file))
        for dist in helpers.runtime_distributions()
        for file in dist.files or []
        if file.suffix == ".so"
    )
    # dracut copies the included standard library as it is: the libraries its extension
    # modules load (libffi for ctypes, libpthread for rpds, and so on) are installed by name.
    libraries = sorted({lib for module in dynload for lib in _needed(module)})
    with tempfile.TemporaryDirectory(prefix="guest-initrd-") as work:
        partial = path.with_name(path.name + ".partial")
        argv = lab_initrd.dracut_argv(version, DRACUT_MODULES, DRIVERS, work)
        argv += [
            "--install",
            " ".join([TOOLS, PYTHON, *libraries]),
            "--include",
            str(STDLIB),
            str(STDLIB),
            str(partial),
        ]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"dracut failed ({proc.returncode}):\n{proc.stderr}")
        os.replace(partial, path)
    return path, vmlinuz


def _needed(path: str) -> list[str]:
    """The shared libraries path loads (ldd's resolved paths)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    return re.findall(r"=> (/\S+)", out)


@dataclass
class Job:
    """What the guest runs: the steps (see guest_job.py), and files laid into its /."""

    steps: list[dict[str, Any]]
    files: dict[str, tuple[int, bytes]]  # absolute path -> (mode, content)
    trees: dict[str, Path]  # absolute path -> a directory of this machine copied there

    def archive(self, directory: Path) -> Path:
        root = directory / "job-root"
        (root / "job").mkdir(parents=True)
        (root / "guest-init").write_text(INIT)
        (root / "guest-init").chmod(0o755)
        shutil.copyfile(JOB_RUNNER, root / "job" / "guest_job.py")
        (root / "job" / "steps.json").write_text(json.dumps(self.steps))
        helpers.site_tree(root / "job" / "site")
        for path, source in self.trees.items():
            shutil.copytree(source, root / path.lstrip("/"), dirs_exist_ok=True)
        for path, (mode, content) in self.files.items():
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(mode)
        names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        archive = directory / "job.cpio"
        with open(archive, "wb") as out:
            subprocess.run(
                ["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"],
                input="\n".join(names).encode(),
                stdout=out,
                cwd=root,
                check=True,
            )
        return archive


@dataclass
class Disk:
    """A raw image attached as a virtio disk with this serial (/dev/disk/by-id/virtio-SERIAL)."""

    image: Path
    serial: str

    @property
    def by_id(self) -> str:
        return f"/dev/disk/by-id/virtio-{self.serial}"


def run(
    job: Job, disks: list[Disk], work: Path, *, memory_mib: int = 2048, timeout: float = 1800
) -> dict[str, Any]:
    """Boot the guest with disks attached, run job, and return its result (the job's JSON)."""
    base, vmlinuz = base_image()
    archive = job.archive(work)
    initramfs = work / "initramfs.img"
    with open(initramfs, "wb") as out:
        out.write(base.read_bytes())
        # The kernel unpacks concatenated archives in order; padding between them is skipped.
        out.write(b"\0" * (-out.tell() % 4))
        out.write(archive.read_bytes())
    log = work / "serial.log"
    argv = vm.direct_boot_argv(
        vmlinuz,
        initramfs,
        "rdinit=/guest-init console=ttyS0 panic=-1 loglevel=4",
        log,
        memory_mib=memory_mib,
        cpu="max",
    )
    for number, disk in enumerate(disks):
        argv += [
            "-drive",
            f"file={disk.image},format=raw,if=none,id=d{number},cache=unsafe",
            "-device",
            f"virtio-blk-pci,drive=d{number},serial={disk.serial}",
        ]
    errors = work / "qemu.stderr"
    with open(errors, "wb") as stderr:
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        qemu.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()
        raise AssertionError(
            f"the guest did not power off within {timeout:.0f} s\n{_tail(log)}"
        ) from None
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    serial = log.read_text(errors="replace")
    found = re.search(rf"{RESULT_BEGIN}\s*\n([A-Za-z0-9+/=\s]*?)\n{RESULT_END}", serial)
    if qemu.returncode != 0 or found is None:
        raise AssertionError(
            f"the guest gave no result (qemu exit {qemu.returncode}: "
            f"{errors.read_text(errors='replace').strip()})\n{_tail(log)}"
        )
    result: dict[str, Any] = json.loads(base64.b64decode("".join(found.group(1).split())))
    result["serial"] = serial
    return result


def _tail(log: Path, lines: int = 120) -> str:
    if not log.exists():
        return "(no serial log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
