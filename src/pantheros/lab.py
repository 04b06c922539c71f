"""`panther lab`: the whole PantherOS experience on a sparse disk image.

The lab is a directory holding `disk.img`, the `manifest.json` it was laid out with, and `mnt/`,
where the tree is mounted as a PantherOS machine mounts it (the root subvolume at mnt/, persist
at mnt/persist, ...). `up` is idempotent; `down` undoes only what `up` did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import locking, ui
from pantheros import manifest as manifests
from pantheros.errors import UsageError
from pantheros.storage import blockdev, layout, mounts

DEFAULT_DIR = "/var/lib/pantheros/lab"


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
    if value <= 0:
        raise UsageError(f"not a size: {text!r} (try 4G or 512M)")
    return int(value)


@dataclass(frozen=True)
class Lab:
    directory: Path

    @property
    def image(self) -> Path:
        return self.directory / "disk.img"

    @property
    def manifest_path(self) -> Path:
        return self.directory / "manifest.json"

    @property
    def mnt(self) -> Path:
        return self.directory / "mnt"

    def lock(self, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """The lab's writer lock, `DIR/.lock` (see pantheros.locking)."""
        return locking.exclusive(
            self.directory / ".lock", what=f"the lab at {self.directory}", wait=wait
        )

    def manifest(self) -> manifests.Manifest:
        return manifests.load(self.manifest_path)

    def state(self) -> layout.MountState | None:
        return layout.MountState.load(self.mnt.resolve())

    def is_up(self) -> bool:
        state = self.state()
        return bool(
            state
            and state.mounts
            and all(blockdev.mount_at(m["path"]) is not None for m in state.mounts)
        )

    def up(self, size: int, manifest_source: str | None) -> None:
        mounts.require_root("panther lab up")
        self.directory.mkdir(parents=True, exist_ok=True)
        if not self.manifest_path.exists():
            source = manifest_source or str(manifests.bundled_path("lab"))
            manifests.load(source)  # reject a bad manifest before copying it
            shutil.copyfile(source, self.manifest_path)
        elif manifest_source:
            raise UsageError(
                f"the lab at {self.directory} already has a manifest; "
                "`panther lab down --purge` first to use another"
            )
        manifest = self.manifest()
        if self.is_up():
            ui.info(f"the lab at {self.directory} is already up")
            return
        created = False
        if not self.image.exists():
            with open(self.image, "wb") as f:
                f.truncate(size)
            created = True
        try:
            if created:
                ui.progress(f"laying out {self.image} ({size // 1024**2} MiB, sparse)")
                layout.format_disk(manifest, str(self.image), yes_wipe=False, secret=None)
        except BaseException:
            self.image.unlink(missing_ok=True)
            raise
        layout.mount_tree(manifest, str(self.manifest_path), str(self.image), str(self.mnt), None)

    def status(self) -> dict[str, Any]:
        state = self.state()
        manifest = self.manifest() if self.manifest_path.exists() else None
        mounts: dict[str, str] = {}
        esp: str | None = None
        if state:
            for entry in state.mounts:
                if blockdev.mount_at(entry["path"]) is None:
                    continue
                if entry["what"] == "esp":
                    esp = entry["path"]
                else:
                    mounts[entry["path"]] = entry["what"]
        return {
            "dir": str(self.directory),
            "up": self.is_up(),
            "image": str(self.image) if self.image.exists() else None,
            "image_bytes": self.image.stat().st_size if self.image.exists() else None,
            "device": state.loop if state else None,
            "manifest": str(self.manifest_path) if self.manifest_path.exists() else None,
            "host": manifest.host if manifest else None,
            "root": str(self.mnt),
            "mounts": mounts,
            "esp": esp,
        }

    def down(self, purge: bool) -> None:
        mounts.require_root("panther lab down")
        if self.state() is not None:
            layout.unmount_tree(str(self.mnt))
        elif not purge:
            ui.info(f"the lab at {self.directory} is not up")
        if purge:
            for path in (self.image, self.manifest_path):
                path.unlink(missing_ok=True)
            if self.mnt.exists() and not any(self.mnt.iterdir()):
                self.mnt.rmdir()
            ui.info(f"removed the lab image and manifest in {self.directory}")


NEXT_STEPS = """\
The lab machine is up; its root is mounted at {root}
What to try next:
  echo hello > {root}/etc-note        # change the root
  panther diff --lab {dir}            # what the next boot would erase
  panther lab reboot {dir}            # roll back exactly as the initrd does
  panther roots list --lab {dir}      # the previous root, kept and dated
  panther persist add /var/lib/app --lab {dir}   # keep a path across boots
  panther audit --lab {dir}           # the hardening of the lab tree
  panther lab status {dir} --json     # what is mounted where
  panther lab down {dir}              # unmount and detach (--purge deletes the image)
"""
