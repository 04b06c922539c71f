"""The lab image from outside: its GPT, its EFI system partition (filled with mtools: this host
may have no vfat driver, and a loop device may get no partition devices), the LUKS2 header."""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pantheros import process
from pantheros.errors import PantherError

SECTOR = 512
SYSTEMD_BOOT = Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
LUKS2_MAGIC = b"LUKS\xba\xbe"


@dataclass(frozen=True)
class Partition:
    number: int
    name: str
    offset: int  # bytes
    size: int  # bytes


def partitions(image: Path) -> list[Partition]:
    """The GPT partitions of image (primary header and table), read from the file."""
    with open(image, "rb") as f:
        f.seek(SECTOR)
        header = f.read(92)
        if header[:8] != b"EFI PART":
            raise PantherError(f"{image} has no GPT (is it a lab image?)")
        entries_lba, count, size = struct.unpack_from("<QII", header, 72)
        f.seek(entries_lba * SECTOR)
        table = f.read(count * size)
    found = []
    for number in range(count):
        entry = table[number * size : (number + 1) * size]
        if entry[:16] == bytes(16):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le").split("\0", 1)[0]
        found.append(Partition(number + 1, name, first * SECTOR, (last - first + 1) * SECTOR))
    return found


def partition(image: Path, name: str) -> Partition:
    for part in partitions(image):
        if part.name == name:
            return part
    raise PantherError(f"{image} has no partition named {name!r}")


def luks2_tokens(image: Path, part: Partition) -> list[str] | None:
    """The token types in the LUKS2 header at part (None: no LUKS2 header there)."""
    with open(image, "rb") as f:
        f.seek(part.offset)
        binary = f.read(4096)
        if binary[:6] != LUKS2_MAGIC or struct.unpack_from(">H", binary, 6)[0] != 2:
            return None
        (header_size,) = struct.unpack_from(">Q", binary, 8)
        text = f.read(max(0, header_size - 4096)).split(b"\0", 1)[0]
    try:
        metadata = json.loads(text)
    except ValueError:
        raise PantherError(f"the LUKS2 header in {image} does not parse") from None
    return [str(token.get("type")) for token in metadata.get("tokens", {}).values()]


def write_esp(image: Path, esp: Partition, kernel: Path, initramfs: Path, cmdline: str) -> None:
    """systemd-boot at the removable-media path (no firmware entry needed), one loader entry
    that boots kernel and initramfs with cmdline, and no menu delay."""
    if not SYSTEMD_BOOT.exists():
        raise PantherError(f"{SYSTEMD_BOOT} is missing (install systemd-boot-efi)")
    with tempfile.TemporaryDirectory(prefix="esp-") as work:
        tree = Path(work)
        (tree / "EFI" / "BOOT").mkdir(parents=True)
        shutil.copyfile(SYSTEMD_BOOT, tree / "EFI" / "BOOT" / "BOOTX64.EFI")
        (tree / "loader" / "entries").mkdir(parents=True)
        (tree / "loader" / "loader.conf").write_text("default pantheros-lab.conf\ntimeout 0\n")
        (tree / "loader" / "entries" / "pantheros-lab.conf").write_text(
            "title PantherOS lab\n"
            "linux /pantheros/vmlinuz\n"
            "initrd /pantheros/initrd.img\n"
            f"options {cmdline}\n"
        )
        (tree / "pantheros").mkdir()
        shutil.copyfile(kernel, tree / "pantheros" / "vmlinuz")
        shutil.copyfile(initramfs, tree / "pantheros" / "initrd.img")
        # The ESP is the machine's /boot: where the audit reads the kernel's configuration.
        config = kernel.with_name(kernel.name.replace("vmlinuz-", "config-", 1))
        if config.exists():
            shutil.copyfile(config, tree / config.name)
        target = f"{image}@@{esp.offset}"
        sources = [str(path) for path in sorted(tree.iterdir())]
        process.run(["mcopy", "-i", target, "-s", "-o", "-Q", *sources, "::/"], check=True)
