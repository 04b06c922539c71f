"""`panther disk` on real loop devices, checked from the kernel's point of view."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros.storage import blockdev, layout, luks
from tests.helpers import one_line_error, panther, sha256

pytestmark = pytest.mark.root

LAB = str(manifests.bundled_path("lab"))


def run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def mountinfo_under(base: Path) -> dict[str, tuple[str, str]]:
    """mount point -> (btrfs root path, all options) for mounts under base."""
    found = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if fields[4].startswith(str(base)):
                found[fields[4]] = (fields[3], fields[5] + "," + right.split()[2])
    return found


def format_and_mount(img: Path, mnt: Path) -> None:
    fmt = panther("disk", "format", "--manifest", LAB, str(img))
    assert fmt.returncode == 0, fmt.stderr
    mount = panther("disk", "mount", "--manifest", LAB, str(img), str(mnt))
    assert mount.returncode == 0, mount.stderr


@pytest.mark.scenario("storage-layout: Layout as built")
def test_format_and_mount_builds_the_layout(image: Callable[..., Path], workdir: Path) -> None:
    img = image(512)
    mnt = workdir / "mnt"
    format_and_mount(img, mnt)
    mounts = mountinfo_under(mnt)
    expected = {
        "": "/root",
        "/nix": "/nix",
        "/persist": "/persist",
        "/var/log": "/log",
        "/home": "/home",
    }
    assert {k.removeprefix(str(mnt)): v[0] for k, v in mounts.items()} == expected
    for root, options in mounts.values():
        assert "noatime" in options.split(",")
        assert "compress=zstd:3" in options.split(",") or "compress=zstd" in options.split(",")
        assert f"subvol={root}" in options.split(",")

    state = json.loads(next((workdir / "state" / "mounts").iterdir()).read_text())
    dev = state["loop"]
    listing = run("btrfs", "subvolume", "list", "-a", str(mnt))
    names = {line.split(" path ")[1].removeprefix("<FS_TREE>/") for line in listing.splitlines()}
    assert names == {"root", "nix", "persist", "log", "home", "root-blank"}
    assert run("blkid", "-s", "LABEL", "-o", "value", f"{dev}p2").strip() == "pantheros"
    assert (
        run("blkid", "-p", "-s", "PART_ENTRY_NAME", "-o", "value", f"{dev}p2").strip()
        == "pantheros"
    )
    assert run("blkid", "-s", "TYPE", "-o", "value", f"{dev}p1").strip() == "vfat"
    assert (
        run("blkid", "-p", "-s", "PART_ENTRY_TYPE", "-o", "value", f"{dev}p1").strip()
        == "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
    )

    top = workdir / "top"
    top.mkdir()
    subprocess.run(["mount", "-o", "subvolid=5,ro", f"{dev}p2", str(top)], check=True)
    try:
        assert (
            run("btrfs", "property", "get", "-ts", str(top / "root-blank"), "ro").strip()
            == "ro=true"
        )
        blank = sorted(
            str(p.relative_to(top / "root-blank")) for p in (top / "root-blank").rglob("*")
        )
        # The blank root holds only the mount points, so every fresh root has them.
        assert blank == ["boot", "home", "nix", "persist", "var", "var/log"]
        assert all(
            not any((top / "root-blank" / d).iterdir()) for d in ["nix", "persist", "var/log"]
        )
        assert (top / "old_roots").is_dir()
    finally:
        subprocess.run(["umount", str(top)], check=True)


def test_mount_twice_is_idempotent_and_unmount_undoes_it(
    image: Callable[..., Path], workdir: Path
) -> None:
    img = image(512)
    mnt = workdir / "mnt"
    format_and_mount(img, mnt)
    before = mountinfo_under(mnt)
    again = panther("disk", "mount", "--manifest", LAB, str(img), str(mnt))
    assert again.returncode == 0, again.stderr
    assert mountinfo_under(mnt) == before
    loops = run("losetup", "--associated", str(img))
    assert loops.count("\n") == 1
    done = panther("disk", "unmount", str(mnt))
    assert done.returncode == 0, done.stderr
    assert mountinfo_under(mnt) == {}
    assert run("losetup", "--associated", str(img)) == ""
    assert one_line_error(panther("disk", "unmount", str(mnt))).endswith(
        f"nothing was mounted by panther at {mnt}"
    )


@pytest.mark.scenario("state-safety: Foreign mounts are left alone")
def test_unmount_leaves_foreign_mounts_alone(image: Callable[..., Path], workdir: Path) -> None:
    img = image(512)
    mnt = workdir / "mnt"
    format_and_mount(img, mnt)
    foreign = mnt / "home" / "foreign"
    foreign.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "none", str(foreign)], check=True)
    try:
        proc = panther("disk", "unmount", str(mnt))
        # The tree cannot be unmounted under a foreign mount, and the foreign mount is not touched.
        assert proc.returncode != 0
        assert str(foreign) in mountinfo_under(mnt)
    finally:
        subprocess.run(["umount", str(foreign)], check=True)
    assert panther("disk", "unmount", str(mnt)).returncode == 0


def test_plan_shows_every_step_and_changes_nothing(image: Callable[..., Path]) -> None:
    img = image(1024)
    before = sha256(img)
    proc = panther("disk", "plan", "--manifest", "workstation", str(img))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for words in [
        "losetup",
        "sgdisk --zap-all",
        "--typecode=1:ef00",
        "--typecode=2:8309",
        "mkfs.vfat -F 32 -n PANTHER-ESP",
        "cryptsetup luksFormat --type luks2",
        "cryptsetup open",
        "mkfs.btrfs --force --label pantheros",
        "subvolume create <top>/root",
        "subvolume create <top>/nix",
        "subvolume create <top>/persist",
        "subvolume create <top>/log",
        "subvolume create <top>/home",
        "snapshot -r <top>/root <top>/root-blank",
        "mkdir -p <top>/old_roots",
        "cryptsetup close cryptroot",
        "losetup --detach",
    ]:
        assert words in text, words
    assert sha256(img) == before
    as_json = json.loads(panther("disk", "plan", "-m", "workstation", "--json", str(img)).stdout)
    assert len(as_json["steps"]) == len([ln for ln in text.splitlines() if not ln.startswith("#")])


@pytest.mark.scenario("storage-layout: Target with a filesystem is refused")
def test_format_refuses_a_target_with_a_filesystem(image: Callable[..., Path]) -> None:
    img = image(512)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
    before = sha256(img)
    proc = panther("disk", "format", "--manifest", LAB, str(img))
    assert proc.returncode == 5
    assert "--yes-wipe" in one_line_error(proc)
    assert sha256(img) == before
    wiped = panther("disk", "format", "--manifest", LAB, "--yes-wipe", str(img))
    assert wiped.returncode == 0, wiped.stderr
    assert sha256(img) != before


def test_format_refuses_an_image_too_small(image: Callable[..., Path]) -> None:
    img = image(200)
    before = sha256(img)
    proc = panther("disk", "format", "--manifest", LAB, "--yes-wipe", str(img))
    assert proc.returncode == 5
    assert "the layout needs at least 322 MiB" in one_line_error(proc)
    assert sha256(img) == before


@pytest.mark.scenario("state-safety: A mounted device is not formatted")
def test_format_refuses_a_mounted_device(image: Callable[..., Path], workdir: Path) -> None:
    img = image(512)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(img)], check=True, capture_output=True)
    dev = run("losetup", "--find", "--show", str(img)).strip()
    (workdir / "m").mkdir()
    subprocess.run(["mount", "-o", "ro", dev, str(workdir / "m")], check=True)
    before = sha256(img)
    proc = panther("disk", "format", "--manifest", LAB, "--yes-wipe", dev)
    assert proc.returncode == 5
    assert f"is mounted at {workdir / 'm'}" in one_line_error(proc)
    # The image is attached elsewhere: formatting the file is refused too.
    proc = panther("disk", "format", "--manifest", LAB, "--yes-wipe", str(img))
    assert f"is attached to {dev}" in one_line_error(proc)
    subprocess.run(["umount", str(workdir / "m")], check=True)
    assert sha256(img) == before


def test_missing_target() -> None:
    proc = panther("disk", "format", "--manifest", LAB, "/nonexistent/disk.img")
    assert proc.returncode == 2
    assert "does not exist" in one_line_error(proc)


def test_missing_system_tool(image: Callable[..., Path], workdir: Path) -> None:
    img = image(512)
    before = sha256(img)
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(":"):
        for tool in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if tool.name != "sgdisk" and not (bin_dir / tool.name).exists():
                (bin_dir / tool.name).symlink_to(tool)
    proc = panther("disk", "format", "--manifest", LAB, str(img), env={"PATH": str(bin_dir)})
    assert proc.returncode == 3
    assert "required tool not found: sgdisk (install the gdisk package)" in one_line_error(proc)
    assert sha256(img) == before


def test_not_root(image: Callable[..., Path], workdir: Path) -> None:
    img = image(512)
    os.chmod(workdir, 0o755)
    before = sha256(img)
    # By name: the checkout (LAB is in it) may be under a directory only root may enter.
    proc = panther("disk", "format", "--manifest", "lab", str(img), user=65534)
    assert proc.returncode == 4
    assert "needs root" in one_line_error(proc)
    assert sha256(img) == before


def test_luks_without_device_mapper_is_refused_before_any_change(
    image: Callable[..., Path], workdir: Path
) -> None:
    if luks.device_mapper_available():
        pytest.skip("this kernel has device-mapper; the refusal path cannot be reached here")
    img = image(1024)
    key = workdir / "key"
    key.write_bytes(os.urandom(64))
    before = sha256(img)
    proc = panther("disk", "format", "--manifest", "workstation", "--key-file", str(key), str(img))
    assert proc.returncode != 0
    assert "no device-mapper" in one_line_error(proc)
    assert sha256(img) == before


def test_luks2_header_written_by_the_format_steps(
    image: Callable[..., Path], workdir: Path
) -> None:
    """The real cryptsetup writes the LUKS2 header exactly as the format steps say."""
    img = image(1024)
    key = workdir / "key"
    key.write_bytes(os.urandom(64))
    manifest = manifests.bundled("workstation")
    secret = luks.Secret(key_file=str(key))
    with blockdev.attached(str(img)) as (disk, _):
        plan = layout.Layout(disk=disk)
        for step in layout.format_steps(manifest, plan, secret, wipe=[]):
            if step.show.startswith("cryptsetup open"):
                break
            step.action()
        dump = run("cryptsetup", "luksDump", plan.main)
        assert "Version:       \t2" in dump
        assert "Label:         \tpantheros-luks" in dump
        test = subprocess.run(
            ["cryptsetup", "open", "--test-passphrase", "--key-file", str(key), plan.main],
            capture_output=True,
            check=False,
        )
        assert test.returncode == 0, test.stderr
        assert (
            run("blkid", "-p", "-s", "PART_ENTRY_TYPE", "-o", "value", plan.main).strip()
            == "ca7d7ccb-63ed-4c53-861c-1742536059cc"
        )


def test_luks_format_and_mount_where_device_mapper_exists(
    image: Callable[..., Path], workdir: Path
) -> None:
    if not luks.device_mapper_available():
        pytest.skip("this kernel has no device-mapper (not in /proc/misc): LUKS cannot be opened")
    img = image(1024)
    key = workdir / "key"
    key.write_bytes(os.urandom(64))
    fmt = panther("disk", "format", "-m", "workstation", "--key-file", str(key), str(img))
    assert fmt.returncode == 0, fmt.stderr
    mnt = workdir / "mnt"
    proc = panther("disk", "mount", "-m", "workstation", "--key-file", str(key), str(img), str(mnt))
    assert proc.returncode == 0, proc.stderr
    assert "/root" in {v[0] for v in mountinfo_under(mnt).values()}
    assert panther("disk", "unmount", str(mnt)).returncode == 0
    assert not Path("/dev/mapper/cryptroot").exists()
