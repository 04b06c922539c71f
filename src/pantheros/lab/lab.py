"""The Lab: a lab directory, its image, its mounts and its lock.

The lab is a directory holding `disk.img`, the `manifest.json` it was laid out with, and `mnt/`,
where the tree is mounted as a PantherOS machine mounts it (the root subvolume at mnt/, persist
at mnt/persist, ...). `up` is idempotent; `down` undoes only what `up` did.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pantheros import files, locking, mounttable, ui
from pantheros import manifest as manifests
from pantheros.errors import Refused, UsageError
from pantheros.lab.report import LabDown, LabStatus, LabUp, VMStatus
from pantheros.storage import blockdev, layout, mounts, tree
from pantheros.storage.record import MountRecord, RecordedMount

DEFAULT_DIR = "/var/lib/pantheros/lab"
# What the lab machine's /run/pantheros gets (impermanence's boot report and login warning;
# tests/test_lab.py holds the names to theirs): the files `down --purge` removes from DIR/run.
RUN_FILES = ("rollback.report", "login-warning")


def refuse_while_booted(directory: Path) -> None:
    """The lab's VM uses the disk: nothing on this host may attach or mount it meanwhile."""
    from pantheros.lab import qemu  # only its pid file check

    pid = qemu.running(directory / "vm" / "qemu.pid")
    if pid is not None:
        raise Refused(
            f"the lab at {directory} is booted (its VM runs, pid {pid}): work inside it "
            f"(panther lab ssh {directory}), or `panther lab poweroff {directory}` first"
        )


def vm_status(lab: Lab) -> VMStatus:
    from pantheros.lab import qemu

    return qemu.status(qemu.Files(lab.directory / "vm"))


def default_dir() -> Path:
    return Path(os.environ.get("PANTHER_LAB_DIR", DEFAULT_DIR))


def parse_size(text: str) -> int:
    units = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    raw = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = raw[-1] if raw and raw[-1] in units else ""
    number = raw[: len(raw) - len(unit)]
    try:
        value = float(number) * units[unit]
    except ValueError:
        raise UsageError(f"not a size: {text!r} (try 4G or 512M)") from None
    if not math.isfinite(value) or value <= 0:  # float() reads inf, nan and 1e400
        raise UsageError(f"not a size: {text!r} (try 4G or 512M)")
    return int(value)


def owning(*paths: str | Path) -> list[Lab]:
    """The labs the paths belong to, in the order of their directories: a lab owns its image
    (DIR/disk.img, DIR/disk.img.new), its tree (DIR/mnt and anything under it: a lab inside
    another's tree belongs to both) and a directory whose mount record names its image. A lab
    is a directory holding the lock or the manifest `up` makes first: a mount record alone
    (`disk mount ... /mnt`) does not make `/` a lab."""
    found: dict[Path, Lab] = {}
    for given in paths:
        real = Path(os.path.realpath(given))
        record = MountRecord.load(real) if real.is_dir() else None
        candidates = [real, *real.parents] + ([Path(record.target)] if record else [])
        for path in candidates:
            lab = Lab(path.parent)
            mine = path.name == "mnt" or path in (lab.image, lab.new_image)
            made = lab.lock_path.exists() or lab.manifest_path.exists()
            if mine and path.parent != path and made:
                found[lab.directory] = lab
    return [found[directory] for directory in sorted(found)]


@contextlib.contextmanager
def guard(*paths: str | Path, action: str) -> Iterator[None]:
    """The locks of the labs that own any of paths (see owning), taken in one order: `panther
    disk` commands on a lab's image or tree hold them, as every command that changes a lab
    does. action needs root, which is said first (a user cannot even look at the paths)."""
    mounts.require_root(action)
    with contextlib.ExitStack() as stack:
        for lab in owning(*paths):
            stack.enter_context(lab.lock())
        yield


@dataclass(frozen=True)
class Lab:
    """A lab directory. Every command here is idempotent and finishes what a killed one left.

    What the lab made: disk.img (laid out as disk.img.new, renamed when complete),
    manifest.json, persistence.json (`panther persist` records), mnt/, run/ (the machine's
    /run/pantheros), `booting` while it boots, the lock file, and the mount record under the
    state directory. The
    recorded loop device is used only while the kernel says this lab's image (the same path,
    device and inode) backs it.
    """

    directory: Path

    @property
    def image(self) -> Path:
        return self.directory / "disk.img"

    @property
    def new_image(self) -> Path:
        return self.directory / "disk.img.new"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def persistence_path(self) -> Path:
        return self.directory / "persistence.json"

    @property
    def booting_path(self) -> Path:
        """There while a boot of the lab (`reboot`, the first `up`) is under way: a boot cut
        short (Ctrl-C, a kill) is finished by the next `up`, rollback included."""
        return self.directory / "booting"

    @property
    def lock_path(self) -> Path:
        return self.directory / ".lock"

    @property
    def mnt(self) -> Path:
        return self.directory / "mnt"

    @property
    def run_dir(self) -> Path:
        """The lab machine's /run/pantheros (the boot report, the login warning)."""
        return self.directory / "run"

    @contextlib.contextmanager
    def lock(self, *, wait: bool = True, vm_ok: bool = False) -> Iterator[None]:
        """The lab's writer lock, `DIR/.lock` (see pantheros.locking). While the lab's VM runs
        (`panther lab boot`), its disk is the VM's: refused unless vm_ok."""
        with locking.exclusive(self.lock_path, what=f"the lab at {self.directory}", wait=wait):
            if not vm_ok:
                refuse_while_booted(self.directory)
            yield

    def manifest(self) -> manifests.Manifest:
        return manifests.load(self.manifest_path, beneath=self.directory)

    def record(self) -> MountRecord | None:
        """The mount record, if its loop device is still backed by this lab's image.

        `panther persist` records its bind mounts here (MountRecord.add_bind, drop_bind).
        """
        self.check_image()
        record = MountRecord.load(self.mnt.resolve())
        if record is None or record.loop is None:
            return record
        return record if blockdev.loop_is_backed_by(record.loop, self.image) else None

    def loop(self) -> str | None:
        """The loop device this lab's image is attached to, verified; None when detached."""
        return self._loop(self.record())

    def _loop(self, record: MountRecord | None) -> str | None:
        if record is not None and record.loop is not None:
            return record.loop
        found = blockdev.loop_for_image(self.image) if self.image.exists() else []
        return found[0] if found else None

    def mounted(self) -> list[RecordedMount]:
        """The recorded mounts really in place from this lab's disk, in mount order."""
        return self._mounted(self.record())

    def _mounted(self, record: MountRecord | None) -> list[RecordedMount]:
        devices = record.devices() if record else None
        if not record or not devices:
            return []
        live = {m.mountpoint for m in blockdev.mounts_from(devices)}
        return [m for m in record.mounts if m.path in live]

    def is_up(self) -> bool:
        """Every subvolume of the manifest and every recorded mount is in place, from our disk."""
        manifest = self.manifest() if self.manifest_path.exists() else None
        return self._is_up(self.record(), manifest)

    def _is_up(self, record: MountRecord | None, manifest: manifests.Manifest | None) -> bool:
        if record is None or manifest is None:
            return False
        root = str(self.mnt.resolve())
        expected = {root + point.rstrip("/") for point in manifest.storage.mount_points(esp=False)}
        recorded = {m.path for m in record.mounts}
        return expected <= recorded and len(self._mounted(record)) == len(recorded)

    def made(self) -> bool:
        """Whether `up` ever made anything here: its lock first, then the manifest."""
        made = (self.lock_path, self.manifest_path, self.image, self.new_image)
        return (
            any(path.exists() for path in made) or MountRecord.load(self.mnt.resolve()) is not None
        )

    def check_image(self) -> None:
        """The image must be the lab's own file: through a symlink (to another lab's image,
        say) that lab's loop device and mounts would be taken for this one's, and undone."""
        for image in (self.image, self.new_image):
            if image.is_symlink() or (image.exists() and not image.is_file()):
                raise Refused(f"{image} is not a regular file (a symlink?): not this lab's image")

    def check_place(self) -> None:
        """Refuse, before anything is made, a lab directory `up` could not finish in.

        Checked first because laying out an image costs seconds and gigabytes (sparse), which a
        failure at the mount would leave behind.
        """
        if self.directory.exists() and not self.directory.is_dir():
            raise UsageError(f"{self.directory} is not a directory: give a directory for the lab")
        self.check_image()
        if self.mnt.is_symlink():
            # The tree would be mounted wherever the link points, outside the lab.
            raise Refused(f"{self.mnt} is a symlink: the lab mounts only on its own directory")
        if self.mnt.exists() and not self.mnt.is_dir():
            raise Refused(f"{self.mnt} is not a directory: the lab mounts its tree there")
        other = mounttable.mount_at(self.mnt) if self.mnt.is_dir() else None
        if other is None or MountRecord.load(self.mnt.resolve()) is not None:
            return
        # No record, yet a mount: ours if from this image (a run killed before its record).
        loops = blockdev.loop_for_image(self.image) if self.image.exists() else []
        ours = set().union(*(blockdev.stack(loop) for loop in loops))
        if os.path.realpath(other.source) not in ours:
            raise Refused(
                f"{other.source} is mounted at {self.mnt}, not by panther: unmount it first"
            )

    def check_size(self, size: int, manifest: manifests.Manifest) -> None:
        """A new image must hold the layout: said before the lab directory is made."""
        need = layout.required_mib(manifest)
        if not self.image.exists() and size < need * layout.MIB:
            raise UsageError(
                f"--size {size // layout.MIB} MiB is too small: the layout needs at least "
                f"{need} MiB"
            )

    def up(self, size: int, manifest_source: str | None) -> LabUp:
        """Lay out (when there is no image yet) and mount the lab; finish a half-done one."""
        mounts.require_root("panther lab up")
        self.check_place()
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.lock():
            if not self.manifest_path.exists():
                source = manifest_source or str(manifests.bundled_path("lab"))
                content = files.read_bytes(Path(source), beneath=None, what="the manifest")
                if content is None:
                    raise UsageError(f"{source}: cannot read: file not found")
                # The bytes checked are the bytes kept: the source may change meanwhile.
                manifests.loads(content, source)
                files.replace_file(self.manifest_path, content, beneath=self.directory)
            elif manifest_source:
                raise UsageError(
                    f"the lab at {self.directory} already has a manifest; "
                    "`panther lab down --purge` first to use another"
                )
            manifest = self.manifest()
            if self._is_up(self.record(), manifest):
                return LabUp(
                    self.directory, self.mnt, already_up=True, laid_out=False, manifest=manifest
                )
            laid_out = not self.image.exists()
            if laid_out:
                self._make_image(manifest, size)
            self.mount(manifest)
            return LabUp(
                self.directory, self.mnt, already_up=False, laid_out=laid_out, manifest=manifest
            )

    def mount(self, manifest: manifests.Manifest) -> MountRecord:
        """Mount the tree from the image (`up`, and `reboot` as it boots), as manifest lays it."""
        return tree.mount_tree(
            manifest,
            str(self.manifest_path),
            str(self.image),
            str(self.mnt),
            None,
            adopt_loop=True,
            # Said once, when the image was laid out: not at every mount.
            warn_esp=False,
        )

    def _make_image(self, manifest: manifests.Manifest, size: int) -> None:
        """Lay out a new image under a temporary name: disk.img exists only when complete."""
        self._drop_new_image()
        with open(self.new_image, "xb") as f:
            f.truncate(size)
        try:
            ui.progress(f"laying out {self.image} ({size // 1024**2} MiB, sparse)")
            layout.format_disk(manifest, str(self.new_image), yes_wipe=False, secret=None)
            os.rename(self.new_image, self.image)
        except BaseException:
            self._drop_new_image()
            raise
        if manifest.storage.esp and not blockdev.kernel_supports("vfat"):
            ui.warn(tree.ESP_UNMOUNTABLE)

    def _drop_new_image(self) -> None:
        """Remove a half-made image, detaching the loop devices a killed layout left on it."""
        if not self.new_image.exists():
            return
        for dev in blockdev.loop_for_image(self.new_image):
            blockdev.detach_if_backed_by(dev, self.new_image)
        self.new_image.unlink()

    def status(self) -> LabStatus:
        image = self.image.exists()
        manifest = self.manifest() if self.manifest_path.exists() else None
        record = self.record()  # read and verified once for every field below
        return LabStatus(
            vm=vm_status(self),
            dir=self.directory,
            up=self._is_up(record, manifest),
            image=self.image if image else None,
            image_bytes=self.image.stat().st_size if image else None,
            device=self._loop(record),
            manifest=self.manifest_path if manifest else None,
            host=manifest.host if manifest else None,
            root=self.mnt,
            mounts=tuple(self._mounted(record)),
        )

    def down(self, purge: bool) -> LabDown:
        mounts.require_root("panther lab down")
        if not self.directory.is_dir() or not self.made():
            # Nothing is touched: `down --purge /` must not be a way to delete /mnt or /run files.
            ui.info(f"there is no lab at {self.directory}")
            return LabDown(self.directory, was_up=False, purged=False)
        self.check_image()
        with self.lock():
            was_up = self._take_down()
            if purge:
                self._purge()
        return LabDown(self.directory, was_up=was_up, purged=purge)

    def _take_down(self) -> bool:
        """Unmount and detach; loop devices of this image that no record names go too.

        Whether there was anything to take down."""
        root = self.mnt.resolve()
        record = MountRecord.load(root)
        if record is not None:
            tree.unmount_tree(str(root))  # verifies the loop device, or forgets the record
        leftovers = blockdev.loop_for_image(self.image) if self.image.exists() else []
        for dev in leftovers:
            # A run killed after attaching, before recording: adopt the device, then undo it.
            adopted = MountRecord(
                directory=str(root), target=str(self.image), manifest="", loop=dev
            )
            adopted.save()
            try:
                tree.unmount_tree(str(root))
            except BaseException:
                # Refused (its disk mounted elsewhere, say): the record made here would name
                # a device this lab never recorded; what was there before stays as it was.
                adopted.forget()
                raise
        # A layout killed half-way left disk.img.new, perhaps attached: useless, and a purge
        # that only unlinked it would leak the loop device on a deleted file.
        half_made = self.new_image.exists()
        self._drop_new_image()
        if record is None and not leftovers and not half_made:
            ui.info(f"the lab at {self.directory} is not up")
            return False
        return True

    def _purge(self) -> None:
        made = [
            self.image,
            self.new_image,
            self.manifest_path,
            self.persistence_path,
            self.booting_path,
        ]
        for path in made:
            path.unlink(missing_ok=True)
        # Directories go only when empty: the lab never deletes what it did not make.
        if self.mnt.is_dir() and not self.mnt.is_symlink() and not any(self.mnt.iterdir()):
            self.mnt.rmdir()
        from pantheros.lab import qemu  # the VM's files, by name

        qemu.purge(self.directory / "vm")
        # By name only: DIR/run may be anything when DIR is not what the user thinks it is.
        if self.run_dir.is_dir() and not self.run_dir.is_symlink():
            for name in RUN_FILES:
                (self.run_dir / name).unlink(missing_ok=True)
            if not any(self.run_dir.iterdir()):
                self.run_dir.rmdir()
        self.lock_path.unlink(missing_ok=True)
        if not any(self.directory.iterdir()):
            self.directory.rmdir()
        ui.info(f"removed the lab's image, manifest and records in {self.directory}")
