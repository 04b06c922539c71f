"""The operating system the lab VM boots: a minimal Debian, shaped as PantherOS shapes a machine.

There is no NixOS closure here, so the lab's root is Debian 12 made with mmdebstrap from
Debian's packages (GUEST_PACKAGES), with the `panther` package of this checkout, the kernel's
modules, and a few units that do what NixOS's modules do on PantherOS (GUEST_FILES): stage 2
(`panther rollback --finish`), the persistence bind mounts impermanence makes, and the TPM2
enrolment of the first boot. It is laid into the lab's blank, so every boot starts from it.

Two tarballs are cached: the mmdebstrap base, keyed by its package list and recipe, and the OS,
keyed by the base, the kernel and panther's source (everything in the `pantheros` package).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import py_compile
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import pantheros
from pantheros import btrfs, locking, process, ui
from pantheros.errors import PantherError
from pantheros.lab.initrd import Kernel, cache_dir
from pantheros.manifest import Manifest
from pantheros.storage import blankrecord

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
GUEST_PACKAGES = (
    *("systemd", "systemd-sysv", "udev", "dbus", "kmod", "iproute2"),  # boot, network
    *("openssh-server", "sudo"),  # login
    *("python3", "python3-jsonschema", "btrfs-progs", "acl", "attr"),  # panther
    *("cryptsetup-bin", "gdisk", "dosfstools"),  # `panther disk format` (the LUKS installer)
    # systemd-cryptenroll's TPM2 support (it loads these libraries when asked for a TPM2)
    *("libtss2-esys-3.0.2-0", "libtss2-rc0", "libtss2-mu0", "libtss2-tcti-device0"),
    *("nftables", "auditd"),  # the hardening levels' firewall and audit daemon
)
USER = "panther"
# The key the installer adds so that the first boot can enrol the TPM2 without a person; in
# /persist (inside the LUKS2 volume), deleted, with its key slot, once the TPM2 is enrolled.
ENROLL_KEY = "var/lib/pantheros-lab/enroll.key"
USER_ID = 1000
# Run by mmdebstrap on the finished tree ("$1"): the login user, declared in the image as NixOS
# declares users; sudo for wheel only; no host keys and no machine-id (each lab makes its own in
# /persist at its first boot); units enabled and disabled as the lab wants them.
HOOKS = (
    'chroot "$1" groupadd --system wheel',
    f'chroot "$1" useradd --uid {USER_ID} --user-group --groups wheel --shell /bin/bash'
    f" --home-dir /home/{USER} --no-create-home {USER}",
    'chroot "$1" chgrp wheel /usr/bin/sudo && chmod 4750 "$1/usr/bin/sudo"',
    'rm -f "$1"/etc/ssh/ssh_host_*',
    'rm -f "$1/etc/machine-id" && : > "$1/etc/machine-id"',
    'systemctl --root="$1" enable systemd-networkd.service nftables.service',
    # The machine-id is bind-mounted from /persist: there is nothing for this unit to commit.
    'systemctl --root="$1" mask systemd-networkd-wait-online.service'
    " systemd-machine-id-commit.service e2scrub_reap.service",
    'systemctl --root="$1" disable auditd.service',
)
EXCLUDES = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*", "/usr/share/info/*")
# In the blank: what the lab's blank was made from (the OS key), read by `lab boot`.
MARKER = "etc/pantheros/lab-os"
PYTHON_SITE = "usr/lib/python3/dist-packages"
STEP_CACHE = "var/cache/pantheros"  # pantheros.impermanence.bootstep's cache, as root
# Debian 12's Python: panther's modules are compiled for it when this host runs the same version
# (the root is fresh at every boot: bytecode written there would be made again every boot).
GUEST_CACHE_TAG = "cpython-311"
PANTHER = "/usr/local/bin/panther"
INSTALL_DONE = "pantheros-lab-install: done"
LAID_IN = "the lab's OS laid in by panther lab boot"

UNITS: dict[str, str] = {
    # NixOS's pantheros-rollback-finish (nix/modules/impermanence.nix), as written there.
    "pantheros-rollback-finish.service": f"""\
[Unit]
Description=PantherOS: record this boot's rollback and prune old roots
After=local-fs.target
Before=systemd-user-sessions.service

[Service]
Type=oneshot
ExecStart={PANTHER} rollback --finish --report /run/pantheros/rollback.report

[Install]
WantedBy=multi-user.target
""",
    # What impermanence does at boot on NixOS, and the identity it keeps in /persist.
    "pantheros-lab-persistence.service": """\
[Unit]
Description=PantherOS lab: SSH host key in /persist, then the persistence bind mounts
DefaultDependencies=no
After=local-fs.target
Before=sysinit.target ssh.service systemd-tmpfiles-setup.service
ConditionPathExists=/etc/pantheros/manifest.json

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/python3 -m pantheros.commands.lab_guest persistence

[Install]
WantedBy=sysinit.target
""",
    # The first boot of a LUKS2 lab with a TPM2: enrol PCR 7, make a recovery key. It ends
    # itself: once the volume holds a systemd-tpm2 token, there is nothing left to do.
    "pantheros-lab-tpm2-enroll.service": f"""\
[Unit]
Description=PantherOS lab: enrol the TPM2 (PCR 7) for the root's LUKS2 volume, once
After=local-fs.target pantheros-lab-persistence.service
ConditionPathExists=/etc/pantheros/lab/tpm2-enroll
ConditionPathExists=/persist/{ENROLL_KEY}

[Service]
Type=oneshot
ExecStart=/usr/bin/python3 -m pantheros.commands.lab_guest enroll-tpm2

[Install]
WantedBy=multi-user.target
""",
    # The LUKS installer: only on the installer VM's kernel command line.
    "pantheros-lab-install.service": """\
[Unit]
Description=PantherOS lab installer: lay out the target disk and fill its blank
After=local-fs.target pantheros-lab-persistence.service
ConditionKernelCommandLine=pantheros.lab.install

[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/usr/bin/python3 -m pantheros.commands.lab_guest install
ExecStopPost=/usr/bin/systemctl poweroff --no-block

[Install]
WantedBy=multi-user.target
""",
}
WANTED_BY = {
    "pantheros-rollback-finish.service": "multi-user.target",
    "pantheros-lab-persistence.service": "sysinit.target",
    "pantheros-lab-tpm2-enroll.service": "multi-user.target",
    "pantheros-lab-install.service": "multi-user.target",
}
GUEST_FILES: dict[str, tuple[int, str]] = {
    PANTHER.lstrip("/"): (
        0o755,
        "#!/usr/bin/python3\nimport sys\n\nfrom pantheros.cli import main\n\nsys.exit(main())\n",
    ),
    "etc/systemd/network/20-lab.network": (
        0o644,
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\n",
    ),
    # The key comes from /persist (NixOS keeps users' keys in /etc/ssh/authorized_keys.d too).
    "etc/ssh/sshd_config.d/50-pantheros-lab.conf": (
        0o644,
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "AuthorizedKeysFile /etc/ssh/authorized_keys.d/%u .ssh/authorized_keys\n",
    ),
    "etc/sudoers.d/pantheros-lab": (0o440, "%wheel ALL=(ALL:ALL) NOPASSWD: ALL\n"),
    "usr/lib/tmpfiles.d/pantheros-lab.conf": (
        0o644,
        # /var/log is the log subvolume, mounted over the image's: auditd needs its directory.
        f"d /home/{USER} 0700 {USER} {USER} -\nd /var/log/audit 0700 root root -\n",
    ),
    # NixOS's environment.loginShellInit from the impermanence module.
    "etc/profile.d/pantheros-login-warning.sh": (
        0o644,
        "if [ -s /run/pantheros/login-warning ]; then\n"
        "  cat /run/pantheros/login-warning >&2\n"
        "fi\n",
    ),
}


def _sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def _sources() -> tuple[str, bytes]:
    """Where mmdebstrap fetches from: this host's Debian sources when it runs the same release
    (its mirror or proxy), Debian's mirror otherwise."""
    os_release = Path("/etc/os-release")
    text = os_release.read_text() if os_release.exists() else ""
    if f"VERSION_CODENAME={SUITE}" in text:
        for name in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
            path = Path(name)
            if path.exists() and path.read_text().strip():
                return name, path.read_bytes()
    return MIRROR, MIRROR.encode()


def base_key() -> str:
    _, content = _sources()
    version = process.run(["mmdebstrap", "--version"], check=True).stdout.strip()
    return _sha(
        SUITE.encode(),
        content,
        version.encode(),
        "\n".join(GUEST_PACKAGES).encode(),
        "\n".join(HOOKS).encode(),
        "\n".join(EXCLUDES).encode(),
    )


def base_tarball() -> Path:
    """The mmdebstrap tree as a tarball, built once per package list and recipe (cached)."""
    key = base_key()
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"debian-{SUITE}-{key}.tar"
    with locking.exclusive(directory / ".os.lock", what="the lab's OS cache"):
        if path.exists():
            return path
        mirror, _ = _sources()
        ui.progress(
            f"building the lab's Debian {SUITE} with mmdebstrap ({len(GUEST_PACKAGES)} packages "
            "and their dependencies; once, then cached)"
        )
        partial = path.with_name(path.name + ".partial")
        argv = [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(GUEST_PACKAGES),
            '--aptopt=Acquire::Check-Valid-Until "false"',
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDES),
            *(f"--customize-hook={hook}" for hook in HOOKS),
            "--format=tar",
            SUITE,
            str(partial),
            mirror,
        ]
        try:
            process.run(argv, check=True)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        for old in directory.glob(f"debian-{SUITE}-*.tar"):
            if old != path:
                old.unlink()
    return path


def _packages() -> dict[str, Path]:
    """The Python packages the lab's `panther` is made of, by name: `pantheros` and the spec
    tool its command line imports (`panther_spec`, found without importing it here)."""
    found = {"pantheros": Path(pantheros.__file__).resolve().parent}
    spec = importlib.util.find_spec("panther_spec")
    if spec is None or spec.origin is None:
        raise PantherError("the panther_spec package is not installed beside pantheros")
    found["panther_spec"] = Path(spec.origin).resolve().parent
    return found


def _package_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def panther_source_hash() -> str:
    digest = hashlib.sha256()
    for name, root in _packages().items():
        for path in _package_files(root):
            relative = f"{name}/{path.relative_to(root)}"
            digest.update(relative.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:20]


def os_key(base: Path, kernel: Kernel, step_dir: Path) -> str:
    return _sha(
        base.name.encode(),
        step_dir.name.encode(),
        kernel.version.encode(),
        panther_source_hash().encode(),
        str(sys.implementation.cache_tag).encode(),
    )


def os_tarball(kernel: Kernel, step_dir: Path) -> tuple[Path, str]:
    """(the OS tarball, its key): the base, then the kernel's modules, panther, the boot step's
    built helper (step_dir) and the lab's units appended (a later member replaces an earlier one
    of the same name)."""
    base = base_tarball()
    key = os_key(base, kernel, step_dir)
    directory = cache_dir()
    path = directory / f"os-{key}.tar"
    with locking.exclusive(directory / ".os.lock", what="the lab's OS cache"):
        if path.exists():
            return path, key
        ui.progress(f"adding panther and kernel {kernel.version}'s modules to the lab's OS")
        partial = path.with_name(path.name + ".partial")
        try:
            shutil.copyfile(base, partial)
            with tarfile.open(partial, "a", format=tarfile.GNU_FORMAT) as tar:
                _append(tar, kernel, key, step_dir)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        for old in directory.glob("os-*.tar"):
            if old != path:
                old.unlink()
    return path, key


def _member(name: str, mode: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = mode
    info.type = kind
    info.uname = info.gname = "root"
    return info


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = _member(name, mode)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_tree(tar: tarfile.TarFile, source: Path, dest: str) -> None:
    """source's directories, files and symlinks under dest, owned by root."""
    tar.addfile(_member(dest, 0o755, tarfile.DIRTYPE))
    for path in sorted(source.rglob("*")):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        name = f"{dest}/{path.relative_to(source)}"
        if path.is_symlink():
            info = _member(name, 0o777, tarfile.SYMTYPE)
            info.linkname = os.readlink(path)
            tar.addfile(info)
        elif path.is_dir():
            tar.addfile(_member(name, 0o755, tarfile.DIRTYPE))
        elif path.is_file():
            with open(path, "rb") as f:
                info = _member(name, path.stat().st_mode & 0o777)
                info.size = path.stat().st_size
                tar.addfile(info, f)


def _add_bytecode(tar: tarfile.TarFile, source: Path, dest: str) -> None:
    """Each module compiled as the guest's Python loads it (hash-checked against nothing: the
    files are the image's own and never change in it)."""
    if sys.implementation.cache_tag != GUEST_CACHE_TAG:
        return
    with tempfile.TemporaryDirectory(prefix="pyc-") as work:
        for path in sorted(source.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(source)
            compiled = Path(work) / "module.pyc"
            py_compile.compile(
                str(path),
                cfile=str(compiled),
                dfile=f"/{dest}/{relative}",
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            name = f"{dest}/{relative.parent}/__pycache__/{path.stem}.{GUEST_CACHE_TAG}.pyc"
            _add_bytes(tar, name.replace("/./", "/"), compiled.read_bytes(), 0o644)


def _append(tar: tarfile.TarFile, kernel: Kernel, key: str, step_dir: Path) -> None:
    # usr/lib, not lib: /lib is a symlink in Debian 12's tree, and a `lib` member replaces it.
    _add_tree(tar, kernel.modules, f"usr/lib/modules/{kernel.version}")
    for name, package in _packages().items():
        _add_tree(tar, package, f"{PYTHON_SITE}/{name}")
        _add_bytecode(tar, package, f"{PYTHON_SITE}/{name}")
    # The boot step's script and compiled helper where the guest's panther looks for them (its
    # cache as root, under the same digest): `panther status` and `blank` run the helper, and
    # the guest has no compiler. The initrd carries its own copy (initrd.add_units).
    tar.addfile(_member(STEP_CACHE, 0o755, tarfile.DIRTYPE))
    _add_tree(tar, step_dir, f"{STEP_CACHE}/{step_dir.name}")
    for name, text in UNITS.items():
        _add_bytes(tar, f"etc/systemd/system/{name}", text.encode(), 0o644)
        link = _member(f"etc/systemd/system/{WANTED_BY[name]}.wants/{name}", 0o777, tarfile.SYMTYPE)
        link.linkname = f"../{name}"
        tar.addfile(link)
    for name, (mode, text) in GUEST_FILES.items():
        _add_bytes(tar, name, text.encode(), mode)
    _add_bytes(tar, MARKER, (key + "\n").encode(), 0o644)


# --- laying the OS into a blank ----------------------------------------------------------------


def blank_key(top: Path, manifest: Manifest) -> str | None:
    """The OS key of the blank under the top level `top`, or None (no blank, or not the lab's)."""
    marker = top / manifest.storage.blank_snapshot / MARKER
    try:
        return marker.read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _names(top: Path, manifest: Manifest) -> tuple[Path, Path, Path]:
    blank = top / manifest.storage.blank_snapshot
    return (
        blank,
        blank.with_name(f"{blank.name}.lab-staging"),
        blank.with_name(f"{blank.name}.lab-ready"),
    )


def finish_interrupted(top: Path, manifest: Manifest) -> None:
    """A lay-in killed after the old blank went and before the new one took its name: finish."""
    blank, _, ready = _names(top, manifest)
    if not btrfs.is_subvolume(blank) and btrfs.is_subvolume(ready):
        os.rename(ready, blank)
        btrfs.sync(top)


def lay_in(top: Path, manifest: Manifest, tarball: str) -> None:
    """Make the blank from the OS tarball (a file, or a device holding its bytes).

    The tree is unpacked into a staging subvolume, snapshotted read-only beside the blank, and
    only then does it replace the blank: at every moment there is a whole blank, old or new
    (finish_interrupted completes the one step between). The read-only snapshot is what makes
    it trusted: nothing changed since it was made, and it is the recorded blank."""
    blank, staging, ready = _names(top, manifest)
    for leftover in (staging, ready):
        if btrfs.is_subvolume(leftover):
            btrfs.delete_subvolume(leftover)
        elif leftover.exists():
            raise PantherError(f"{leftover} is in the way and is not a subvolume")
    btrfs.create_subvolume(staging)
    argv = [
        "tar",
        "--extract",
        "--file",
        tarball,
        "--directory",
        str(staging),
        "--numeric-owner",
        "--preserve-permissions",
        "--xattrs",
        "--xattrs-include=*",
    ]
    process.run(argv, check=True)
    for point in manifest.storage.mount_points():
        (staging / point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    btrfs.snapshot(staging, ready, readonly=True)
    btrfs.delete_subvolume(staging)
    # The blank's identity record (D80) names the new blank before it takes the name (D107):
    # killed between the two, the old blank fails its check and the next lay-in runs again.
    info = btrfs.subvolume_info(ready)
    blankrecord.write(top, blankrecord.BlankIdentity.of(blank.name, info, LAID_IN))
    if btrfs.is_subvolume(blank):
        btrfs.delete_subvolume(blank)
    os.rename(ready, blank)
    btrfs.sync(top)
