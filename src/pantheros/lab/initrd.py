"""The lab VM's kernel and initramfs: Debian's kernel, a dracut systemd initramfs, an overlay.

The initramfs is two archives, one after the other, which the kernel unpacks in order:

- the base, built by dracut once per kernel and dracut (cached): a systemd initrd that mounts a
  btrfs root, unlocks LUKS2 (with a TPM2 when one is enrolled) and carries the tools the boot
  step runs;
- the overlay, written here in a few milliseconds at every `lab boot` (newc cpio): the unit
  rendered from the NixOS module (nix/generated/initrd-units*.json) with its links, the shipped
  boot step at the store path its ExecStart names, the crypttab NixOS writes for LUKS, and the
  lab's activation (pantheros.lab.generation).

Splitting them keeps the slow build out of every boot: what changes between boots, or between
labs, is only the overlay.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from pantheros import locking, process, ui
from pantheros.errors import PantherError, ToolMissing, UsageError

# Where the repository keeps the units rendered from the NixOS module (scripts/render-initrd-units).
REPO = Path(__file__).resolve().parents[3]
UNITS_JSON = REPO / "nix" / "generated" / "initrd-units.json"
LUKS_UNITS_JSON = REPO / "nix" / "generated" / "initrd-units-luks.json"
# The boot tests' modules, plus LUKS2 (crypt, dm) and the TPM2 libraries systemd-cryptsetup loads;
# without dracut-systemd: systemd's own generators read root= and the crypttab, and dracut's shell
# hooks (seconds each under TCG) are not run. What a failed boot does is the overlay's (below).
DRACUT_MODULES = (
    "systemd systemd-initrd udev-rules base rootfs-block fs-lib btrfs bash crypt dm tpm2-tss"
)
# The boot step's tools (tests/boot/initrd.py says why each), and what the lab's activation runs.
TOOLS = (
    "env bash btrfs mount umount flock sort mktemp readlink sleep mkdir rmdir mv"
    " cp ln chmod chown cat tr"
)
DRIVERS = "virtio_blk virtio_pci dm_crypt"
BUILD_TIMEOUT = 900


def boot_cache() -> Path:
    """$PANTHER_BOOT_CACHE (default ~/.cache/pantheros/boot): what booting under QEMU builds."""
    base = os.environ.get("PANTHER_BOOT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pantheros", "boot"
    )
    return Path(base)


def cache_dir() -> Path:
    """boot_cache()/lab: what the lab VM builds."""
    return boot_cache() / "lab"


def dracut_argv(kernel_version: str, modules: str, drivers: str, tmpdir: str) -> list[str]:
    """dracut's argv for a generic (not host-only) zstd initramfs of these dracut modules and
    kernel drivers; the caller adds what to install and include, then the output."""
    argv = ["dracut", "--quiet", "--force", "--no-hostonly", "--no-early-microcode"]
    argv += ["--compress=zstd", "--kver", kernel_version, "--modules", modules]
    return [*argv, "--add-drivers", drivers, "--tmpdir", tmpdir]


def _version_key(version: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", version)]


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path

    @property
    def modules(self) -> Path:
        return Path("/lib/modules") / self.version


def find_kernel() -> Kernel:
    """The newest installed Debian cloud kernel that has its modules (the lab boots it)."""
    found = [
        Kernel(image.name.removeprefix("vmlinuz-"), image)
        for image in Path("/boot").glob("vmlinuz-*-cloud-amd64")
        if (Path("/lib/modules") / image.name.removeprefix("vmlinuz-") / "modules.dep").exists()
    ]
    if not found:
        raise ToolMissing(
            "no Debian cloud kernel with its modules in /boot (install linux-image-cloud-amd64: "
            "bash scripts/setup --vm)"
        )
    return max(found, key=lambda k: _version_key(k.version))


def dracut_version() -> str:
    # dracut 059 prints its version and exits 1.
    out = process.run(["dracut", "--version"], check=False)
    if not out.stdout.startswith("dracut "):
        raise PantherError(f"dracut --version: {out.stderr.strip()}")
    return out.stdout.strip()


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def base_initramfs(kernel: Kernel) -> Path:
    """The dracut part, built once per kernel, dracut and module list (cached)."""
    key = _digest(
        kernel.version.encode(),
        kernel.vmlinuz.read_bytes(),
        dracut_version().encode(),
        DRACUT_MODULES.encode(),
        TOOLS.encode(),
        DRIVERS.encode(),
    )
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"initrd-base-{kernel.version}-{key}.img"
    with locking.exclusive(directory / ".initrd.lock", what="the lab's initramfs cache"):
        if path.exists():
            return path
        ui.progress(f"building the initramfs with dracut (kernel {kernel.version}; once)")
        with tempfile.TemporaryDirectory(prefix="initrd-", dir=directory) as work:
            partial = Path(work) / "initrd.img"
            argv = dracut_argv(kernel.version, DRACUT_MODULES, DRIVERS, work)
            argv += ["--install", TOOLS, str(partial)]
            process.run(argv, check=True)
            os.replace(partial, path)
        for old in directory.glob("initrd-base-*.img"):
            if old != path:
                old.unlink()
    return path


# --- the overlay: a newc cpio written here ---------------------------------------------------


@dataclass
class Overlay:
    """Files for the initrd's /, by path: (mode, bytes) for files, a target for symlinks."""

    files: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, data: bytes | str, mode: int = 0o644) -> None:
        self.files[path.strip("/")] = (mode, data.encode() if isinstance(data, str) else data)

    def link(self, path: str, target: str) -> None:
        self.links[path.strip("/")] = target

    def directories(self) -> list[str]:
        found: set[str] = set()
        for path in [*self.files, *self.links]:
            parts = path.split("/")[:-1]
            found.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return sorted(found, key=lambda d: (d.count("/"), d))

    def cpio(self) -> bytes:
        """The overlay as a newc archive; parents come before what they hold (the kernel does
        not make missing directories)."""
        out = bytearray()
        ino = 1

        def entry(name: str, mode: int, data: bytes) -> None:
            nonlocal ino
            encoded = name.encode() + b"\0"
            fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
            out.extend(b"070701" + b"".join(b"%08x" % value for value in fields) + encoded)
            out.extend(b"\0" * (-len(out) % 4))
            out.extend(data)
            out.extend(b"\0" * (-len(out) % 4))
            ino += 1

        for directory in self.directories():
            entry(directory, stat.S_IFDIR | 0o755, b"")
        for path, (mode, data) in sorted(self.files.items()):
            entry(path, stat.S_IFREG | mode, data)
        for path, target in sorted(self.links.items()):
            entry(path, stat.S_IFLNK | 0o777, target.encode())
        entry("TRAILER!!!", 0, b"")
        return bytes(out)


# The initrd's journal on the console (the boot step's lines are the lab's record of a boot
# that stops there); stage 2 reads its own journald.conf, so this ends at the switch to the root.
JOURNAL_TO_CONSOLE = "[Journal]\nForwardToConsole=yes\n"
# A boot that fails in the initrd (fail-closed) powers the VM off, which `lab boot` sees and
# reports with the step's words; NixOS's initrd opens a shell only with emergencyAccess. The
# initrd's emergency.target and OnFailure= name this unit; without dracut-systemd it is ours.
EMERGENCY_POWEROFF = """\
[Unit]
Description=PantherOS lab: the boot failed in the initrd; power off
DefaultDependencies=no

[Service]
Type=oneshot
# At once (the failing boot's jobs would refuse a clean poweroff); systemctl syncs first, and
# nothing of the disk is mounted once the step failed.
ExecStart=/usr/bin/systemctl --force --force poweroff
"""


def add_lab_basics(overlay: Overlay) -> None:
    overlay.add("etc/systemd/journald.conf.d/pantheros-lab.conf", JOURNAL_TO_CONSOLE)
    overlay.add("etc/systemd/system/emergency.service", EMERGENCY_POWEROFF)


def write_initramfs(base: Path, overlay: Overlay, output: Path) -> None:
    """base, padded to 4 bytes (where the kernel looks for the next archive), then the overlay."""
    partial = output.with_name(output.name + ".partial")
    with open(base, "rb") as src, open(partial, "wb") as dst:
        size = 0
        while chunk := src.read(1 << 20):
            dst.write(chunk)
            size += len(chunk)
        dst.write(b"\0" * (-size % 4))
        dst.write(overlay.cpio())
    os.replace(partial, output)


# --- the boot step's unit, as the NixOS module renders it ------------------------------------


def units_document(luks: bool) -> dict[str, object]:
    path = LUKS_UNITS_JSON if luks else UNITS_JSON
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise UsageError(
            f"{path} is missing: `panther lab boot` runs from a PantherOS checkout (it boots "
            "the initrd unit rendered from the NixOS module, kept there)"
        ) from None


def unit_exec_start(luks: bool, policy: str) -> list[str]:
    """The words of the rendered unit's ExecStart (what the lab's manifest must agree with)."""
    rendered = units_document(luks)[policy]
    assert isinstance(rendered, dict)
    text = str(rendered["units"]["pantheros-rollback.service"])
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def add_units(overlay: Overlay, luks: bool, policy: str, step_dir: Path) -> None:
    """The unit texts rendered for policy and their `.wants`/`.requires` links, and the boot step
    (script and helper from step_dir) at the store path the unit's ExecStart names."""
    document = units_document(luks)
    rendered = document[policy]
    assert isinstance(rendered, dict)
    system = "etc/systemd/system"
    for name, text in rendered["units"].items():
        overlay.add(f"{system}/{name}", text)
    for kind in ("wants", "requires"):
        for target, names in rendered[kind].items():
            for name in names:
                overlay.link(f"{system}/{target}.{kind}/{name}", f"../{name}")
    store = str(document["bootstep"])
    if not store.startswith("/nix/store/"):
        raise PantherError(f"the rendered bootstep is not a store path: {store!r}")
    for name in ("pantheros-rollback", "pantheros-btrfs"):
        overlay.add(f"{store}/bin/{name}", (step_dir / name).read_bytes(), 0o555)
