"""The PantherOS machine a command acts on: the running host, or the lab (`--lab DIR`).

Paths are given as the machine sees them (`/var/lib/foo`); `host_path` maps them to where they
are on this host (`/` for the running host, `DIR/mnt` for the lab).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, locking, mounttable
from pantheros import manifest as manifests
from pantheros.errors import PantherError, Refused, UsageError
from pantheros.lab.lab import Lab
from pantheros.manifest.models import Subvolume
from pantheros.storage import blockdev, mounts, tree


def host_lock(*, wait: bool = True) -> contextlib.AbstractContextManager[None]:
    """The running host's writer lock, `<state dir>/host.lock`."""
    return locking.exclusive(mounts.state_dir() / "host.lock", what="this machine", wait=wait)


@dataclass(frozen=True)
class Machine:
    manifest: manifests.Manifest
    root: Path
    lab: Lab | None = None

    @classmethod
    def select(
        cls, lab_dir: str | None, manifest_path: str | None = None, *, instead: str = "--lab DIR"
    ) -> Machine:
        """The lab in lab_dir, else the host; `instead`: the calling command's own options that
        name another machine, offered when this one is not a PantherOS machine."""
        if lab_dir is not None:
            return cls.of_lab(Lab(Path(lab_dir).resolve()))
        path = manifest_path or str(manifests.HOST_MANIFEST)
        if manifest_path is None and not manifests.HOST_MANIFEST.exists():
            raise UsageError(
                f"{manifests.HOST_MANIFEST} not found: this is not a PantherOS machine "
                f"(use {instead})"
            )
        return cls(manifest=manifests.load(path), root=Path("/"))

    @classmethod
    def of_lab(cls, lab: Lab, manifest: manifests.Manifest | None = None) -> Machine:
        """The lab's machine, with its manifest (read from the lab unless given)."""
        if manifest is None:
            if not lab.manifest_path.exists():
                raise UsageError(f"no lab at {lab.directory} (panther lab up {lab.directory})")
            manifest = lab.manifest()
        return cls(manifest=manifest, root=lab.mnt, lab=lab)

    @property
    def name(self) -> str:
        return f"the lab at {self.lab.directory}" if self.lab else "this machine"

    @property
    def run_dir(self) -> Path:
        """The machine's /run/pantheros: runtime files such as the login warning."""
        return self.lab.run_dir if self.lab is not None else mounts.state_dir()

    @property
    def run_base(self) -> Path:
        """Where run_dir is reached from without a symlink: the lab's directory, or the state
        directory itself on the host (pantheros.files, `beneath`)."""
        return self.lab.directory if self.lab is not None else mounts.state_dir()

    def lock(self, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """This machine's writer lock (see pantheros.locking)."""
        if self.lab is not None:
            return self.lab.lock(wait=wait)
        return host_lock(wait=wait)

    def host_path(self, path: str) -> Path:
        """Where a path of the machine (absolute, as it sees it) is on this host."""
        if not path.startswith("/"):
            raise UsageError(f"give an absolute path as the machine sees it, not {path!r}")
        parts = Path(os.path.normpath(path)).parts[1:]
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def device(self) -> Iterator[str]:
        """The block device holding the btrfs filesystem (a down lab is attached meanwhile)."""
        if self.lab is not None:
            # Under the lab's lock: `lab up` adopts a device attached to the image, and `lab
            # down` detaches it; neither may happen to a device in use here.
            with self.lab.lock():
                loop = self.lab.loop()  # verified: backed by this lab's image
                if loop is not None:
                    yield tree.btrfs_device(self.manifest, loop)
                    return
                if not self.lab.image.exists():
                    raise UsageError(
                        f"the lab at {self.lab.directory} has no image (panther lab up)"
                    )
                with blockdev.attached(str(self.lab.image)) as (disk, _):
                    yield tree.btrfs_device(self.manifest, disk)
            return
        entry = mounttable.mount_at("/")
        if entry is None or entry.fstype != "btrfs":
            raise PantherError("this machine's root is not on btrfs: not a PantherOS machine")
        yield entry.source

    @contextlib.contextmanager
    def top_level(self, *, readonly: bool = False) -> Iterator[Path]:
        """The btrfs top level (subvolid=5), mounted privately for the duration."""
        mounts.require_root("this command")
        with self.device() as device, mounts.top_level_mount(device, readonly=readonly) as top:
            yield top

    def is_mounted(self, top: Path, subvolume: Subvolume) -> bool:
        """Whether subvolume is what is mounted at its mount point in this machine.

        Checked by subvolume UUID and the subvolume's own top directory (inode 256), not by
        path: a plain directory where the mount should be is not it.
        """
        where = self.host_path(subvolume.mountpoint)
        return (
            mounttable.mount_at(where) is not None
            and btrfs.is_subvolume(where)
            and btrfs.subvolume_info(where).uuid == btrfs.subvolume_info(top / subvolume.name).uuid
        )

    def require_mounted(self, top: Path, subvolume: Subvolume) -> None:
        """Refuse unless subvolume is mounted where the manifest says.

        Without this, a command would write into the directory underneath (for /persist, the
        root's ephemeral /persist, gone at the next boot).
        """
        if not self.is_mounted(top, subvolume):
            if self.lab is not None and not self.lab.mounted():
                raise lab_is_down(self.lab)
            raise Refused(
                f"{subvolume.mountpoint} in {self.name} is not the {subvolume.name} subvolume: "
                "it is not mounted there; nothing was changed"
            )


def lab_is_down(lab: Lab) -> UsageError:
    """What a command that needs the lab's tree says when nothing of it is mounted."""
    return UsageError(f"the lab at {lab.directory} is down (panther lab up {lab.directory})")
