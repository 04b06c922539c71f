"""LUKS2 under the btrfs partition: how the key is given, opening and closing the mapping."""

from __future__ import annotations

import os
from dataclasses import dataclass

from pantheros import process, ui
from pantheros.errors import Refused, UsageError
from pantheros.manifest.models import mapper_path
from pantheros.storage import blockdev


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


def device_mapper_available() -> bool:
    """Whether the kernel has device-mapper (a /dev/mapper/control node alone proves nothing)."""
    try:
        with open("/proc/misc", encoding="ascii") as f:
            return any(line.split()[-1] == "device-mapper" for line in f if line.strip())
    except OSError:
        return False


def is_open(name: str) -> bool:
    return os.path.exists(mapper_path(name))


def dm_name(name: str) -> str:
    """The kernel's name (dm-N) of the open mapping called name."""
    return os.path.basename(os.path.realpath(mapper_path(name)))


def open_mapping(
    device: str, name: str, secret: Secret | None, discards: bool, *, persistent: bool = False
) -> None:
    """Open device as the mapping name; one already open is used only if it sits on device.

    The name is the manifest's, and the host may use the same one for its own disk: trusting it
    would mount, or format, the host's volume. persistent: also record the flags (discards) in
    the LUKS2 header, as format does (and disko, D132).
    """
    if is_open(name):
        if dm_name(name) not in blockdev.holders(device):
            raise Refused(
                f"{mapper_path(name)} is open, but not on {device}: it is another volume "
                "(close it, or give the layout another luks.name); nothing was changed"
            )
        return
    if secret is None:
        raise UsageError("the layout uses LUKS: give --key-file FILE or --passphrase-stdin")
    argv = ["cryptsetup", "open", *secret.args()]
    if discards:
        argv.append("--allow-discards")
        if persistent:
            argv.append("--persistent")
    process.run([*argv, device, name], check=True, input=secret.stdin())


def close_mapping(name: str, disk: str) -> None:
    """Close the mapping called name if it is open on disk (a partition of it); one by that name
    on another device is not ours to close, and is left with a warning."""
    if not is_open(name):
        return
    if os.path.realpath(mapper_path(name)) not in blockdev.stack(disk):
        ui.warn(f"{mapper_path(name)} is not on {disk}: left open")
        return
    process.run(["cryptsetup", "close", name], check=True)
