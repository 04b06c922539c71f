"""`panther disk`: lay out, mount and unmount the PantherOS btrfs layout from a manifest.

`format` is a list of steps; `plan` prints the same list without running it, so what a user
reviews is what runs. Mounting records what it did in a state file under /run, and `unmount`
undoes exactly that and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pantheros import btrfs, process, ui
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.manifest import Manifest
from pantheros.storage import blockdev, mounts
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


def device_mapper_available() -> bool:
    """Whether the kernel has device-mapper (a /dev/mapper/control node alone proves nothing)."""
    try:
        with open("/proc/misc", encoding="ascii") as f:
            return any(line.split()[-1] == "device-mapper" for line in f if line.strip())
    except OSError:
        return False


@dataclass
class Secret:
    """How LUKS gets its key: a key file, or a passphrase read from stdin."""

    key_file: str | None = None
    passphrase: str | None = None

    def args(self) -> list[str]:
        return ["--key-file", self.key_file] if self.key_file else []

    def stdin(self) -> str | None:
        return None if self.passphrase is None else self.passphrase + "\n"

    def describe(self) -> str:
        return f"--key-file {self.key_file}" if self.key_file else "(passphrase from stdin)"


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
            open_mapping(layout.main, luks.name, secret, luks.allow_discards)
            layout.btrfs_device = f"/dev/mapper/{luks.name}"

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
        f"mkdir -p {top}/{st.old_roots}  # where previous roots are kept",
        lambda: Path(top, st.old_roots).mkdir(parents=True, exist_ok=True),
    )
    yield Step(f"btrfs filesystem sync {top}", lambda: btrfs.sync(top))


def _mountpoints(manifest: Manifest, top: str) -> list[str]:
    st = manifest.storage
    inner = [s.mountpoint for s in st.subvolumes if s.mountpoint != "/"]
    inner += [st.esp.mountpoint] if st.esp else []
    return [f"{top}/{st.root.name}{m}" for m in sorted(inner)]


def open_mapping(device: str, name: str, secret: Secret | None, discards: bool) -> None:
    if os.path.exists(f"/dev/mapper/{name}"):
        return
    if secret is None:
        raise UsageError("the layout uses LUKS: give --key-file FILE or --passphrase-stdin")
    argv = ["cryptsetup", "open", *secret.args()]
    if discards:
        argv.append("--allow-discards")
    process.run([*argv, device, name], check=True, input=secret.stdin())


@contextmanager
def attached(target: str) -> Iterator[tuple[str, bool]]:
    """The block device of TARGET; an image is attached to a loop device only for the duration."""
    path, is_image = blockdev.resolve_target(target)
    if not is_image:
        yield path, False
        return
    dev = blockdev.attach_loop(path)
    try:
        yield dev, True
    finally:
        blockdev.detach_if_backed_by(dev, path)


def preflight(manifest: Manifest, target: str, *, yes_wipe: bool, secret: Secret | None) -> None:
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
    preflight(manifest, target, yes_wipe=yes_wipe, secret=secret)
    with attached(target) as (disk, _):
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
            if luks and os.path.exists(f"/dev/mapper/{luks.name}"):
                process.run(["cryptsetup", "close", luks.name], check=True)


# Mounting


def _state_file(directory: Path) -> Path:
    key = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
    return mounts.state_dir() / "mounts" / f"{key}.json"


@dataclass
class MountState:
    """What `panther disk mount` did at a directory, so `unmount` undoes exactly that.

    The record is a hint, never trusted alone: the loop device it names is used only while the
    kernel says the image backs it, and a mount counts as ours only if its source is our device.
    """

    directory: str
    target: str
    manifest: str
    loop: str | None = None
    luks: str | None = None
    mounts: list[dict[str, str]] = field(default_factory=list)  # {"path", "subvolume"|"esp"}

    @classmethod
    def load(cls, directory: Path) -> MountState | None:
        path = _state_file(directory)
        try:
            data: Any = json.loads(path.read_text())
            return cls(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            # Records are replaced atomically, so this one was written by something else.
            ui.warn(f"the mount record {path} is not panther's; forgetting it")
            path.unlink()
            return None

    def save(self) -> None:
        path = _state_file(Path(self.directory))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f, indent=2)
        os.replace(tmp, path)

    def forget(self) -> None:
        _state_file(Path(self.directory)).unlink(missing_ok=True)

    def devices(self) -> set[str] | None:
        """Our devices (disk, partitions, LUKS mapping), or None if the loop is not ours now."""
        if self.loop is None:
            return blockdev.stack(self.target) if blockdev.is_block_device(self.target) else set()
        if not blockdev.loop_is_backed_by(self.loop, self.target):
            return None
        return blockdev.stack(self.loop)


def btrfs_device(manifest: Manifest, disk: str) -> str:
    """The device the btrfs filesystem is on: the main partition, or its LUKS mapping."""
    luks = manifest.storage.luks
    return f"/dev/mapper/{luks.name}" if luks else main_partition(manifest, disk)


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
    for entry in blockdev.mountinfo():
        if not _under(entry.mountpoint, root):
            continue
        source = os.path.realpath(entry.source) if entry.source.startswith("/dev/") else None
        if source not in devices:
            raise Refused(
                f"{entry.source} is mounted at {entry.mountpoint}, not by panther from this "
                "disk: unmount it first"
            )


def _verified_state(root: Path) -> MountState | None:
    """The record for root, forgotten when its loop device now belongs to another file."""
    state = MountState.load(root)
    if state is not None and state.devices() is None:
        ui.warn(
            f"{state.loop} is no longer backed by {state.target}: "
            "forgetting panther's record of it (the device is left alone)"
        )
        state.forget()
        return None
    return state


def mount_tree(
    manifest: Manifest,
    manifest_path: str,
    target: str,
    directory: str,
    secret: Secret | None,
    *,
    adopt_loop: bool = False,
) -> MountState:
    """Mount every subvolume (and the ESP) under directory, as the host would mount them.

    Run again after an interruption it finishes the job: mounts of our device already in place
    are kept and recorded. adopt_loop takes over a loop device the image is already attached
    to (the lab's image is its own, so such a device is left from an interrupted run).
    """
    require_root("panther disk mount")
    root = Path(directory).resolve()
    path, is_image = blockdev.resolve_target(target)
    state = _verified_state(root)
    if state is not None and state.target != path:
        raise Refused(f"{root} holds panther's mounts of {state.target}: unmount it first")
    if state is None:
        state = MountState(
            directory=str(root), target=path, manifest=str(Path(manifest_path).resolve())
        )
        if is_image:
            existing = blockdev.loop_for_image(path)
            if existing and not adopt_loop:
                raise Refused(f"image {target} is already attached to {', '.join(existing)}")
            state.loop = existing[0] if existing else None
    devices = state.devices() or set()
    _refuse_foreign(root, devices)
    if is_image and state.loop is None:
        state.loop = blockdev.attach_loop(path)
    state.save()
    disk = state.loop or state.target
    try:
        with blockdev.verified_loop(disk, path) if is_image else contextlib.nullcontext(0) as fd:
            if fd is None:
                raise PantherError(f"{disk} is no longer backed by {path}; run the command again")
            _mount_all(manifest, disk, root, state, secret)
    except BaseException:
        # Leave nothing half-done behind: undo what this call and earlier ones recorded.
        if MountState.load(root) is not None:
            unmount_tree(str(root), quiet=True)
        raise
    return state


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
    manifest: Manifest, disk: str, root: Path, state: MountState, secret: Secret | None
) -> None:
    st = manifest.storage
    main = main_partition(manifest, disk)
    device = main
    if st.luks:
        if not device_mapper_available():
            raise PantherError("this kernel has no device-mapper: cannot open the LUKS partition")
        opened_before = os.path.exists(f"/dev/mapper/{st.luks.name}")
        open_mapping(main, st.luks.name, secret, st.luks.allow_discards)
        if not opened_before:
            state.luks = st.luks.name
            state.save()
        device = f"/dev/mapper/{st.luks.name}"
    devices = blockdev.stack(disk)
    root.mkdir(parents=True, exist_ok=True)
    targets: list[tuple[str, str, list[str], str, str]] = []
    for sub in st.ordered_subvolumes():
        path = str(root) + ("" if sub.mountpoint == "/" else sub.mountpoint)
        targets.append((path, device, st.mount_options_for(sub), "btrfs", sub.name))
    if st.esp and not blockdev.kernel_supports("vfat"):
        ui.warn("this kernel cannot mount vfat: the EFI system partition is left unmounted")
    elif st.esp:
        esp_dev = blockdev.partitions(disk)[0]
        targets.append(
            (str(root) + st.esp.mountpoint, esp_dev, list(st.esp.mount_options), "vfat", "esp")
        )
    targets.sort(key=lambda t: t[0].count("/"))
    for path, source, options, fstype, what in targets:
        _mountpoint(root, path)
        current = blockdev.mount_at(path)
        if current is None or os.path.realpath(current.source) not in devices:
            ui.progress(f"mount -t {fstype} -o {','.join(options)} {source} {path}")
            blockdev.mount(source, path, options, fstype=fstype)
        if not any(m["path"] == path for m in state.mounts):
            state.mounts.append({"path": path, "what": what})
            state.save()


def unmount_tree(directory: str, *, quiet: bool = False, keep_device: bool = False) -> MountState:
    """Undo what mount_tree did under directory, innermost first; touch nothing else.

    Every mount under directory whose source is our device goes, recorded or not (a run killed
    between a mount and its record leaves one unrecorded). Anything else mounted there, or our
    device mounted elsewhere, is refused before a thing changes. keep_device leaves the loop
    device (and LUKS mapping) attached, as for a simulated reboot.
    """
    require_root("panther disk unmount")
    root = Path(directory).resolve()
    state = MountState.load(root)
    if state is None:
        raise UsageError(f"nothing was mounted by panther at {root}")
    devices = state.devices()
    if devices is None:
        ui.warn(
            f"{state.loop} is no longer backed by {state.target}: it and its mounts are "
            "not panther's; forgetting the record"
        )
        state.forget()
        return state
    _refuse_foreign(root, devices)
    ours = blockdev.mounts_from(devices)
    elsewhere = [m.mountpoint for m in ours if not _under(m.mountpoint, root)]
    if elsewhere and not keep_device:
        raise Refused(
            f"{state.target} is also mounted at {', '.join(elsewhere)}: unmount that first"
        )
    for entry in reversed(ours):
        if _under(entry.mountpoint, root):
            if not quiet:
                ui.progress(f"umount {entry.mountpoint}")
            blockdev.unmount(entry.mountpoint)
    state.mounts = []
    state.save()
    if keep_device:
        return state
    if state.luks and os.path.exists(f"/dev/mapper/{state.luks}"):
        process.run(["cryptsetup", "close", state.luks], check=True)
    if state.loop:
        if not quiet:
            ui.progress(f"losetup --detach {state.loop}")
        blockdev.detach_if_backed_by(state.loop, state.target)
    state.forget()
    return state
