"""`panther lab boot`: the lab's own disk image booted as a whole machine under QEMU.

OVMF (UEFI, the lab's own variables) -> systemd-boot on the lab's ESP -> Debian's kernel and the
initramfs of pantheros.lab.initrd -> (LUKS2 unlocked by systemd-cryptsetup, with a TPM2 once one
is enrolled) -> the boot step -> the root -> the lab's activation (pantheros.lab.generation) ->
stage 2 (`panther rollback --finish`) -> the persistence bind mounts -> sshd, reached from this
host at 127.0.0.1 on a free port with a key made for the lab.

Everything the VM keeps is in the lab directory's `vm/` (see pantheros.lab.qemu.Files).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pantheros import btrfs, locking, process, ui
from pantheros import manifest as manifests
from pantheros.errors import PantherError, Refused, ToolMissing, UsageError
from pantheros.files import BadRecord, read_json, replace_file, write_json
from pantheros.lab import esp, generation, guestos, initrd, qemu
from pantheros.lab.lab import Lab
from pantheros.lab.report import VMStatus
from pantheros.manifest.models import PersistenceEntry
from pantheros.storage import blockdev, layout, mounts, tree

HOST_KEY_ALIAS = "pantheros-lab"
PASSPHRASE_PROMPT = "Please enter passphrase"  # noqa: S105 - the console's words
# After a prompt, either of these says it was answered (by `lab boot`, or at `lab console`).
ANSWERED = ("Password query on", "Finished systemd-cryptsetup@")
BOOT_TIMEOUT = 900.0  # TCG on a busy 2-core machine: minutes, not seconds
LUKS_NAME = "cryptroot"  # the NixOS module's default (nix/modules/storage.nix)
LUKS_LABEL = "pantheros-luks"
RECOVERY_KEY = "/run/pantheros/lab/recovery-key"
# What the console log shows, in boot order, and what `lab boot` says when it first sees it.
# systemd's status lines shorten a long unit name: the markers are what is left of it.
MILESTONES = (
    ("Linux version", "kernel started (systemd-boot loaded it from the lab's ESP)"),
    ("Starting pantheros-rollback.service", "initrd: the boot step (pantheros-rollback.service)"),
    ("Starting initrd-switch-root.service", "switching to the new root"),
    ("Starting pantheros-rollback-fin", "stage 2: panther rollback --finish"),
    ("Starting ssh.service", "sshd starting"),
)
TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "mcopy": "mtools",
    "dracut": "dracut-core",
    "mmdebstrap": "mmdebstrap",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
}


def in_a_second(verb: str) -> list[str]:
    """`systemctl VERB` run by the VM's systemd a second from now, so that the sudo (and SSH
    session) asking for it has ended before the shutdown begins: a sudo still there at the
    final kill logs to journald's closed socket, and Debian's 6.1 kernel can then spin in
    unix_dgram_sendmsg for good under TCG (seen once: the VM never rebooted)."""
    return ["systemd-run", "--quiet", "--on-active=1", "systemctl", verb]


@dataclass(frozen=True)
class BootStep:
    """The boot step's directories (script and built helper): `initrd`, what the initramfs
    carries (PANTHER_BOOTSTEP_DIR's when set: the tests' variant with its hooks), and `shipped`,
    panther's own build, which the lab's OS carries for its `panther` (the guest has no
    compiler) and the installer VM boots with."""

    initrd: Path
    shipped: Path


@dataclass(frozen=True)
class BootOptions:
    luks: bool = False
    tpm: bool | None = None  # None: as the lab was booted before
    level: str | None = None  # None: as before, else the manifest's
    memory_mib: int | None = None
    kernel_params: tuple[str, ...] = ()
    wait: bool = True
    size: int = 4 * 1024**3
    timeout: float = BOOT_TIMEOUT


@dataclass
class Config:
    """vm/config.json: what later boots keep (a TPM once given stays; the level; memory)."""

    tpm: bool = False
    level: str | None = None
    memory_mib: int = 1024
    installed_os: str | None = None  # a LUKS lab's OS key, from its installer

    @classmethod
    def load(cls, path: Path, *, beneath: Path) -> Config:
        """The VM's settings as `lab boot` saved them (defaults when there are none yet)."""
        data = read_json(path, beneath=beneath, what="the lab VM's settings")
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise BadRecord(f"{path} is not valid (not an object): delete it to start over")
        kinds = {"tpm": bool, "level": str, "memory_mib": int, "installed_os": str}
        wrong = [
            k for k, kind in kinds.items() if data.get(k) is not None and type(data[k]) is not kind
        ]
        if wrong:
            raise BadRecord(f"{path} is not valid ({', '.join(wrong)}): delete it to start over")
        return cls(
            tpm=bool(data.get("tpm", False)),
            level=data.get("level"),
            memory_mib=int(data.get("memory_mib") or 1024),
            installed_os=data.get("installed_os"),
        )

    def save(self, path: Path, *, beneath: Path) -> None:
        write_json(path, self.__dict__, beneath=beneath)


@dataclass
class Waited:
    """What the console showed while `lab boot` or `lab reboot` waited."""

    said: set[str] = field(default_factory=set)
    typed_at: int = -1  # where in the console log the prompt `lab boot` answered is


def require_tools(*, tpm: bool) -> None:
    tools = {**TOOLS, **({"swtpm": "swtpm"} if tpm else {})}
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise ToolMissing(
                f"required tool not found: {tool} (install the {package} package, or run "
                "bash scripts/setup --vm)"
            )
    for path, package in (
        (qemu.OVMF_CODE, "ovmf"),
        (qemu.OVMF_VARS, "ovmf"),
        (esp.SYSTEMD_BOOT, "systemd-boot-efi"),
    ):
        if not path.exists():
            raise ToolMissing(f"{path} is missing (install the {package} package)")


def expected_exec_start(manifest: manifests.Manifest) -> dict[str, str]:
    """The boot step's arguments this lab's manifest asks for (as the NixOS module renders)."""
    storage = manifest.storage
    device = (
        storage.luks.mapper_path if storage.luks else f"/dev/disk/by-label/{storage.btrfs_label}"
    )
    policy = manifest.impermanence
    return {
        "--device": device,
        "--root": storage.root.name,
        "--blank": storage.blank_snapshot,
        "--old-roots": storage.old_roots,
        "--design": policy.design.value,
        "--keep-min": str(policy.retention.keep_min),
        "--fail-policy": policy.fail_policy.value,
    }


def check_unit_matches(manifest: manifests.Manifest) -> None:
    """The initrd boots the unit rendered for the bundled lab host: refuse a lab whose manifest
    asks the step for something else, rather than boot it wrong."""
    luks = manifest.storage.luks is not None
    words = initrd.unit_exec_start(luks, manifest.impermanence.fail_policy.value)
    # The program and its command (`pantheros-btrfs rollback`, D155), then the options.
    first = next((i for i, word in enumerate(words) if word.startswith("--")), len(words))
    rendered = dict(zip(words[first::2], words[first + 1 :: 2], strict=False))
    for option, wanted in expected_exec_start(manifest).items():
        if rendered.get(option) != wanted:
            raise Refused(
                f"the lab's manifest asks the boot step for {option} {wanted}, but the initrd "
                f"unit rendered from the NixOS module runs it with {option} "
                f"{rendered.get(option)} (nix/tests/lab-host.nix): `lab boot` boots labs laid "
                "out as the bundled lab manifest"
            )


def luks_manifest() -> dict[str, Any]:
    """The bundled lab manifest with LUKS2, named as the NixOS module names it by default."""
    data: dict[str, Any] = json.loads(manifests.bundled_path("lab").read_text())
    data["storage"]["luks"] = {"name": LUKS_NAME, "label": LUKS_LABEL, "allow_discards": False}
    return data


class LabVM:
    """The lab's VM: its files in DIR/vm, its QEMU and swtpm, SSH into it."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.files = qemu.Files(lab.directory / "vm")

    # --- state ---------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.files.config

    @property
    def passphrase_path(self) -> Path:
        return self.files.directory / "luks-passphrase"

    @property
    def recovery_key_path(self) -> Path:
        return self.files.directory / "luks-recovery-key"

    def pid(self) -> int | None:
        if not self.files.directory.is_dir():
            return None
        return qemu.running(self.files.pidfile)

    def port(self) -> int | None:
        try:
            text = self.files.port.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def status(self) -> VMStatus:
        return qemu.status(self.files)

    def require_running(self) -> int:
        pid = self.pid()
        if pid is None:
            raise UsageError(
                f"the lab's VM at {self.lab.directory} is not running (panther lab boot)"
            )
        return pid

    # --- SSH ---------------------------------------------------------------------------

    def ssh_argv(
        self, command: Sequence[str] = (), *, batch: bool = False, tty: bool = False
    ) -> list[str]:
        port = self.port()
        if port is None:
            raise UsageError(f"the lab's VM at {self.lab.directory} has no SSH port recorded")
        argv = [
            "ssh",
            "-i",
            str(self.files.key),
            "-p",
            str(port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.files.known_hosts}",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            # The first login records the lab's host key; from then on a changed key is refused.
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"HostKeyAlias={HOST_KEY_ALIAS}",
            # QEMU accepts the connection at once, even while the guest reboots: these bound
            # the wait for its banner and for a guest that went away.
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=3",
            "-o",
            "LogLevel=ERROR",
        ]
        if batch:
            argv += ["-o", "BatchMode=yes"]
        if tty:
            argv.append("-t")
        return [*argv, f"{guestos.USER}@127.0.0.1", *(["--", *command] if command else [])]

    def ssh(
        self, command: Sequence[str], *, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = self.ssh_argv(command, batch=True)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise PantherError(f"ssh into the lab VM: no answer within {timeout:.0f} s") from None
        if check and proc.returncode != 0:
            raise PantherError(
                f"in the lab VM, `{' '.join(command)}` failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-300:]}"
            )
        return proc

    def _ssh_answers(self) -> str | None:
        """The boot id when SSH lets us in, else None."""
        try:
            proc = self.ssh(["cat", "/proc/sys/kernel/random/boot_id"], check=False, timeout=30)
        except PantherError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    # --- booting -----------------------------------------------------------------------

    def boot(
        self, options: BootOptions, step: BootStep, persistence: Sequence[PersistenceEntry]
    ) -> None:
        """Start the lab's VM on its image (laid in first when the OS changed); the caller holds
        the lab's lock, and waits for it afterwards (wait_up) without: once QEMU runs, the disk
        is the VM's, whoever holds the lock."""
        if (pid := self.pid()) is not None:
            ui.info(f"the lab's VM is already running (pid {pid})")
            return
        manifest = self.lab.manifest()
        config = Config.load(self.config_path, beneath=self.lab.directory)
        luks = manifest.storage.luks is not None
        if options.luks and not luks:
            raise Refused(
                f"the lab at {self.lab.directory} was laid out without LUKS: "
                f"`panther lab down --purge {self.lab.directory}`, then `lab boot --luks` lays "
                "out a new one"
            )
        tpm = config.tpm if options.tpm is None else options.tpm
        require_tools(tpm=tpm)
        check_unit_matches(manifest)
        level = options.level or config.level or manifest.security.level
        if level not in generation.LEVELS:
            raise UsageError(f"--level: one of {', '.join(generation.LEVELS)}, not {level!r}")
        kernel = initrd.find_kernel()
        base = initrd.base_initramfs(kernel)
        tarball, os_key = guestos.os_tarball(kernel, step.shipped)
        if self.lab.record() is not None or blockdev.loop_for_image(self.lab.image):
            ui.progress("taking the lab down: the VM has the disk to itself")
            self.lab.down(purge=False)
        if luks:
            if config.installed_os != os_key:
                ui.info(
                    "note: this LUKS lab keeps the OS it was installed with; "
                    f"`panther lab down --purge {self.lab.directory}` makes a new one"
                )
        else:
            self._lay_in_blank(manifest, tarball, os_key)
        self._ensure_key()
        if not self.files.efivars.exists():
            shutil.copyfile(qemu.OVMF_VARS, self.files.efivars)
        this_boot = generation.Boot(
            manifest=json.loads(self.lab.manifest_path.read_text()),
            level=level,
            persistence=tuple(persistence),
            authorized_key=self.files.key.with_suffix(".pub").read_text(),
            tpm2=tpm and luks,
        )
        overlay = initrd.Overlay()
        initrd.add_units(overlay, luks, manifest.impermanence.fail_policy.value, step.initrd)
        this_boot.add_to(overlay)
        if luks:
            overlay.add("etc/crypttab", generation.crypttab(manifest))
        initrd.write_initramfs(base, overlay, self.files.initramfs)
        cmdline = " ".join([this_boot.kernel_cmdline(), *options.kernel_params])
        storage = manifest.storage
        assert storage.esp is not None, "a lab manifest has an ESP"
        esp.write_esp(
            self.lab.image,
            esp.partition(self.lab.image, storage.esp.label),
            kernel.vmlinuz,
            self.files.initramfs,
            cmdline,
        )
        config.tpm, config.level = tpm, level
        config.memory_mib = options.memory_mib or config.memory_mib
        config.save(self.config_path, beneath=self.lab.directory)
        self._rotate_console_log()
        self._start(config, tpm=tpm)
        ui.progress(
            f"the VM is booting (level {level}{', LUKS2' if luks else ''}"
            f"{', TPM2' if tpm else ''}); console log: {self.files.console_log}"
        )

    def _lay_in_blank(self, manifest: manifests.Manifest, tarball: Path, os_key: str) -> None:
        with (
            blockdev.attached(str(self.lab.image)) as (disk, _),
            mounts.top_level_mount(tree.btrfs_device(manifest, disk)) as top,
        ):
            guestos.finish_interrupted(top, manifest)
            name = manifest.storage.blank_snapshot
            if not btrfs.is_subvolume(top / name):
                # Not made again here: a missing blank is a fault the boot must show.
                ui.warn(
                    f"the blank {name} is missing: the boot step will fail "
                    f"({manifest.impermanence.fail_policy.value})"
                )
                return
            if guestos.blank_key(top, manifest) == os_key:
                return
            ui.progress(
                f"laying the lab's OS into the blank {manifest.storage.blank_snapshot} "
                "(every boot starts from it)"
            )
            guestos.lay_in(top, manifest, str(tarball))

    def _ensure_key(self) -> None:
        self.files.directory.mkdir(mode=0o700, exist_ok=True)
        if self.files.key.exists():
            return
        self.files.key.with_suffix(".pub").unlink(missing_ok=True)
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pantheros-lab"]
        process.run([*argv, "-f", str(self.files.key)], check=True)

    def _rotate_console_log(self) -> None:
        if self.files.console_log.exists():
            os.replace(self.files.console_log, self.files.console_log.with_suffix(".log.1"))

    def _start(self, config: Config, *, tpm: bool) -> None:
        for attempt in range(5):
            port = qemu.free_port()
            if tpm:
                qemu.start_swtpm(self.files)
            argv = qemu.qemu_argv(
                self.files, self.lab.image, memory_mib=config.memory_mib, port=port, tpm=tpm
            )
            try:
                replace_file(self.files.port, f"{port}\n".encode(), beneath=self.lab.directory)
                qemu.start_qemu(argv, self.files)
                return
            except qemu.PortTaken:
                if attempt == 4:
                    raise
            finally:
                if tpm and self.pid() is None:
                    qemu.stop_swtpm(self.files)

    def console_text(self, start: int = 0) -> str:
        try:
            with open(self.files.console_log, "rb") as f:
                f.seek(start)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def console_size(self) -> int:
        try:
            return self.files.console_log.stat().st_size
        except FileNotFoundError:
            return 0

    def type_on_console(self, text: str) -> None:
        """Type on the serial console (what a person does in `lab console`)."""
        type_on_console(self.files.console, text)

    def tpm_enrolled(self) -> bool:
        manifest = self.lab.manifest()
        part = esp.partition(self.lab.image, manifest.storage.partition_label)
        tokens = esp.luks2_tokens(self.lab.image, part)
        return tokens is not None and "systemd-tpm2" in tokens

    def wait_up(self, *, console_from: int, options: BootOptions, boot_id: str | None) -> None:
        """Wait until SSH lets us in on a boot other than boot_id and the system finished
        starting; say what the console shows on the way. The passphrase prompt is answered
        from the lab's kept passphrase unless a TPM2 is enrolled (then the TPM should have
        unlocked it: the measured state changed, and a person answers)."""
        deadline = time.monotonic() + options.timeout
        waited = Waited()
        enrolled = self.lab.manifest().storage.luks is not None and self.tpm_enrolled()
        while True:
            if self.pid() is None:
                raise PantherError(self._why_down(console_from))
            text = self.console_text(console_from)
            for marker, words in MILESTONES:
                if marker in text and marker not in waited.said:
                    waited.said.add(marker)
                    ui.progress(words)
            # A prompt is pending until the console says it was answered (whoever typed).
            at = text.rfind(PASSPHRASE_PROMPT)
            answered = any(word in text[at:] for word in ANSWERED)
            if at >= 0 and not answered and at != waited.typed_at:
                if enrolled:
                    raise Refused(
                        "the boot asks for the LUKS passphrase on the console: the TPM2 did not "
                        "unlock the root (the measured boot state, PCR 7, changed). Type it in "
                        f"`panther lab console {self.lab.directory}` (it is in "
                        f"{self.passphrase_path}); the VM waits"
                    )
                ui.progress("typing the lab's LUKS passphrase at the console prompt")
                self.type_on_console(self.passphrase_path.read_text() + "\r")
                waited.typed_at = at
            current = self._ssh_answers()
            if current is not None and current != boot_id:
                state = self.ssh(
                    ["systemctl", "is-system-running", "--wait"], check=False
                ).stdout.strip()
                if state != "stopping":
                    break
                boot_id = current  # it was going down: wait for the next boot
            if time.monotonic() > deadline:
                raise PantherError(
                    f"the lab's VM did not let SSH in within {options.timeout:.0f} s "
                    f"(console log: {self.files.console_log})"
                )
            time.sleep(2)
        ui.progress("SSH is up and the system started")
        if state != "running":
            failed = self.ssh(
                ["systemctl", "--failed", "--plain", "--no-legend"], check=False
            ).stdout
            units = ", ".join(line.split()[0] for line in failed.splitlines() if line.split())
            ui.warn(f"the lab's system is {state}: failed units: {units or '-'}")
        self._collect_recovery_key()
        self.say_outcome()

    def _why_down(self, console_from: int) -> str:
        """What the console said about the boot step before the VM powered off."""
        said = []
        for line in self.console_text(console_from).splitlines():
            _, found, words = line.partition("pantheros-rollback: ")
            if found and words.strip() not in said:
                said.append(words.strip())
        reason = f": {'; '.join(said[-2:])}" if said else ""
        return (
            f"the lab's VM powered off before it let SSH in{reason} (console log: "
            f"{self.files.console_log})"
        )

    def _collect_recovery_key(self) -> None:
        """A LUKS lab's first boot with a TPM2 makes a recovery key in the VM's /run: keep it
        in DIR/vm (0600), show it once, and remove it from the VM."""
        proc = self.ssh(["sudo", "cat", RECOVERY_KEY], check=False)
        if proc.returncode != 0 or not proc.stdout.strip():
            return
        key = proc.stdout.strip()
        fd = os.open(self.recovery_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        self.ssh(["sudo", "rm", "-f", RECOVERY_KEY])
        ui.result(
            "The TPM2 is enrolled (PCR 7): later boots unlock the root unattended.\n"
            f"LUKS recovery key (shown once, kept in {self.recovery_key_path}):\n  {key}"
        )

    def say_outcome(self) -> None:
        report = self.ssh(["cat", "/run/pantheros/rollback.report"], check=False).stdout
        result = re.search(r"^result=(.*)$", report, re.M)
        archived = re.findall(r"^archived=(.*)$", report, re.M)
        if result:
            kept = f"; previous root kept as {archived[-1]}" if archived else ""
            ui.info(f"boot step: {result.group(1)}{kept}")
        warning = self.ssh(["cat", "/run/pantheros/login-warning"], check=False).stdout.strip()
        if warning:
            ui.warn(warning)
        port = self.port()
        ui.result(
            f"The lab's VM is up. Log in: panther lab ssh {self.lab.directory} "
            f"(ssh {guestos.USER}@127.0.0.1 -p {port}, key {self.files.key})"
        )

    # --- reboot and power ----------------------------------------------------------------

    def reboot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """`systemctl reboot` inside the VM, then wait for the next boot to let SSH in."""
        self.require_running()
        before = self._ssh_answers()
        if before is None:
            raise PantherError("the lab's VM does not let SSH in: cannot ask it to reboot")
        offset = self.console_size()
        ui.progress("rebooting the VM (systemctl reboot inside it)")
        self.ssh(["sudo", *in_a_second("reboot")], check=False, timeout=60)
        self.wait_up(console_from=offset, options=BootOptions(timeout=timeout), boot_id=before)

    def poweroff(self, *, force: bool = False, timeout: float = 180) -> bool:
        """Power the VM off: `systemctl poweroff` inside, else ACPI, else the plug. Whether it
        was running."""
        pid = self.pid()
        if pid is None:
            qemu.stop_swtpm(self.files)
            return False
        if not force:
            ui.progress("powering the VM off (systemctl poweroff inside it)")
            with contextlib.suppress(PantherError):
                self.ssh(["sudo", *in_a_second("poweroff")], check=False, timeout=30)
            if not qemu.wait_gone(self.files.pidfile, timeout):
                ui.warn("the VM did not power off: pressing its power button (ACPI)")
                with contextlib.suppress(OSError, ValueError):
                    qemu.qmp(self.files, "system_powerdown")
                force = not qemu.wait_gone(self.files.pidfile, 60)
        if force:
            with contextlib.suppress(OSError, ValueError):
                qemu.qmp(self.files, "quit")
            if not qemu.wait_gone(self.files.pidfile, 10):
                qemu.kill(self.files, pid)
                qemu.wait_gone(self.files.pidfile, 10)
        qemu.stop_swtpm(self.files)
        return True

    @contextlib.contextmanager
    def console(self) -> Iterator[socket.socket]:
        self.require_running()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(self.files.console))
            yield s


def type_on_console(path: Path, text: str) -> None:
    """Type text on the serial console at path, a few keys at a time: the emulated UART holds 16
    bytes, and QEMU drops what it still buffers when the connection closes."""
    data = text.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(path))
        for start in range(0, len(data), 4):
            s.sendall(data[start : start + 4])
            time.sleep(0.1)
        time.sleep(1)


def new_passphrase() -> str:
    return secrets.token_urlsafe(18)


# --- making a lab to boot ------------------------------------------------------------------------

INSTALL_TIMEOUT = 1200.0
INSTALL_PLAN = "etc/pantheros/lab/install.json"


def create_if_missing(lab: Lab, options: BootOptions, step: BootStep) -> None:
    """A lab directory without an image gets one: laid out here (`lab up`'s layout) or, with
    --luks, by the installer VM (this host's kernel may have no device-mapper)."""
    if lab.image.exists():
        return
    if not options.luks:
        if lab.manifest_path.exists() and lab.manifest().storage.luks is not None:
            raise Refused(
                f"the lab at {lab.directory} is to have LUKS, but its image is missing: "
                f"`panther lab down --purge {lab.directory}` and boot with --luks again"
            )
        lab.up(options.size, None)
        return
    if lab.manifest_path.exists():
        if lab.manifest().storage.luks is None:
            raise Refused(
                f"the lab at {lab.directory} has a manifest without LUKS: "
                f"`panther lab down --purge {lab.directory}` first to make a LUKS lab"
            )
    else:
        lab.directory.mkdir(parents=True, exist_ok=True)
        write_json(lab.manifest_path, luks_manifest(), beneath=lab.directory)
    manifest = lab.manifest()
    lab.check_size(options.size, manifest)
    require_tools(tpm=bool(options.tpm))
    check_unit_matches(manifest)
    machine = LabVM(lab)
    machine.files.directory.mkdir(mode=0o700, exist_ok=True)
    if not machine.passphrase_path.exists():
        fd = os.open(machine.passphrase_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new_passphrase())
    kernel = initrd.find_kernel()
    base = initrd.base_initramfs(kernel)
    tarball, os_key = guestos.os_tarball(kernel, step.shipped)
    installer = installer_disk(tarball, os_key)
    install(machine, options, kernel, base, tarball, installer, step.shipped)
    config = Config.load(machine.config_path, beneath=lab.directory)
    config.installed_os, config.tpm = os_key, bool(options.tpm)
    config.save(machine.config_path, beneath=lab.directory)


def installer_disk(tarball: Path, os_key: str) -> Path:
    """A plain lab-shaped disk whose root and blank hold the OS: what the installer VM boots
    (read-only: QEMU writes its changes elsewhere). Cached per OS."""
    manifest = manifests.load(manifests.bundled_path("lab"))
    directory = initrd.cache_dir()
    path = directory / f"installer-{os_key}.img"
    with locking.exclusive(directory / ".os.lock", what="the lab's OS cache"):
        if path.exists():
            return path
        ui.progress("making the installer VM's disk (once per OS)")
        partial = path.with_name(path.name + ".partial")
        partial.unlink(missing_ok=True)
        with open(partial, "xb") as f:
            f.truncate(2 * 1024**3)
        try:
            layout.format_disk(manifest, str(partial), yes_wipe=False, secret=None)
            with (
                blockdev.attached(str(partial)) as (disk, _),
                mounts.top_level_mount(tree.btrfs_device(manifest, disk)) as top,
            ):
                guestos.lay_in(top, manifest, str(tarball))
                root = top / manifest.storage.root.name
                btrfs.delete_subvolume(root)
                btrfs.snapshot(top / manifest.storage.blank_snapshot, root)
                btrfs.sync(top)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        for old in directory.glob("installer-*.img"):
            if old != path:
                old.unlink()
    return path


def install(
    machine: LabVM,
    options: BootOptions,
    kernel: initrd.Kernel,
    base: Path,
    tarball: Path,
    installer: Path,
    step_dir: Path,
) -> None:
    """Boot the installer VM with the new image as its second disk and the OS tarball as its
    third: it runs `panther disk format` (LUKS2) and lays the OS into the blank, then powers off.
    The image becomes disk.img only when the installer said it finished."""
    lab = machine.lab
    files = qemu.Files(machine.files.directory / "installer")
    files.directory.mkdir(mode=0o700, exist_ok=True)
    if (pid := qemu.running(files.pidfile)) is not None:
        qemu.kill(files, pid)  # an installer left by a killed `lab boot`
        qemu.wait_gone(files.pidfile, 10)
    lab.new_image.unlink(missing_ok=True)
    with open(lab.new_image, "xb") as f:
        f.truncate(options.size)
    bundled = json.loads(manifests.bundled_path("lab").read_text())
    setup = generation.Boot(bundled, "baseline", (), authorized_key="", tpm2=False)
    overlay = initrd.Overlay()
    initrd.add_units(overlay, False, "boot-dirty", step_dir)
    setup.add_to(overlay)
    plan = {
        "target": "/dev/vdb",
        "tarball": "/dev/vdc",
        "manifest": json.loads(lab.manifest_path.read_text()),
        "passphrase": machine.passphrase_path.read_text(),
        "tpm2": bool(options.tpm),
    }
    overlay.add(f"{generation.GENERATION}/{INSTALL_PLAN}", json.dumps(plan), 0o600)
    initrd.write_initramfs(base, overlay, files.initramfs)
    os.chmod(files.initramfs, 0o600)
    cmdline = f"{setup.kernel_cmdline()} pantheros.norollback pantheros.lab.install"
    argv = qemu.qemu_argv(
        files,
        installer,
        memory_mib=1024,
        port=qemu.free_port(),
        tpm=False,
        kernel=(kernel.vmlinuz, files.initramfs, cmdline),
        extra_drives=((lab.new_image, False), (tarball, True)),
        snapshot=True,
    )
    files.console_log.unlink(missing_ok=True)
    ui.progress(
        "the installer VM lays out the LUKS2 disk (panther disk format) and fills its blank; "
        f"console log: {files.console_log}"
    )
    qemu.start_qemu(argv, files)
    try:
        if not qemu.wait_gone(files.pidfile, INSTALL_TIMEOUT):
            raise PantherError(f"the installer VM did not finish within {INSTALL_TIMEOUT:.0f} s")
    finally:
        if (pid := qemu.running(files.pidfile)) is not None:
            qemu.kill(files, pid)
        files.initramfs.unlink(missing_ok=True)  # it holds the passphrase
    log = files.console_log.read_text(errors="replace") if files.console_log.exists() else ""
    if guestos.INSTALL_DONE not in log:
        lab.new_image.unlink(missing_ok=True)
        tail = "\n".join(log.splitlines()[-15:])
        raise PantherError(f"the installer VM failed (console log {files.console_log}):\n{tail}")
    os.replace(lab.new_image, lab.image)
    ui.progress("the LUKS2 disk is laid out and holds the OS")


def flake_install_argv(root: Path, flake: str) -> list[str]:
    """What installs a flake's NixOS host into the lab's mounted tree."""
    return [
        "nixos-install",
        "--root",
        str(root),
        "--flake",
        flake,
        "--no-root-passwd",
        "--no-channel-copy",
    ]


def boot_flake(lab: Lab, flake: str, *, memory_mib: int | None) -> None:
    """On a machine with Nix: install HOST's NixOS into the lab's image, then boot it (UEFI,
    the systemd-boot and initrd NixOS installed on the ESP). The host's configuration decides
    who may log in; `lab console` shows its console."""
    if "#" not in flake:
        raise UsageError(f"--flake {flake}: give FLAKE#HOST, for example .#lab")
    if shutil.which("nixos-install") is None:
        raise ToolMissing("--flake needs Nix's nixos-install on PATH (a machine with Nix)")
    require_tools(tpm=False)
    machine = LabVM(lab)
    with lab.lock(vm_ok=True):
        if machine.pid() is not None:
            raise Refused(f"the lab's VM at {lab.directory} is running: lab poweroff first")
        lab.up(4 * 1024**3, None)
        ui.progress(f"nixos-install --flake {flake} into {lab.mnt}")
        process.run(flake_install_argv(lab.mnt, flake), check=True, capture=False)
        lab.down(purge=False)
        machine.files.directory.mkdir(mode=0o700, exist_ok=True)
        if not machine.files.efivars.exists():
            shutil.copyfile(qemu.OVMF_VARS, machine.files.efivars)
        machine._ensure_key()
        config = Config.load(machine.config_path, beneath=lab.directory)
        config.memory_mib = memory_mib or config.memory_mib
        config.save(machine.config_path, beneath=lab.directory)
        machine._rotate_console_log()
        machine._start(config, tpm=False)
    ui.result(
        f"The lab's VM boots {flake}: panther lab console {lab.directory} (its console), "
        f"or panther lab ssh {lab.directory} once the host lets {guestos.USER} in with "
        f"{machine.files.key}.pub"
    )
