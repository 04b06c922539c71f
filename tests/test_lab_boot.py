"""`panther lab boot`'s parts that need no VM: the initramfs overlay, this boot's configuration,
the image's GPT and LUKS2 header read from the file, QEMU's and nixos-install's command lines,
and what the lab refuses while its VM runs (a process holding the pid file stands in for QEMU).
tests/vm boots the real thing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros.errors import Refused
from pantheros.lab import esp, generation, guestos, initrd, qemu, vm
from pantheros.lab.lab import Lab
from pantheros.manifest.models import PersistenceEntry
from tests.helpers import REPO, one_line_error, panther


def lab_manifest() -> dict[str, object]:
    data: dict[str, object] = json.loads(manifests.bundled_path("lab").read_text())
    return data


APP = (PersistenceEntry("/var/lib/app", "directory", "root", "root", "0750"),)


def boot(
    level: str = "baseline", *, persistence: tuple[PersistenceEntry, ...] = APP, tpm2: bool = False
) -> generation.Boot:
    return generation.Boot(
        manifest=lab_manifest(),
        level=level,
        persistence=persistence,
        authorized_key="ssh-ed25519 AAAA lab",
        tpm2=tpm2,
    )


def test_the_overlay_is_a_cpio_the_real_cpio_reads(tmp_path: Path) -> None:
    overlay = initrd.Overlay()
    overlay.add("etc/systemd/system/a.service", "[Unit]\n")
    overlay.add("nix/store/x-step/bin/tool", b"\x7fELF", 0o555)
    overlay.link("etc/systemd/system/initrd.target.wants/a.service", "../a.service")
    archive = tmp_path / "overlay.cpio"
    archive.write_bytes(overlay.cpio())
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["cpio", "-idm", "--quiet", "-F", str(archive)], cwd=out, check=True, capture_output=True
    )
    assert (out / "etc/systemd/system/a.service").read_text() == "[Unit]\n"
    tool = out / "nix/store/x-step/bin/tool"
    assert tool.read_bytes() == b"\x7fELF"
    assert tool.stat().st_mode & 0o777 == 0o555
    link = out / "etc/systemd/system/initrd.target.wants/a.service"
    assert os.readlink(link) == "../a.service"
    listing = subprocess.run(
        ["cpio", "-t", "--quiet", "-F", str(archive)], capture_output=True, text=True, check=True
    ).stdout.split()
    # Parents before what they hold: the kernel makes no missing directory.
    for name in listing:
        parent = name.rpartition("/")[0]
        if parent:
            assert listing.index(parent) < listing.index(name), name


def test_the_initramfs_is_the_base_padded_then_the_overlay(tmp_path: Path) -> None:
    base = tmp_path / "base.img"
    base.write_bytes(b"zstd-bytes")  # ten bytes: two of padding follow
    overlay = initrd.Overlay()
    overlay.add("x", "y")
    out = tmp_path / "initrd.img"
    initrd.write_initramfs(base, overlay, out)
    data = out.read_bytes()
    assert data[:10] == b"zstd-bytes"
    assert data[10:12] == b"\0\0"
    assert data[12:].startswith(b"070701")


@pytest.mark.parametrize("luks", [False, True])
@pytest.mark.parametrize("policy", ["boot-dirty", "fail-closed"])
def test_the_overlay_carries_the_rendered_unit_and_the_step(
    tmp_path: Path, luks: bool, policy: str
) -> None:
    step = tmp_path / "step"
    step.mkdir()
    for name in ("pantheros-rollback", "pantheros-btrfs"):
        (step / name).write_text(name)
    overlay = initrd.Overlay()
    initrd.add_units(overlay, luks, policy, step)
    path = initrd.LUKS_UNITS_JSON if luks else initrd.UNITS_JSON
    rendered = json.loads(path.read_text())
    unit = overlay.files["etc/systemd/system/pantheros-rollback.service"][1].decode()
    assert unit == rendered[policy]["units"]["pantheros-rollback.service"]
    store = rendered["bootstep"].lstrip("/")
    assert overlay.files[f"{store}/bin/pantheros-rollback"] == (0o555, b"pantheros-rollback")
    wants = "etc/systemd/system/initrd.target.wants/pantheros-rollback.service"
    assert wants in overlay.links
    requires = "etc/systemd/system/sysroot.mount.requires/pantheros-rollback.service"
    assert (requires in overlay.links) == (policy == "fail-closed")
    device = "/dev/mapper/cryptroot" if luks else "/dev/disk/by-label/pantheros"
    assert f"--device {device} " in unit


def test_the_luks_unit_waits_for_the_cryptsetup_unit() -> None:
    """The ordering the NixOS module renders for LUKS (rung 3 renders it, the VM test boots it)."""
    rendered = json.loads(initrd.LUKS_UNITS_JSON.read_text())
    for policy in ("boot-dirty", "fail-closed"):
        unit = rendered[policy]["units"]["pantheros-rollback.service"]
        after = next(line for line in unit.splitlines() if line.startswith("After="))
        assert "systemd-cryptsetup@cryptroot.service" in after
        assert "Requires=dev-mapper-cryptroot.device" in unit


def test_a_lab_manifest_unlike_the_rendered_units_is_refused() -> None:
    data = lab_manifest()
    vm.check_unit_matches(manifests.loads(json.dumps(data)))
    vm.check_unit_matches(manifests.loads(json.dumps(vm.luks_manifest())))
    storage = data["storage"]
    assert isinstance(storage, dict)
    storage["blank_snapshot"] = "other-blank"
    with pytest.raises(Refused, match="--blank other-blank"):
        vm.check_unit_matches(manifests.loads(json.dumps(data)))


def test_each_level_takes_its_settings_from_the_table() -> None:
    table = json.loads((REPO / "src/pantheros/data/hardening.json").read_text())
    for name in generation.LEVELS:
        level = generation.Level.of(name)
        for check in table["checks"]:
            setting = check["levels"].get(name)
            if setting is None:
                continue
            if check["area"] == "sysctl":
                assert level.sysctls[check["key"]] == setting["set"]
            elif check["area"] == "cmdline":
                assert check["param"] in level.cmdline
            elif check["area"] == "module":
                assert check["module"] in level.modules_off
            elif check["area"] == "ssh":
                assert level.ssh[check["key"]] == setting["set"]
    assert generation.Level.of("baseline").cmdline == ()
    assert "lockdown=confidentiality" in boot("strict").kernel_cmdline().split()
    assert "apparmor=1" in boot("strict").kernel_cmdline().split()


def test_a_boots_configuration_files() -> None:
    strict = boot("strict", tpm2=True)
    files = strict.files()
    manifest = json.loads(files["etc/pantheros/manifest.json"][1])
    assert manifest["security"]["level"] == "strict"
    paths = [entry["path"] for entry in manifest["persistence"]]
    assert "/var/lib/app" in paths  # from persistence.json
    assert "/etc/ssh/authorized_keys.d" in paths  # the login key's place
    assert paths.count("/etc/machine-id") == 1
    fstab = files["etc/fstab"][1]
    assert (
        "/dev/disk/by-label/pantheros /persist btrfs "
        "compress=zstd,noatime,subvol=persist,x-initrd.mount 0 0"
    ) in fstab
    assert " /home btrfs compress=zstd,noatime,subvol=home 0 0" in fstab
    assert "proc /proc proc hidepid=2 0 0" in fstab
    assert "tmpfs /tmp tmpfs mode=1777,nosuid,nodev,noexec 0 0" in fstab
    assert (
        "/dev/disk/by-label/PANTHER-ESP /boot vfat umask=0077,nosuid,nodev,noexec,nofail" in fstab
    )
    sysctl = files["etc/sysctl.d/zz-pantheros-hardening.conf"][1]
    assert "kernel.yama.ptrace_scope = 3\n" in sysctl
    assert "install cramfs /bin/false\n" in files["etc/modprobe.d/pantheros-hardening.conf"][1]
    assert (
        "PasswordAuthentication no\n"
        in files["etc/ssh/sshd_config.d/00-pantheros-hardening.conf"][1]
    )
    assert "policy drop" in files["etc/nftables.conf"][1]
    assert generation.TPM2_ENROLL in files
    assert "auditd.service" in next(iter(strict.links()))
    assert generation.TPM2_ENROLL not in boot("baseline").files()
    assert boot("baseline").links() == {}


def test_the_luks_boot_names_the_mapping_as_nixos_does() -> None:
    luks = generation.Boot(vm.luks_manifest(), "baseline", (), "k", tpm2=True)
    assert luks.kernel_cmdline().startswith("root=/dev/mapper/cryptroot rootfstype=btrfs ")
    assert "/dev/mapper/cryptroot /persist btrfs" in luks.files()["etc/fstab"][1]
    crypttab = generation.crypttab(manifests.loads(json.dumps(vm.luks_manifest())))
    assert crypttab == "cryptroot /dev/disk/by-partlabel/pantheros - luks,tpm2-device=auto\n"


def test_a_bad_persistence_entry_is_refused_before_booting() -> None:
    bad = (PersistenceEntry("relative/path", "directory", "root", "root", "0755"),)
    with pytest.raises(Exception, match="manifest"):
        boot(persistence=bad).machine_manifest()


@pytest.mark.root
def test_the_image_is_read_from_outside(tmp_path: Path) -> None:
    """The GPT of a lab-shaped image, and a LUKS2 header's tokens, read from the file."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(256 * 1024**2)
    subprocess.run(
        ["sgdisk", "--new=1:0:+64M", "--change-name=1:PANTHER-ESP", "--new=2:0:0",
         "--change-name=2:pantheros", str(image)],
        check=True, capture_output=True,
    )  # fmt: skip
    parts = esp.partitions(image)
    assert [(p.number, p.name) for p in parts] == [(1, "PANTHER-ESP"), (2, "pantheros")]
    assert parts[0].offset == 1024**2
    assert parts[0].size == 64 * 1024**2
    main = esp.partition(image, "pantheros")
    assert esp.luks2_tokens(image, main) is None
    # A LUKS2 header written into the partition's place, with a token (the type is what counts).
    header = tmp_path / "luks.img"
    with open(header, "wb") as f:
        f.truncate(32 * 1024**2)
    key = tmp_path / "key"
    key.write_text("secret")
    subprocess.run(
        ["cryptsetup", "luksFormat", "--type", "luks2", "--batch-mode", "--pbkdf", "pbkdf2",
         "--pbkdf-force-iterations", "1000", "--key-file", str(key), str(header)],
        check=True, capture_output=True,
    )  # fmt: skip
    token = tmp_path / "token.json"
    token.write_text(json.dumps({"type": "pantheros-test", "keyslots": ["0"]}))
    subprocess.run(
        ["cryptsetup", "token", "import", "--json-file", str(token), str(header)],
        check=True, capture_output=True,
    )  # fmt: skip
    with open(image, "r+b") as f:
        f.seek(main.offset)
        f.write(header.read_bytes()[: 16 * 1024**2])
    assert esp.luks2_tokens(image, main) == ["pantheros-test"]
    with pytest.raises(Exception, match="no GPT"):
        esp.partitions(key)


def test_qemu_runs_uefi_with_the_labs_own_files(tmp_path: Path) -> None:
    files = qemu.Files(tmp_path / "vm")
    argv = qemu.qemu_argv(files, tmp_path / "disk.img", memory_mib=1024, port=2222, tpm=True)
    text = " ".join(argv)
    assert argv[0] == "qemu-system-x86_64"
    assert "-daemonize" in argv
    assert argv[argv.index("-pidfile") + 1] == str(files.pidfile)
    assert f"file={qemu.OVMF_CODE}" in text
    assert f"file={files.efivars}" in text
    assert "hostfwd=tcp:127.0.0.1:2222-:22" in text
    assert f"logfile={files.console_log}" in text
    assert "tpm-crb,tpmdev=tpm0" in text
    assert f"path={files.swtpm_sock}" in text
    plain = qemu.qemu_argv(files, tmp_path / "disk.img", memory_mib=512, port=1, tpm=False)
    assert "-tpmdev" not in plain
    direct = qemu.qemu_argv(
        files,
        tmp_path / "installer.img",
        memory_mib=1024,
        port=1,
        tpm=False,
        kernel=(Path("/boot/vmlinuz"), tmp_path / "initrd.img", "root=x"),
        extra_drives=((tmp_path / "new.img", False), (tmp_path / "os.tar", True)),
        snapshot=True,
    )
    assert "pflash" not in " ".join(direct)
    assert direct[direct.index("-append") + 1] == "root=x"
    drives = [direct[i + 1] for i, word in enumerate(direct) if word == "-drive"]
    assert drives[0].endswith(",snapshot=on")
    assert drives[1] == f"file={tmp_path / 'new.img'},format=raw,if=virtio"
    assert drives[2].endswith(",readonly=on")
    swtpm = qemu.swtpm_argv(files)
    assert swtpm[:3] == ["swtpm", "socket", "--tpm2"]
    assert "--terminate" in swtpm
    assert f"dir={files.tpm_state}" in swtpm


def test_nixos_install_argv() -> None:
    assert vm.flake_install_argv(Path("/var/lib/pantheros/lab/mnt"), ".#lab") == [
        "nixos-install",
        "--root",
        "/var/lib/pantheros/lab/mnt",
        "--flake",
        ".#lab",
        "--no-root-passwd",
        "--no-channel-copy",
    ]


@pytest.fixture
def fake_qemu(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A process holding DIR/vm/qemu.pid locked, as QEMU does while it runs."""
    directory = tmp_path / "lab"
    (directory / "vm").mkdir(parents=True)
    pidfile = directory / "vm" / "qemu.pid"
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(pidfile)!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    try:
        yield directory, holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_the_pid_file_lock_says_whether_the_vm_runs(fake_qemu: tuple[Path, int]) -> None:
    directory, pid = fake_qemu
    pidfile = directory / "vm" / "qemu.pid"
    assert qemu.running(pidfile) == pid
    status = Lab(directory).status()
    assert status.vm.running is True
    assert status.vm.pid == pid


def test_a_pid_file_nobody_holds_is_no_vm(tmp_path: Path) -> None:
    pidfile = tmp_path / "qemu.pid"
    pidfile.write_text(str(os.getpid()))  # a live pid, but nothing holds the lock
    assert qemu.running(pidfile) is None
    assert qemu.running(tmp_path / "missing.pid") is None


@pytest.mark.root
def test_while_the_vm_runs_the_disk_is_its_own(workdir: Path) -> None:
    """`lab up`, `lab down` and a `--lab` command are refused in one line while a process holds
    the VM's pid file; `lab status` says the VM runs; nothing is attached or mounted."""
    directory = workdir / "lab"
    up = panther("lab", "up", str(directory), "--size", "1G")
    assert up.returncode == 0, up.stderr
    assert panther("lab", "down", str(directory)).returncode == 0
    (directory / "vm").mkdir()
    code = (
        "import fcntl, os, time\n"
        f"fd = os.open({str(directory / 'vm' / 'qemu.pid')!r}, os.O_RDWR | os.O_CREAT, 0o600)\n"
        "fcntl.lockf(fd, fcntl.LOCK_EX)\nos.write(fd, str(os.getpid()).encode())\n"
        "print('held', flush=True)\ntime.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        for args in (
            ("lab", "up", str(directory)),
            ("lab", "down", str(directory)),
            ("roots", "list", "--lab", str(directory)),
        ):
            proc = panther(*args)
            assert "is booted (its VM runs" in one_line_error(proc), args
            assert proc.returncode == 5
        status = json.loads(panther("lab", "status", str(directory), "--json").stdout)
        assert status["vm"]["running"] is True
        assert status["vm"]["pid"] == holder.pid
        assert status["device"] is None
        assert status["ssh"] is None  # no port forwarded (yet): nothing to reach
        (directory / "vm" / "ssh-port").write_text("2222\n")
        (directory / "vm" / "id_ed25519").write_text("a key\n")
        status = json.loads(panther("lab", "status", str(directory), "--json").stdout)
        key = str(directory.resolve() / "vm" / "id_ed25519")
        assert status["ssh"] == {"host": "127.0.0.1", "port": 2222, "user": "panther", "key": key}
        proc = panther("lab", "reboot", str(directory), "--json")
        assert "--json" in one_line_error(proc)
        assert proc.returncode == 2
        text = panther("lab", "status", str(directory)).stdout
        assert "(booted)" in text
    finally:
        holder.kill()
        holder.wait()
    assert panther("lab", "down", "--purge", str(directory)).returncode == 0
    assert not directory.exists()


@pytest.mark.root
def test_purge_removes_the_vms_files_and_only_them(workdir: Path) -> None:
    directory = workdir / "lab"
    assert panther("lab", "up", str(directory), "--size", "1G").returncode == 0
    vm_dir = directory / "vm"
    (vm_dir / "tpm").mkdir(parents=True)
    for name in ("console.log", "id_ed25519", "efivars.fd", "config.json", "luks-passphrase"):
        (vm_dir / name).write_text("x")
    (vm_dir / "tpm" / "tpm2-00.permall").write_text("x")
    (vm_dir / "mine").write_text("a file of the user's")
    assert panther("lab", "down", "--purge", str(directory)).returncode == 0
    assert sorted(p.name for p in vm_dir.rglob("*")) == ["mine"]
    (vm_dir / "mine").unlink()
    vm_dir.rmdir()


def test_lab_ssh_and_boot_refuse_bad_input_in_one_line(tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    proc = panther("lab", "ssh", str(lab))
    assert "is not running" in one_line_error(proc)
    proc = panther("lab", "ssh", str(lab), "extra", "words")
    assert "after --" in one_line_error(proc)
    proc = panther("lab", "boot", str(lab), "--kernel-param", "two words")
    assert "--kernel-param" in one_line_error(proc)
    proc = panther("lab", "boot", str(lab), "--memory", "100M")
    assert "at least 512M" in one_line_error(proc)
    assert not lab.exists()


@pytest.mark.skipif(shutil.which("nixos-install") is not None, reason="Nix is here: it would run")
def test_lab_boot_flake_without_nix_says_so(tmp_path: Path) -> None:
    proc = panther("lab", "boot", str(tmp_path / "lab"), "--flake", ".#lab")
    assert "nixos-install" in one_line_error(proc)
    proc = panther("lab", "boot", str(tmp_path / "lab"), "--flake", "no-host")
    assert "FLAKE#HOST" in one_line_error(proc)
    assert not (tmp_path / "lab").exists()


@pytest.mark.root
def test_lab_boot_flake_runs_nixos_install_on_the_mounted_lab(workdir: Path) -> None:
    """`lab boot --flake .#HOST` lays out the lab, mounts it and runs exactly
    `nixos-install --root DIR/mnt --flake .#HOST --no-root-passwd --no-channel-copy` there (a
    stand-in on PATH records its argv and what it found, then fails, as a failed build does)."""
    bin_dir = workdir / "bin"
    bin_dir.mkdir()
    seen = workdir / "seen"
    fake = bin_dir / "nixos-install"
    fake.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$@\" > {seen}\n"
        f'mountpoint -q "$2" && mountpoint -q "$2/persist" && echo mounted >> {seen}\n'
        "echo 'error: building the system failed' >&2\nexit 3\n"
    )
    fake.chmod(0o755)
    directory = workdir / "lab"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        proc = panther("lab", "boot", str(directory), "--flake", ".#lab", env=env)
        if "required tool not found" in proc.stderr or "is missing (install" in proc.stderr:
            pytest.skip(one_line_error(proc))
        assert proc.returncode == 3  # an external tool failed (docs/cli.md)
        # Progress lines first (the lab laid out and mounted), then the one failure line.
        assert proc.stderr.splitlines()[-1] == "panther: error: nixos-install failed: exit status 3"
        mnt = str(directory.resolve() / "mnt")
        argv = ["--root", mnt, "--flake", ".#lab", "--no-root-passwd", "--no-channel-copy"]
        assert seen.read_text().splitlines() == [*argv, "mounted"]
        assert vm.flake_install_argv(Path(mnt), ".#lab") == ["nixos-install", *argv]
        assert not (directory / "vm" / "qemu.pid").exists()  # nothing booted
    finally:
        panther("lab", "down", "--purge", str(directory))


def test_the_os_is_keyed_by_its_packages_and_pantheros_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PANTHER_BOOT_CACHE", str(tmp_path))
    assert initrd.cache_dir() == tmp_path / "lab"
    if shutil.which("mmdebstrap") is None:
        pytest.skip("needs mmdebstrap (scripts/setup --vm)")
    base = guestos.base_key()
    monkeypatch.setattr(guestos, "GUEST_PACKAGES", (*guestos.GUEST_PACKAGES, "vim-tiny"))
    assert guestos.base_key() != base
    kernel = initrd.Kernel("6.1.0-0-cloud-amd64", Path("/boot/vmlinuz"))
    tarball = tmp_path / "debian-bookworm-x.tar"
    step = tmp_path / "bootstep-0123"
    key = guestos.os_key(tarball, kernel, step)
    assert guestos.os_key(tarball, kernel, step) == key
    assert guestos.os_key(tarball, kernel, tmp_path / "bootstep-4567") != key
    monkeypatch.setattr(guestos, "panther_source_hash", lambda: "changed")
    assert guestos.os_key(tarball, kernel, step) != key
