"""`panther disk mount` and `unmount`: the laid-out tree mounted as its host mounts it.

Mounting records what it did (pantheros.storage.record), and unmounting undoes exactly that
and nothing else.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from pantheros import files, mounttable, ui
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.manifest import Manifest
from pantheros.storage import blockdev, luks, mounts
from pantheros.storage.luks import Secret
from pantheros.storage.mounts import require_root
from pantheros.storage.record import MountKind, MountRecord, RecordedMount
from pantheros.storage.record import lock as record_lock

ESP_UNMOUNTABLE = "this kernel cannot mount vfat: the EFI system partition is left unmounted"


def btrfs_device(manifest: Manifest, disk: str) -> str:
    """The device the btrfs filesystem is on: the main partition, or its LUKS mapping."""
    mapping = manifest.storage.luks
    return mapping.mapper_path if mapping else main_partition(manifest, disk)


def main_partition(manifest: Manifest, disk: str) -> str:
    parts = blockdev.partitions(disk)
    expected = 2 if manifest.storage.esp else 1
    if len(parts) < expected:
        raise UsageError(f"{disk} has no PantherOS layout ({len(parts)} partition(s)); run format")
    return parts[expected - 1]


def _under(path: str, root: Path) -> bool:
    return path == str(root) or path.startswith(str(root) + "/")


def _refuse_foreign(root: Path, devices: set[str]) -> None:
    """Refuse when something panther did not mount from our device is mounted in the tree."""
    for entry in mounttable.mountinfo():
        if not _under(entry.mountpoint, root):
            continue
        source = os.path.realpath(entry.source) if entry.source.startswith("/dev/") else None
        if source not in devices:
            raise Refused(
                f"{entry.source} is mounted at {entry.mountpoint}, not by panther from this "
                "disk: unmount it first"
            )


def _verified_record(root: Path) -> MountRecord | None:
    """The record for root, forgotten when its loop device now belongs to another file."""
    record = MountRecord.load(root)
    if record is not None and record.devices() is None:
        ui.warn(
            f"{record.loop} is no longer backed by {record.target}: "
            "forgetting panther's record of it (the device is left alone)"
        )
        record.forget()
        return None
    return record


def mount_tree(
    manifest: Manifest,
    manifest_path: str,
    target: str,
    directory: str,
    secret: Secret | None,
    *,
    adopt_loop: bool = False,
    warn_esp: bool = True,
) -> MountRecord:
    """`_mount_tree` under the directory's lock (record.lock)."""
    require_root("panther disk mount")
    with record_lock(Path(directory).resolve()):
        return _mount_tree(
            manifest,
            manifest_path,
            target,
            directory,
            secret,
            adopt_loop=adopt_loop,
            warn_esp=warn_esp,
        )


def _mount_tree(
    manifest: Manifest,
    manifest_path: str,
    target: str,
    directory: str,
    secret: Secret | None,
    *,
    adopt_loop: bool = False,
    warn_esp: bool = True,
) -> MountRecord:
    """Mount every subvolume (and the ESP) under directory, as the host would mount them.

    Run again after an interruption it finishes the job: mounts of our device already in place
    are kept and recorded. adopt_loop takes over a loop device the image is already attached
    to (the lab's image is its own, so such a device is left from an interrupted run).
    warn_esp=False leaves the warning about an ESP this kernel cannot mount to the caller
    (the lab gives it once, when it lays out its image).
    """
    require_root("panther disk mount")
    root = Path(directory).resolve()
    path, is_image = blockdev.resolve_target(target)
    record = _verified_record(root)
    if record is not None and record.target != path:
        raise Refused(f"{root} holds panther's mounts of {record.target}: unmount it first")
    if record is None:
        record = MountRecord(
            directory=str(root), target=path, manifest=str(Path(manifest_path).resolve())
        )
        if is_image:
            existing = blockdev.loop_for_image(path)
            if existing and not adopt_loop:
                raise Refused(f"image {target} is already attached to {', '.join(existing)}")
            record.loop = existing[0] if existing else None
            if record.loop is not None:
                # Left by a killed run: perhaps killed inside losetup, before the scan.
                blockdev.scan_partitions(record.loop)
    devices = record.devices() or set()
    _refuse_foreign(root, devices)
    if is_image and record.loop is None:
        record.loop = blockdev.attach_loop(path)
    record.save()
    disk = record.loop or record.target
    try:
        with blockdev.verified_loop(disk, path) if is_image else contextlib.nullcontext(0) as fd:
            if fd is None:
                raise PantherError(f"{disk} is no longer backed by {path}; run the command again")
            _mount_all(manifest, disk, root, record, secret, warn_esp=warn_esp)
    except BaseException:
        # Leave nothing half-done behind: undo what this call and earlier ones recorded.
        if MountRecord.load(root) is not None:
            unmount_tree(str(root), quiet=True)
        raise
    return record


def _mountpoint(root: Path, path: str) -> None:
    """Make the directory path under root, refusing a symlink anywhere below root.

    A mount follows symlinks in its target; one planted inside the machine would otherwise
    put the mount outside it.
    """
    current = root
    for part in Path(path).relative_to(root).parts:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            raise Refused(f"{current} is not a directory (a symlink?): not mounting over it")
        if not current.exists():
            # Even a mkdir that finds the directory dirties a btrfs subvolume: only when missing.
            current.mkdir()


def _mount_all(
    manifest: Manifest,
    disk: str,
    root: Path,
    record: MountRecord,
    secret: Secret | None,
    *,
    warn_esp: bool,
) -> None:
    st = manifest.storage
    main = main_partition(manifest, disk)
    device = main
    if st.luks:
        if not luks.device_mapper_available():
            raise PantherError("this kernel has no device-mapper: cannot open the LUKS partition")
        opened_before = luks.is_open(st.luks.name)
        luks.open_mapping(main, st.luks.name, secret, st.luks.allow_discards)
        if not opened_before:
            record.luks = st.luks.name
            record.save()
        device = st.luks.mapper_path
    devices = blockdev.stack(disk)
    root.mkdir(parents=True, exist_ok=True)
    targets: list[tuple[RecordedMount, str, list[str], str]] = []
    for sub in st.ordered_subvolumes():
        path = str(root) + ("" if sub.mountpoint == "/" else sub.mountpoint)
        mount = RecordedMount(path, MountKind.SUBVOLUME, sub.name)
        targets.append((mount, device, st.mount_options_for(sub), "btrfs"))
    if st.esp and not blockdev.kernel_supports("vfat"):
        if warn_esp:
            ui.warn(ESP_UNMOUNTABLE)
    elif st.esp:
        esp_dev = blockdev.partitions(disk)[0]
        mount = RecordedMount(str(root) + st.esp.mountpoint, MountKind.ESP, None)
        targets.append((mount, esp_dev, list(st.esp.mount_options), "vfat"))
    targets.sort(key=lambda t: t[0].path.count("/"))
    for mount, source, options, fstype in targets:
        _mountpoint(root, mount.path)
        current = mounttable.mount_at(mount.path)
        if current is None or os.path.realpath(current.source) not in devices:
            ui.progress(f"mount -t {fstype} -o {','.join(options)} {source} {mount.path}")
            # By descriptor, reached without a symlink: one swapped in after the check above
            # is not followed out of the tree.
            target = files.open_beneath(Path(mount.path), beneath=root, what="the mount point")
            try:
                mounts.mount(source, target, options, fstype=fstype)
            finally:
                os.close(target)
        record.add(mount)


def unmount_tree(directory: str, *, quiet: bool = False, keep_device: bool = False) -> MountRecord:
    """`_unmount_tree` under the directory's lock (record.lock)."""
    require_root("panther disk unmount")
    with record_lock(Path(directory).resolve()):
        return _unmount_tree(directory, quiet=quiet, keep_device=keep_device)


def _unmount_tree(directory: str, *, quiet: bool, keep_device: bool) -> MountRecord:
    """Undo what mount_tree did under directory, innermost first; touch nothing else.

    Every mount under directory whose source is our device goes, recorded or not (a run killed
    between a mount and its record leaves one unrecorded). Anything else mounted there, or our
    device mounted elsewhere, is refused before a thing changes. keep_device leaves the loop
    device (and LUKS mapping) attached, as for a simulated reboot.
    """
    require_root("panther disk unmount")
    root = Path(directory).resolve()
    record = MountRecord.load(root)
    if record is None:
        raise UsageError(f"nothing was mounted by panther at {root}")
    devices = record.devices()
    if devices is None:
        ui.warn(
            f"{record.loop} is no longer backed by {record.target}: it and its mounts are "
            "not panther's; forgetting the record"
        )
        record.forget()
        return record
    _refuse_foreign(root, devices)
    ours = blockdev.mounts_from(devices)
    elsewhere = [m.mountpoint for m in ours if not _under(m.mountpoint, root)]
    if elsewhere and not keep_device:
        raise Refused(
            f"{record.target} is also mounted at {', '.join(elsewhere)}: unmount that first"
        )
    for entry in reversed(ours):
        if _under(entry.mountpoint, root):
            if not quiet:
                ui.progress(f"umount {entry.mountpoint}")
            mounts.unmount(entry.mountpoint)
    record.mounts = []
    record.save()
    if keep_device:
        return record
    if record.luks:
        luks.close_mapping(record.luks, record.loop or record.target)
    if record.loop:
        if not quiet:
            ui.progress(f"losetup --detach {record.loop}")
        blockdev.detach_if_backed_by(record.loop, record.target)
    record.forget()
    return record
