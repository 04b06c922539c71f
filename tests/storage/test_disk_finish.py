"""`panther disk finish` (disko's hook) and the first boot's directories, on real btrfs.

finish completes a btrfs that another tool made: the subvolumes, the mount points in the root,
the read-only blank, the old-roots directory and the directories the first boot needs, each
only when missing; run again, it changes nothing. `panther disk format` makes the same.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pantheros import btrfs
from pantheros import manifest as manifests
from tests.helpers import attach_partitioned, one_line_error, panther

pytestmark = pytest.mark.root

FIRST_BOOT = {
    "directories": [
        {"path": "/persist/var/lib/nixos", "user": "root", "group": "root", "mode": "0755",
         "uid": 0, "gid": 0},
        {"path": "/persist/secrets/passwords", "user": "root", "group": "root", "mode": "0700",
         "uid": 0, "gid": 0},
        # A fixed uid: chowned at install; an allocated one (null): left to the first boot.
        {"path": "/persist/var/lib/acme", "user": "acme", "group": "acme", "mode": "0750",
         "uid": 60, "gid": 60},
        {"path": "/persist/var/lib/app", "user": "app", "group": "app", "mode": "0710",
         "uid": None, "gid": None},
    ],
    "files": [
        {"path": "/persist/secrets/passwords/alice", "user": "root", "group": "root",
         "mode": "0600", "uid": 0, "gid": 0, "required": True, "what": "a password hash"},
    ],
}  # fmt: skip


@pytest.fixture
def manifest_path(workdir: Path) -> Path:
    doc = json.loads(manifests.bundled_path("lab").read_text())
    doc["first_boot"] = FIRST_BOOT
    path = workdir / "manifest.json"
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def btrfs_device(workdir: Path, image: Callable[..., Path]) -> Iterator[str]:
    """A loop device holding an empty btrfs labelled as the lab manifest's (as disko makes it)."""
    img = image(512)
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(img)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mkfs.btrfs", "-q", "--label", "pantheros", dev], check=True)
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def look(dev: str, top: Path) -> dict[str, Any]:
    """Everything finish may touch, with the numbers that change when anything is written."""
    subprocess.run(["mount", "-o", "ro,subvolid=5", dev, str(top)], check=True)
    try:
        subvolumes = {
            ref.path: (info.readonly, info.uuid, info.otransid, info.ctransid, info.generation)
            for ref in btrfs.list_subvolumes(top)
            for info in [btrfs.subvolume_info(top / ref.path)]
        }
        entries = {}
        for directory, dirs, files in os.walk(top):
            for name in dirs + files:
                path = Path(directory, name)
                st = path.lstat()
                entries[str(path.relative_to(top))] = (
                    oct(stat.S_IMODE(st.st_mode)),
                    st.st_uid,
                    st.st_gid,
                    st.st_ctime_ns,
                )
        return {"subvolumes": subvolumes, "entries": entries}
    finally:
        subprocess.run(["umount", str(top)], check=True)


def test_finish_completes_the_layout_and_a_second_run_changes_nothing(
    workdir: Path, manifest_path: Path, btrfs_device: str
) -> None:
    first = panther("disk", "finish", "--manifest", str(manifest_path), btrfs_device)
    assert first.returncode == 0, first.stderr
    top = workdir / "top"
    top.mkdir()
    made = look(btrfs_device, top)
    subvolumes = made["subvolumes"]
    assert set(subvolumes) == {"root", "nix", "persist", "log", "home", "root-blank"}
    assert subvolumes["root-blank"][0] is True
    assert subvolumes["root"][0] is False
    entries = made["entries"]
    assert entries["old_roots"][0] == "0o755"
    for point in ("nix", "persist", "var/log", "home", "boot"):
        assert f"root/{point}" in entries
        assert f"root-blank/{point}" in entries
    assert entries["persist/var/lib/nixos"][:3] == ("0o755", 0, 0)
    assert entries["persist/var/lib"][:3] == ("0o755", 0, 0)
    assert entries["persist/secrets/passwords"][:3] == ("0o700", 0, 0)
    assert entries["persist/var/lib/acme"][:3] == ("0o750", 60, 60)
    assert entries["persist/var/lib/app"][:3] == ("0o710", 0, 0)
    # Files are the installer's to stage, never made here.
    assert "persist/secrets/passwords/alice" not in entries

    # The hook's way: the manifest on stdin.
    again = panther(
        "disk", "finish", "--manifest", "-", btrfs_device, input=manifest_path.read_text()
    )
    assert again.returncode == 0, again.stderr
    assert look(btrfs_device, top) == made


def test_finish_completes_what_an_interrupted_run_left(
    workdir: Path, manifest_path: Path, btrfs_device: str
) -> None:
    """A run killed after the subvolumes: the next one makes the rest, keeps what is there."""
    top = workdir / "top"
    top.mkdir()
    subprocess.run(["mount", "-o", "subvolid=5", btrfs_device, str(top)], check=True)
    try:
        btrfs.create_subvolume(top / "root")
        (top / "root" / "etc").mkdir()
        btrfs.sync(top)
    finally:
        subprocess.run(["umount", str(top)], check=True)
    proc = panther("disk", "finish", "--manifest", str(manifest_path), btrfs_device)
    assert proc.returncode == 0, proc.stderr
    entries = look(btrfs_device, top)["entries"]
    assert "root/etc" in entries
    assert "root-blank/etc" in entries


def test_finish_refuses_a_device_that_is_not_the_layouts_btrfs(
    workdir: Path, manifest_path: Path, image: Callable[..., Path]
) -> None:
    img = image(300, "other.img")
    dev = subprocess.run(
        ["losetup", "--find", "--show", str(img)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        subprocess.run(["mkfs.btrfs", "-q", "--label", "someone-else", dev], check=True)
        proc = panther("disk", "finish", "--manifest", str(manifest_path), dev)
        line = one_line_error(proc)
        assert "holds btrfs labelled 'someone-else', not the layout's btrfs" in line
        proc = panther("disk", "finish", "--manifest", str(manifest_path), str(img))
        assert "is not a block device" in one_line_error(proc)
        top = workdir / "top"
        top.mkdir()
        subprocess.run(["mount", "-o", "ro", dev, str(top)], check=True)
        try:
            assert os.listdir(top) == []
        finally:
            subprocess.run(["umount", str(top)], check=True)
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


@pytest.mark.parametrize("what", ["writable subvolume", "directory"])
def test_finish_does_not_take_a_blank_it_cannot_trust(
    workdir: Path, manifest_path: Path, btrfs_device: str, what: str
) -> None:
    top = workdir / "top"
    top.mkdir()
    subprocess.run(["mount", "-o", "subvolid=5", btrfs_device, str(top)], check=True)
    try:
        if what == "directory":
            (top / "root-blank").mkdir()
        else:
            btrfs.create_subvolume(top / "root-blank")
        btrfs.sync(top)
    finally:
        subprocess.run(["umount", str(top)], check=True)
    proc = panther("disk", "finish", "--manifest", str(manifest_path), btrfs_device)
    assert "root-blank exists on" in one_line_error(proc)
    assert "not a read-only subvolume" in proc.stderr
    assert set(look(btrfs_device, top)["entries"]) == {"root-blank"}


def test_a_symlink_on_a_first_boot_path_is_refused(
    workdir: Path, manifest_path: Path, btrfs_device: str
) -> None:
    """persist/var planted as a link out of the machine: nothing is made where it points."""
    outside = workdir / "outside"
    outside.mkdir()
    top = workdir / "top"
    top.mkdir()
    subprocess.run(["mount", "-o", "subvolid=5", btrfs_device, str(top)], check=True)
    try:
        btrfs.create_subvolume(top / "persist")
        (top / "persist" / "var").symlink_to(outside)
        btrfs.sync(top)
    finally:
        subprocess.run(["umount", str(top)], check=True)
    proc = panther("disk", "finish", "--manifest", str(manifest_path), btrfs_device)
    assert "/persist/var/lib/nixos: var is not a directory" in one_line_error(proc)
    assert os.listdir(outside) == []


def test_format_makes_the_first_boot_directories(
    workdir: Path, manifest_path: Path, image: Callable[..., Path]
) -> None:
    img = image(512)
    proc = panther("disk", "format", "--manifest", str(manifest_path), str(img))
    assert proc.returncode == 0, proc.stderr
    plan = panther("disk", "plan", "--manifest", str(manifest_path), str(img))
    assert "install -d <top>/persist/var/lib/nixos" in plan.stdout
    dev = attach_partitioned(img)
    try:
        top = workdir / "top"
        top.mkdir()
        entries = look(f"{dev}p2", top)["entries"]
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
    assert entries["persist/secrets/passwords"][:3] == ("0o700", 0, 0)
    assert entries["persist/var/lib/acme"][:3] == ("0o750", 60, 60)
