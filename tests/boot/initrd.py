"""A systemd initramfs built with dracut, holding the boot step as NixOS installs it.

The overlay carries the unit texts rendered from the NixOS module (nix/generated/initrd-units.json),
their `.wants`/`.requires` links, and the boot step (script and compiled helper) at
`<bootstep>/bin/`, the path the unit's ExecStart names. The boot tests and bench/initrd_size.py
both build through this module, so what is measured is what boots.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pantheros.impermanence import bootstep
from pantheros.lab import initrd as lab_initrd
from tests import bootstep_variant

REPO = Path(__file__).resolve().parents[2]
UNITS_JSON = REPO / "nix" / "generated" / "initrd-units.json"
POLICIES = ("boot-dirty", "fail-closed")
# What dracut puts in a systemd initrd that mounts a btrfs root: the recipe.
DRACUT_MODULES = (
    "systemd systemd-initrd dracut-systemd udev-rules base rootfs-block fs-lib btrfs bash"
)
# The boot step's tools that dracut's modules above do not all bring (btrfs and mount do come
# with them; naming them again is harmless and states the need). env: the script's
# `#!/usr/bin/env bash`, which a Nix build rewrites to the store's bash. The list is the one
# at the head of the script: what NixOS's systemd initrd has for btrfs, nothing more.
STEP_TOOLS = "env bash btrfs mount umount mktemp sleep mkdir rmdir mv"
# The QEMU disk is virtio; Debian's cloud kernel has its driver as a module.
DRIVERS = "virtio_blk virtio_pci"
BUILD_TIMEOUT = 600


def kernel() -> tuple[str, Path] | None:
    """(version, vmlinuz) of the newest installed kernel that has its modules, or None."""
    found = []
    for image in Path("/boot").glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / version / "modules.dep").exists():
            found.append((version, image))
    if not found:
        return None
    return max(found, key=lambda item: [int(n) for n in re.findall(r"\d+", item[0])])


dracut_version = lab_initrd.dracut_version


@dataclass(frozen=True)
class Overlay:
    """What the boot step adds to the initrd for one fail policy. With `hooks`, the step is the
    test variant (tests/bootstep_variant.py: the shipped script with the hang hook injected),
    for the power-cut test; otherwise it is the shipped script."""

    policy: str
    units_json: Path = UNITS_JSON
    hooks: bool = False

    def step_dir(self) -> Path:
        return bootstep_variant.directory() if self.hooks else bootstep.artifact_dir()

    def document(self) -> dict[str, object]:
        return dict(json.loads(self.units_json.read_text()))

    def bootstep_path(self) -> str:
        path = str(self.document()["bootstep"])
        if not path.startswith("/nix/store/"):
            raise ValueError(f"bootstep is not a store path: {path!r}")
        return path

    def write(self, directory: Path) -> None:
        """Lay the overlay out under directory, as the initrd's / will hold it."""
        doc = self.document()
        rendered = doc[self.policy]
        assert isinstance(rendered, dict)
        system = directory / "etc" / "systemd" / "system"
        system.mkdir(parents=True)
        for name, text in rendered["units"].items():
            (system / name).write_text(text)
        for kind in ("wants", "requires"):
            for target, names in rendered[kind].items():
                links = system / f"{target}.{kind}"
                links.mkdir(exist_ok=True)
                for name in names:
                    (links / name).symlink_to(f"../{name}")
        bin_dir = directory / self.bootstep_path().lstrip("/") / "bin"
        bin_dir.mkdir(parents=True)
        source = self.step_dir()
        for name in (bootstep.SCRIPT, bootstep.HELPER):
            shutil.copyfile(source / name, bin_dir / name)
            # The store's mode: executable, read-only.
            (bin_dir / name).chmod(0o555)

    def key_material(self) -> bytes:
        """Every input of the overlay: the unit JSON, the step's source and what was built."""
        built = self.step_dir()
        source = bootstep.source_dir() / bootstep.HELPER_SOURCE
        digest = hashlib.sha256(f"{self.policy} hooks={self.hooks}".encode())
        digest.update(self.units_json.read_bytes())
        digest.update(source.read_bytes())
        for name in (bootstep.SCRIPT, bootstep.HELPER):
            digest.update((built / name).read_bytes())
        return digest.hexdigest().encode()


def build(output: Path, overlay: Overlay | None, kernel_version: str) -> None:
    """Build a zstd-compressed initramfs at output. Without overlay: the baseline, a systemd
    initrd that mounts a btrfs root; with it, that plus the boot step and the tools it needs."""
    with tempfile.TemporaryDirectory(prefix="initrd-") as work:
        argv = lab_initrd.dracut_argv(kernel_version, DRACUT_MODULES, DRIVERS, work)
        if overlay is not None:
            tree = Path(work) / "overlay"
            overlay.write(tree)
            argv += ["--include", str(tree), "/", "--install", STEP_TOOLS]
        partial = output.with_name(output.name + ".partial")
        proc = subprocess.run(
            [*argv, str(partial)], capture_output=True, text=True, timeout=BUILD_TIMEOUT
        )
        if proc.returncode != 0:
            raise RuntimeError(f"dracut failed ({proc.returncode}):\n{proc.stderr}")
        os.replace(partial, output)


cache_dir = lab_initrd.boot_cache


def cached(overlay: Overlay | None) -> tuple[Path, Path]:
    """(initramfs, vmlinuz): built once per set of inputs, then reused from the cache."""
    found = kernel()
    if found is None:
        raise RuntimeError("no kernel with modules under /boot")
    version, vmlinuz = found
    digest = hashlib.sha256()
    for part in (
        version.encode(),
        vmlinuz.read_bytes(),
        dracut_version().encode(),
        DRACUT_MODULES.encode(),
        STEP_TOOLS.encode(),
        DRIVERS.encode(),
        Path(__file__).read_bytes(),
        overlay.key_material() if overlay else b"baseline",
    ):
        digest.update(hashlib.sha256(part).digest())
    kind = (overlay.policy + ("-hooks" if overlay.hooks else "")) if overlay else "baseline"
    name = f"{kind}-{digest.hexdigest()[:20]}.img"
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if not path.exists():
        build(path, overlay, version)
    return path, vmlinuz
