"""`panther disk format` and `plan`: lay out the PantherOS btrfs layout from a manifest.

`format` is a list of steps; `plan` prints the same list without running it, so what a user
reviews is what runs. Mounting the laid-out tree is `pantheros.storage.tree`.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, process, ui
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.manifest import Manifest
from pantheros.manifest.models import Role
from pantheros.storage import blankrecord, blockdev
from pantheros.storage.luks import (
    Secret,
    close_mapping,
    device_mapper_available,
    is_open,
    open_mapping,
)
from pantheros.storage.mounts import require_root, top_level_mount

MIB = 1024 * 1024
GPT_OVERHEAD_MIB = 2  # alignment at the start and the backup table at the end
LUKS2_HEADER_MIB = 16
BTRFS_MIN_MIB = 256
ESP_TYPE, LINUX_TYPE, LUKS_TYPE = "ef00", "8300", "8309"


def required_mib(manifest: Manifest) -> int:
    st = manifest.storage
    if st.min_size_mib is not None:
        return st.min_size_mib
    esp = st.esp.size_mib if st.esp else 0
    luks = LUKS2_HEADER_MIB if st.luks else 0
    return GPT_OVERHEAD_MIB + esp + luks + BTRFS_MIN_MIB


@dataclass
class Step:
    """One thing format does: what to show, and what to run."""

    show: str
    action: Callable[[], None]


@dataclass
class Layout:
    """Device paths a plan refers to; filled in as the steps run."""

    disk: str
    esp: str = "<partition 1>"
    main: str = "<partition 2>"
    btrfs_device: str = "<btrfs device>"
    top: str = "<top-level mount>"


def _cmd(argv: list[str], *, stdin: str | None = None) -> Callable[[], None]:
    def run() -> None:
        process.run(argv, check=True, input=stdin)

    return run


def format_steps(
    manifest: Manifest, layout: Layout, secret: Secret | None, wipe: list[str]
) -> Iterator[Step]:
    """The steps of `panther disk format`, made lazily: later steps see devices made earlier."""
    st = manifest.storage
    for dev in wipe:
        yield Step(f"wipefs --all {dev}", _cmd(["wipefs", "--all", dev]))
    yield Step(f"sgdisk --zap-all {layout.disk}", _cmd(["sgdisk", "--zap-all", layout.disk]))
    argv = ["sgdisk"]
    number = 1
    if st.esp:
        argv += [
            f"--new={number}:0:+{st.esp.size_mib}M",
            f"--typecode={number}:{ESP_TYPE}",
            f"--change-name={number}:{st.esp.label}",
        ]
        number += 1
    argv += [
        f"--new={number}:0:0",
        f"--typecode={number}:{LUKS_TYPE if st.luks else LINUX_TYPE}",
        f"--change-name={number}:{st.partition_label}",
        layout.disk,
    ]
    yield Step(" ".join(argv), _cmd(argv))

    def find_partitions() -> None:
        found = blockdev.rescan_partitions(layout.disk, number)
        if st.esp:
            layout.esp = found[0]
        layout.main = found[number - 1]
        layout.btrfs_device = layout.main

    yield Step(f"partx --update {layout.disk}  # wait for the partition devices", find_partitions)
    if st.esp:
        mkfs_esp = ["mkfs.vfat", "-F", "32", "-n", st.esp.label, layout.esp]
        yield Step(" ".join(mkfs_esp), _cmd(mkfs_esp))
    if st.luks:
        luks = st.luks
        assert secret is not None
        fmt = ["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode"]
        if luks.label:
            fmt += ["--label", luks.label]
        fmt += [*secret.args(), layout.main]
        shown = " ".join(fmt) + ("" if secret.key_file else " < passphrase")
        yield Step(shown, _cmd(fmt, stdin=secret.stdin()))

        def open_luks() -> None:
            open_mapping(layout.main, luks.name, secret, luks.allow_discards, persistent=True)
            layout.btrfs_device = luks.mapper_path

        yield Step(f"cryptsetup open {layout.main} {luks.name} {secret.describe()}", open_luks)
    mkfs = ["mkfs.btrfs", "--force", "--label", st.btrfs_label, layout.btrfs_device]
    yield Step(" ".join(mkfs), _cmd(mkfs))


def subvolume_steps(manifest: Manifest, top: str) -> Iterator[Step]:
    """Create the subvolumes, the blank snapshot and the old-roots location under top."""
    st = manifest.storage

    def create(name: str) -> Callable[[], None]:
        def run() -> None:
            path = Path(top, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not btrfs.is_subvolume(path):
                btrfs.create_subvolume(path)

        return run

    for sub in sorted(st.subvolumes, key=lambda s: s.name.count("/")):
        yield Step(f"btrfs subvolume create {top}/{sub.name}", create(sub.name))

    def mountpoints() -> None:
        # Mount points live in the blank root, so every fresh root has them and they are no change.
        for path in _mountpoints(manifest, top):
            Path(path).mkdir(parents=True, exist_ok=True)

    yield Step(f"mkdir -p {' '.join(_mountpoints(manifest, top))}", mountpoints)

    def blank() -> None:
        path = Path(top, st.blank_snapshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not btrfs.is_subvolume(path):
            btrfs.snapshot(Path(top, st.root.name), path, readonly=True)

    yield Step(
        f"btrfs subvolume snapshot -r {top}/{st.root.name} {top}/{st.blank_snapshot}"
        "  # the blank root every boot starts from",
        blank,
    )
    yield Step(
        f"record the blank's identity in {top}/{blankrecord.RECORD}  # the boot step trusts "
        "only this blank",
        lambda: blankrecord.record_blank(Path(top), st.blank_snapshot, "laid out by panther"),
    )
    yield Step(
        f"mkdir -p {top}/{st.old_roots}  # where previous roots are kept",
        lambda: Path(top, st.old_roots).mkdir(parents=True, exist_ok=True),
    )
    directories = manifest.first_boot.directories
    if directories:
        persist = st.by_role(Role.PERSIST)
        assert persist is not None, "validated manifests have a persist subvolume"
        shown = " ".join(
            f"{top}/{persist.name}{_below(d.path, persist.mountpoint)}" for d in directories
        )
        yield Step(
            f"install -d {shown}  # what the first boot needs, with its owner and mode",
            lambda: first_boot_directories(manifest, Path(top, persist.name)),
        )
    yield Step(f"btrfs filesystem sync {top}", lambda: btrfs.sync(top))


def _below(path: str, mountpoint: str) -> str:
    """path (under mountpoint) as a path inside the mounted subvolume, with a leading /."""
    return path if mountpoint == "/" else path[len(mountpoint) :]


def first_boot_directories(manifest: Manifest, persist: Path) -> None:
    """Make the first boot's directories inside the persist subvolume mounted at persist.

    Parents are made root-owned 0755; each directory gets its mode, and its owner where the
    manifest knows the ids (otherwise the boot applies it: D134). One that exists is given the
    declared mode and owner where they differ. Nothing is followed: a symlink on the way is
    refused.
    """
    st = manifest.storage
    mount = st.by_role(Role.PERSIST)
    assert mount is not None, "validated manifests have a persist subvolume"
    for entry in manifest.first_boot.directories:
        parts = [p for p in _below(entry.path, mount.mountpoint).split("/") if p]
        fd = os.open(persist, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            for index, name in enumerate(parts):
                last = index == len(parts) - 1
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    # A parent as `mkdir -p` makes it under umask 022, whatever ours is.
                    os.chmod(name, 0o755, dir_fd=fd, follow_symlinks=False)  # noqa: S103
                except FileExistsError:
                    pass
                try:
                    child = os.open(
                        name,
                        os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                        dir_fd=fd,
                    )
                except OSError as exc:
                    raise Refused(
                        f"{entry.path}: {'/'.join(parts[: index + 1])} is not a directory "
                        f"({exc.strerror})"
                    ) from None
                os.close(fd)
                fd = child
                if last:
                    # Only what differs: a second run changes nothing (not even a ctime).
                    have = os.fstat(fd)
                    if stat.S_IMODE(have.st_mode) != entry.mode_bits:
                        os.fchmod(fd, entry.mode_bits)
                    owner = (entry.uid, entry.gid)
                    if None not in owner and (have.st_uid, have.st_gid) != owner:
                        os.fchown(fd, entry.uid or 0, entry.gid or 0)
        finally:
            os.close(fd)


def _mountpoints(manifest: Manifest, top: str) -> list[str]:
    st = manifest.storage
    return [f"{top}/{st.root.name}{m}" for m in sorted(st.mount_points(root=False))]


def preflight(manifest: Manifest, target: str, *, secret: Secret | None) -> None:
    """Refuse, before any change, what would fail or destroy data without consent."""
    path, _ = blockdev.resolve_target(target)
    for tool in ["sgdisk", "partx", "wipefs", "mkfs.btrfs", "losetup", "mount", "umount"]:
        process.require(tool)
    if manifest.storage.esp:
        process.require("mkfs.vfat")
    if manifest.storage.luks:
        process.require("cryptsetup")
        if secret is None:
            raise UsageError("the layout uses LUKS: give --key-file FILE or --passphrase-stdin")
        if secret.key_file and not os.path.isfile(secret.key_file):
            raise UsageError(f"key file {secret.key_file} does not exist")
        if not device_mapper_available():
            raise PantherError(
                "the layout uses LUKS but this kernel has no device-mapper: "
                "cannot open the encrypted partition"
            )
        if is_open(manifest.storage.luks.name):
            # The new volume could not take the name, and the open one is not on TARGET.
            raise Refused(
                f"{manifest.storage.luks.mapper_path} is already open: the layout's luks.name "
                "is in use on this machine"
            )
    need = required_mib(manifest)
    have = blockdev.size_bytes(path) // MIB
    if have < need:
        raise Refused(f"target {target} has {have} MiB, the layout needs at least {need} MiB")
    if blockdev.is_block_device(path):
        busy = blockdev.busy_reason(path)
        if busy:
            raise Refused(f"target {target} is in use: {busy}")
    else:
        loops = blockdev.loop_for_image(path)
        if loops:
            raise Refused(f"image {target} is attached to {', '.join(loops)}")


def plan(manifest: Manifest, target: str, secret: Secret | None) -> list[str]:
    """Every step `format` and `mount` would take, as text; changes nothing."""
    disk = target
    lines = []
    if os.path.isfile(target):
        lines.append(f"losetup --find --show --partscan {target}  # image: attach to a loop device")
        disk = "<loop device>"
    layout = Layout(disk=disk)
    if manifest.storage.luks and secret is None:
        secret = Secret(passphrase="")
    lines += [s.show for s in format_steps(manifest, layout, secret, wipe=[])]
    lines.append(f"mount -t btrfs -o subvolid=5 {layout.btrfs_device} <top-level mount>")
    lines += [s.show for s in subvolume_steps(manifest, "<top>")]
    lines.append("umount <top-level mount>")
    if manifest.storage.luks:
        lines.append(f"cryptsetup close {manifest.storage.luks.name}")
    if os.path.isfile(target):
        lines.append("losetup --detach <loop device>")
    return lines


def format_disk(manifest: Manifest, target: str, *, yes_wipe: bool, secret: Secret | None) -> None:
    require_root("panther disk format")
    preflight(manifest, target, secret=secret)
    with blockdev.attached(target) as (disk, _):
        found = blockdev.signatures(disk)
        if found and not yes_wipe:
            raise Refused(
                f"target {target} is not empty ({'; '.join(found)}); give --yes-wipe to erase it"
            )
        wipe = [*reversed(blockdev.partitions(disk)), disk] if found else []
        layout = Layout(disk=disk)
        luks = manifest.storage.luks
        try:
            for step in format_steps(manifest, layout, secret, wipe):
                ui.progress(step.show)
                step.action()
            with top_level_mount(layout.btrfs_device) as top:
                for step in subvolume_steps(manifest, str(top)):
                    ui.progress(step.show)
                    step.action()
        finally:
            if luks:
                close_mapping(luks.name, layout.disk)


def finish(manifest: Manifest, device: str) -> None:
    """`panther disk finish`: what format does after mkfs.btrfs, on a btrfs another tool made.

    disko's hook runs it after disko has made the file system and the subvolumes (D131): the
    subvolumes the manifest names, the mount points in the root, the read-only blank, the
    old-roots directory and the first boot's directories. Each step keeps what is there, so
    a second run changes nothing. The device must be the manifest's btrfs (by its label); a
    blank that is not a read-only subvolume is refused, not replaced.
    """
    require_root("panther disk finish")
    for tool in ("blkid", "mount", "umount"):
        process.require(tool)
    if not blockdev.is_block_device(device):
        raise UsageError(f"{device} is not a block device")
    probe = process.run(["blkid", "--probe", "--output", "export", device], check=False)
    found = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    label = manifest.storage.btrfs_label
    if found.get("TYPE") != "btrfs" or found.get("LABEL") != label:
        what = f"{found.get('TYPE', 'no file system')}" + (
            f" labelled {found['LABEL']!r}" if "LABEL" in found else ""
        )
        raise Refused(f"{device} holds {what}, not the layout's btrfs labelled {label!r}")
    with top_level_mount(device) as top:
        blank = top / manifest.storage.blank_snapshot
        there = blank.exists() or blank.is_symlink()
        if there and not (btrfs.is_subvolume(blank) and btrfs.subvolume_info(blank).readonly):
            raise Refused(
                f"{manifest.storage.blank_snapshot} exists on {device} but is not a "
                "read-only subvolume: it cannot be the blank, and finish does not replace it"
            )
        # No line per step: each keeps what exists, so a line would claim work not done.
        for step in subvolume_steps(manifest, str(top)):
            logging.getLogger(__name__).debug("finish: %s", step.show)
            step.action()
