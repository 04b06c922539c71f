"""What the lab commands report: one typed value each, shown as text or as JSON (`--json`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.manifest import Manifest
from pantheros.storage.record import MountKind, RecordedMount


def _path(value: Path | None) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class VMStatus:
    """The lab's VM (`panther lab boot`): whether QEMU runs, and how to reach it."""

    running: bool
    pid: int | None = None
    ssh_port: int | None = None
    console_log: Path | None = None
    tpm: bool = False
    level: str | None = None
    ssh_user: str | None = None
    ssh_key: Path | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "pid": self.pid,
            "ssh_port": self.ssh_port,
            "console_log": _path(self.console_log),
            "tpm": self.tpm,
            "level": self.level,
        }

    def ssh_json(self) -> dict[str, Any] | None:
        """How to reach the running VM over SSH (what `panther fleet` needs), else None."""
        if not self.running or self.ssh_port is None or self.ssh_key is None:
            return None
        return {
            "host": "127.0.0.1",
            "port": self.ssh_port,
            "user": self.ssh_user,
            "key": str(self.ssh_key),
        }

    def text(self) -> str:
        if not self.running:
            return "not running"
        return f"running (pid {self.pid}, SSH on 127.0.0.1:{self.ssh_port})"


@dataclass(frozen=True)
class LabStatus:
    """`panther lab status`: the lab's image, device and manifest, and what is mounted where."""

    dir: Path
    up: bool
    image: Path | None  # None: there is no lab here
    image_bytes: int | None
    device: str | None
    manifest: Path | None
    host: str | None
    root: Path
    mounts: tuple[RecordedMount, ...]  # recorded and in place, in mount order
    vm: VMStatus = VMStatus(running=False)

    def of_kind(self, kind: MountKind) -> dict[str, str | None]:
        return {m.path: m.of for m in self.mounts if m.kind is kind}

    def as_json(self) -> dict[str, Any]:
        """The keys of docs/cli.md: `mounts` maps mount point -> subvolume, `binds` maps mount
        point -> the persistent path bound there, `esp` is the ESP's mount point (or null)."""
        return {
            "dir": str(self.dir),
            "up": self.up,
            "image": _path(self.image),
            "image_bytes": self.image_bytes,
            "device": self.device,
            "manifest": _path(self.manifest),
            "host": self.host,
            "root": str(self.root),
            "mounts": self.of_kind(MountKind.SUBVOLUME),
            "binds": self.of_kind(MountKind.BIND),
            "esp": next(iter(self.of_kind(MountKind.ESP)), None),
            "vm": self.vm.as_json(),
            "ssh": self.vm.ssh_json(),
        }

    def text(self) -> list[str]:
        """The lines of `lab status`, each name escaped (ui.printable): one per line."""
        if self.image is None:
            lines = [f"no lab at {self.dir} (panther lab up {self.dir})"]
        else:
            state = "booted" if self.vm.running else "up" if self.up else "down"
            lines = [
                f"lab      {self.dir} ({state})",
                f"image    {self.image}",
                f"device   {self.device or '-'}",
                f"manifest {self.manifest}",
                f"vm       {self.vm.text()}",
                *(f"  {m.path}  <- {m.describe()}" for m in self.mounts),
            ]
        return [ui.printable(line) for line in lines]


@dataclass(frozen=True)
class LabUp:
    """`panther lab up`: where the lab's root is, and what this run had to do."""

    dir: Path
    root: Path
    already_up: bool
    laid_out: bool  # a new image was made and laid out
    manifest: Manifest  # what the lab is laid out with, as read under the lab's lock

    def as_json(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir),
            "root": str(self.root),
            "already_up": self.already_up,
            "laid_out": self.laid_out,
        }


@dataclass(frozen=True)
class LabDown:
    """`panther lab down`: whether anything was up, and whether the lab was purged."""

    dir: Path
    was_up: bool
    purged: bool

    def as_json(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "was_up": self.was_up, "purged": self.purged}
