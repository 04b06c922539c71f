"""Where panther keeps its runtime state, and the private top-level mount every tool uses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pantheros.errors import NotRoot
from pantheros.storage import blockdev


def state_dir() -> Path:
    """Runtime state (mount records, private mounts): /run/pantheros unless overridden."""
    return Path(os.environ.get("PANTHER_STATE_DIR", "/run/pantheros"))


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise NotRoot(f"{action} needs root (run it with sudo)")


@contextmanager
def top_level_mount(device: str, *, readonly: bool = False) -> Iterator[Path]:
    """Mount device's btrfs top level (subvolid=5) at a private directory for the duration.

    The directory is removed with rmdir only: if unmounting failed it is left, never emptied.
    noatime: looking at a fresh root must not change it.
    """
    base = state_dir() / "top"
    base.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="top-", dir=base))
    options = ["subvolid=5", "noatime"] + (["ro"] if readonly else [])
    try:
        blockdev.mount(device, directory, options, fstype="btrfs")
        try:
            yield directory
        finally:
            blockdev.unmount(directory)
    finally:
        directory.rmdir()
