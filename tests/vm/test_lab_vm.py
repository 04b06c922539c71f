"""`panther lab boot`: the lab's disk booted as a whole machine, driven through the command line.

OVMF -> systemd-boot on the lab's ESP -> Debian's cloud kernel and a dracut systemd initramfs
carrying the unit rendered from the NixOS module and the shipped boot step -> (LUKS2) -> the
boot step -> the root -> stage 2 -> the persistence bind mounts -> sshd, under QEMU TCG. The
lab's operating system is Debian (pantheros.lab.guestos): NixOS's activation and impermanence's
own bind mounts are what a NixOS VM test proves; here the lab's units keep the same rules
(docs/decisions.md D100-D106).

Boots cost tens of seconds each under TCG, so one plain lab, booted once at `--level strict`, is
shared by the tests that need no other layout, in this order: the audit, ten reboots, power cuts,
and last the blank deleted (which leaves the lab unbootable). Each test boots it first when a
test before it left it off, so each also runs alone (`-k`). The LUKS2 lab's installer and first
boot run in the background meanwhile (a second VM uses the second core); its test comes last.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros import manifest as manifests
from pantheros.lab import qemu
from pantheros.lab.vm import in_a_second, type_on_console
from pantheros.machine import Machine
from tests import bootstep_variant
from tests.helpers import REPO, cleanup_under
from tests.vm.labvm import FAILED, LabVM, end_vm

pytestmark = [pytest.mark.root, pytest.mark.vm]

PROMPT = "Please enter passphrase"
REBOOTS = 10
PERSISTED = "/var/lib/labtest"


def new_lab(base: Path) -> LabVM:
    directory = base / "lab"
    return LabVM(
        directory, {"PANTHER_STATE_DIR": str(base / "state"), "PANTHER_LAB_DIR": str(directory)}
    )


def end_lab(lab: LabVM) -> None:
    end_vm(lab.directory)
    cleanup_under(lab.directory.parent)
    for image in (lab.directory / "disk.img", lab.directory / "disk.img.new"):
        image.unlink(missing_ok=True)


class Started:
    """`panther lab boot --luks --tpm` running in the background: the installer VM, then the
    first boot, while the plain lab's tests run."""

    def __init__(self, lab: LabVM) -> None:
        self.lab = lab
        env = {**os.environ, "NO_COLOR": "1", **lab.env, "PYTHONPATH": str(REPO / "src")}
        argv = [
            sys.executable,
            "-m",
            "pantheros",
            "lab",
            "boot",
            str(lab.directory),
            "--luks",
            "--tpm",
        ]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )

    def result(self) -> subprocess.CompletedProcess[str]:
        out, err = self.proc.communicate(timeout=3600)
        self.lab.timings.setdefault("luks install and first boot", []).append(
            time.monotonic() - self.start
        )
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture(scope="module")
def luks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    started = Started(new_lab(tmp_path_factory.mktemp("luks")))
    try:
        yield started
    finally:
        started.stop()
        print("timings of the LUKS2 lab:", json.dumps(started.lab.timings))
        end_lab(started.lab)


@pytest.fixture(scope="module")
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabVM]:
    """`lab up`, a path persisted from the host side, `lab boot --level strict`; the LUKS2 lab
    starts first, in the background, when its test is to run too."""
    if any(item.name.startswith("test_luks") for item in request.session.items):
        request.getfixturevalue("luks")
    lab = new_lab(tmp_path_factory.mktemp("plain"))
    directory = lab.directory
    try:
        lab.panther("lab", "up", str(directory))
        (directory / "mnt" / PERSISTED.lstrip("/")).mkdir(parents=True)
        lab.panther("persist", "add", PERSISTED, "--lab", str(directory))
        booted = lab.boot("--level", "strict")
        assert "The lab's VM is up" in booted.stdout, booted.stdout + booted.stderr
        yield lab
    finally:
        print("timings of the shared lab:", json.dumps(lab.timings))
        end_lab(lab)


@pytest.fixture
def plain(request: pytest.FixtureRequest, shared: LabVM) -> Iterator[LabVM]:
    """The shared lab, booted; its console log printed when the test fails."""
    if shared.pid() is None:
        shared.boot()
    yield shared
    if request.node.stash.get(FAILED, False):
        shared.print_logs()


def fingerprint(lab: LabVM) -> str:
    """The host key the VM serves, as the lab's known_hosts recorded it at the first login."""
    lines = lab.files.known_hosts.read_text().splitlines()
    assert len(lines) == 1, lines
    return lines[0].split()[-1]


def old_root_names(lab: LabVM) -> list[str]:
    """Newest first, as `roots list` gives them."""
    return [root["name"] for root in lab.roots()]


TOP = 'd=$(mktemp -d) && mount -o subvolid=5,ro "$(findmnt -no SOURCE /persist | cut -d[ -f1)" "$d"'
# One SSH round trip for what each boot is checked for (a login costs seconds under TCG).
STATE = (
    "ls -d /junk-* 2>/dev/null; echo @@; cat {persisted}/data 2>/dev/null; echo @@;"
    " cat /persist/kept 2>/dev/null; echo @@; cat /etc/machine-id; echo @@;"
    " cat /run/pantheros/rollback.report; echo @@; panther roots list --json; echo @@;"
    " " + TOP + ' && ls -A "$d/old_roots/$(ls -1 "$d/old_roots" | sort | tail -n 1)";'
    ' umount "$d"; rmdir "$d"'
)


@dataclass
class BootState:
    junk: list[str]  # /junk-* in the root
    data: list[str]  # the persisted path's data file
    kept: list[str]  # /persist/kept
    machine_id: str
    report: str  # the boot step's report
    roots: list[str]  # old roots, newest first
    newest_old_root: list[str]  # what its top holds


def boot_state(lab: LabVM) -> BootState:
    parts = lab.root(STATE.format(persisted=PERSISTED)).split("@@\n")
    assert len(parts) == 7, parts
    return BootState(
        junk=parts[0].split(),
        data=parts[1].split(),
        kept=parts[2].split(),
        machine_id=parts[3].strip(),
        report=parts[4],
        roots=[r["name"] for r in json.loads(parts[5])["roots"]],
        newest_old_root=parts[6].split(),
    )


def old_root_files(lab: LabVM, name: str) -> list[str]:
    """The names at the top of an old root, read in the VM from its btrfs top level."""
    return lab.root(TOP + f' && ls -A "$d/old_roots/{name}"; umount "$d"; rmdir "$d"').split()


def test_audit_runs_inside_at_strict(plain: LabVM) -> None:
    """`panther audit` inside the VM booted at --level strict: the level's settings are in
    effect and checked live, every applicable check is evaluated, and all of them pass (what
    this kernel lacks is not applicable: docs/lab-boot.md)."""
    report = json.loads(plain.ssh("sudo panther audit --json", check=False))
    assert report["level"] == "strict"
    assert report["live"] is True
    findings = {f["id"]: f for f in report["findings"]}
    failed = {cid: f for cid, f in findings.items() if f["status"] == "fail"}
    assert failed == {}
    # What is skipped is what this kernel does not have (docs/lab-boot.md lists it), nothing
    # for want of evidence.
    skipped = {cid: f for cid, f in findings.items() if f["status"] == "skipped"}
    assert all(not f["applicable"] for f in skipped.values()), skipped
    assert "sysctl.kernel.io_uring_disabled" in skipped  # Linux 6.6's sysctl, on Debian's 6.1
    for cid in ("cmdline.lockdown", "cmdline.vsyscall", "cmdline.page_alloc.shuffle"):
        assert findings[cid]["by_effect"] is True, findings[cid]
    for area in ("sysctl", "cmdline", "module", "mount", "ssh", "firewall", "audit", "mac", "sudo"):
        assert any(f["area"] == area and f["status"] == "pass" for f in findings.values()), area
    assert findings["impermanence.persistence"]["status"] == "pass"


def test_ten_reboots_root_fresh_persist_and_credentials_kept(plain: LabVM) -> None:
    """Junk in /, data in a path persisted from the host side and in /persist, then ten
    `systemctl reboot`s from inside. Each boot: the junk is gone (and in the newest old root),
    the data is there, one more old root, the same host key (the client refuses a changed one),
    the same machine-id, and the login works."""
    lab = plain
    # The serial console answers Enter with the login prompt (stdin at its end: it leaves).
    console = lab.panther("lab", "console", str(lab.directory), input="\r", timeout=60)
    assert "login:" in console.stdout
    host_key = fingerprint(lab)
    machine_id = lab.ssh("cat /etc/machine-id").strip()
    assert len(machine_id) == 32
    # The credentials come from /persist, as bind mounts of its copies.
    mounted = lab.ssh("findmnt -rno TARGET,SOURCE")
    sources = dict(line.split(maxsplit=1) for line in mounted.splitlines())
    for path in ("/etc/machine-id", "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/authorized_keys.d"):
        assert sources[path].endswith(f"[/persist{path}]"), (path, sources.get(path))
    assert sources[PERSISTED].endswith(f"[/persist{PERSISTED}]")
    before = boot_state(lab)
    data, kept, roots = before.data, before.kept, before.roots
    for n in range(1, REBOOTS + 1):
        lab.root(f"echo junk > /junk-{n} && echo data-{n} >> {PERSISTED}/data")
        lab.root(f"echo kept-{n} >> /persist/kept && sync")
        data.append(f"data-{n}")
        kept.append(f"kept-{n}")
        lab.reboot_inside()
        state = boot_state(lab)
        assert state.junk == [], "the root was not rolled back"
        assert state.data == data
        assert state.kept == kept
        assert len(state.roots) == len(roots) + 1, (roots, state.roots)
        assert state.roots[1:] == roots, "an old root went missing"
        assert f"junk-{n}" in state.newest_old_root
        roots = state.roots
        assert state.machine_id == machine_id
        assert fingerprint(lab) == host_key
        assert "result=fresh" in state.report
    assert lab.ssh("whoami").strip() == "panther"


def test_power_cuts_during_the_boot_step_and_a_persist_write_lose_nothing(plain: LabVM) -> None:
    """QEMU killed (SIGKILL: what the guest had not written is lost) right after the boot step's
    exchange, then during a stream of synced writes to /persist; the next boots finish the step
    and keep every write that was synced before the cut."""
    lab = plain
    lab.root("echo before > /persist/before && echo junk > /junk-before && sync")
    roots = old_root_names(lab)
    lab.panther("lab", "poweroff", str(lab.directory))
    # The initramfs gets the boot step's test variant (its hooks; tests/bootstep_variant.py),
    # the lab's OS keeps panther's own build; the hook is asked for on the kernel command line.
    hang = f"systemd.setenv={bootstep_variant.HANG_AFTER_ENV}=exchange"
    lab.boot("--background", "--kernel-param", hang, env=bootstep_variant.env())
    lab.wait_for_log("pantheros-rollback: hanging after exchange")
    pid = lab.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert qemu.wait_gone(lab.files.pidfile, 30)
    lab.boot()
    assert lab.ssh("cat /persist/before").strip() == "before"
    assert lab.ssh("ls /junk-before", check=False) == ""
    assert "result=fresh" in lab.ssh("cat /run/pantheros/rollback.report")
    now = old_root_names(lab)
    assert now[1:] == roots, (roots, now)  # one more old root: the one cut half-way, finished
    assert "junk-before" in old_root_files(lab, now[0])
    # A writer that syncs each line, killed in the middle.
    lab.root(
        "nohup sh -c 'i=0; while [ $i -lt 100000 ]; do i=$((i+1)); echo $i >> /persist/stream;"
        " sync /persist/stream; echo $i > /persist/synced; sync /persist/synced; done'"
        " >/dev/null 2>&1 &"
    )
    time.sleep(10)
    synced = int(lab.ssh("cat /persist/synced").strip())
    assert synced > 0
    pid = lab.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert qemu.wait_gone(lab.files.pidfile, 30)
    lab.boot()
    lines = lab.ssh("cat /persist/stream").split()
    assert lines[:synced] == [str(i) for i in range(1, synced + 1)], "synced data was lost"
    assert lab.ssh("cat /persist/before").strip() == "before"
    assert "result=fresh" in lab.ssh("cat /run/pantheros/rollback.report")
    errors = lab.root("btrfs device stats /persist")
    assert all(line.split()[-1] == "0" for line in errors.splitlines()), errors


def _remove_blank(lab: LabVM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANTHER_STATE_DIR", lab.env["PANTHER_STATE_DIR"])
    machine = Machine.select(str(lab.directory))
    with machine.top_level() as top:
        btrfs.delete_subvolume(top / machine.manifest.storage.blank_snapshot)
        btrfs.sync(top)


def test_blank_missing_boot_dirty_says_so_and_fail_closed_stops_in_the_initrd(
    plain: LabVM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blank deleted: under boot-dirty the previous root boots and the login says so; the
    same lab switched to fail-closed stops in the initrd, before the root is mounted, and the
    VM powers off. (Last: the lab cannot roll back any more.)"""
    lab = plain
    lab.root("echo junk > /junk-dirty && sync")
    lab.panther("lab", "poweroff", str(lab.directory))
    _remove_blank(lab, monkeypatch)
    dirty = lab.boot()
    assert "NOT rolled back" in dirty.stderr
    assert lab.ssh("cat /junk-dirty").strip() == "junk"
    login = lab.panther("lab", "ssh", str(lab.directory), input="exit\n", check=False)
    assert "PantherOS: the root was NOT rolled back" in login.stderr
    lab.panther("lab", "poweroff", str(lab.directory))
    data = json.loads((lab.directory / "manifest.json").read_text())
    data["impermanence"]["fail_policy"] = "fail-closed"
    manifests.loads(json.dumps(data))
    (lab.directory / "manifest.json").write_text(json.dumps(data))
    stopped = lab.boot(check=False)
    assert stopped.returncode == 1
    assert "rollback failed: the blank snapshot root-blank is missing" in stopped.stderr
    log = lab.log()  # `lab boot` began a new console log
    assert "fail-closed: the boot stops here" in log
    assert "Switching root" not in log
    assert "initrd-switch-root" not in log
    assert lab.pid() is None


# Run in the VM as root: one SHA-256 entry appended to the UEFI forbidden-signature database
# (dbx), which the firmware measures into PCR 7 at the next boot. The lab's firmware has no
# Platform Key (setup mode, no Secure Boot enforced), so it takes the write unsigned; a dbx
# update is what changes PCR 7 on real machines too.
DBX_UPDATE = """
import hashlib, os, struct, uuid
g = lambda text: uuid.UUID(text).bytes_le
entry = g("5d6e8c7f-0c7a-4d0e-9f53-7b1f1cbd0a11") + hashlib.sha256(b"pantheros-lab").digest()
esl = g("c1c41626-504c-4092-aca9-41f936934328") + struct.pack("<III", 28 + 48, 0, 48) + entry
pkcs7 = g("4aafd29d-68df-49ee-8aa9-347d375665a7")
auth = bytes(16) + struct.pack("<IHH", 24, 0x0200, 0x0EF1) + pkcs7
path = "/sys/firmware/efi/efivars/dbx-d719b2cb-3d3a-4596-a3bc-dad00e67656f"
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
os.write(fd, struct.pack("<I", 0x27) + auth + esl)
os.close(fd)
"""


def test_luks_tpm_unlocks_unattended_and_asks_after_a_pcr_change(luks: Started) -> None:
    """`lab boot --luks --tpm` on a new directory (started in the background at the beginning):
    the installer VM lays out the LUKS2 disk (`panther disk format`, in a guest: this host has no
    device-mapper) and fills the blank; the first boot takes the passphrase at the console prompt
    (typed by `lab boot`), enrols PCR 7 and makes a recovery key shown once; the reboot unlocks
    unattended; after a dbx update (PCR 7 changes) the boot asks on the console, and the test
    answers there."""
    first = luks.result()
    lab = luks.lab
    assert first.returncode == 0, first.stdout + first.stderr
    assert "LUKS recovery key (shown once" in first.stdout
    recovery = lab.directory / "vm" / "luks-recovery-key"
    assert recovery.stat().st_mode & 0o777 == 0o600
    assert recovery.read_text().strip() in first.stdout
    assert lab.log().count(PROMPT) == 1
    dump = lab.root("cryptsetup luksDump /dev/disk/by-partlabel/pantheros")
    assert "systemd-tpm2" in dump
    assert "systemd-recovery" in dump
    assert lab.ssh("findmnt -no SOURCE /").startswith("/dev/mapper/cryptroot")
    assert lab.root("ls /persist/var/lib/pantheros-lab/ 2>/dev/null; true").split() == []
    start = lab.files.console_log.stat().st_size
    lab.reboot_inside()
    assert PROMPT not in lab.log(start), "the TPM2 did not unlock the reboot"

    lab.root(f"python3 -c {shlex.quote(DBX_UPDATE)}")
    before = lab.boot_id()
    start = lab.files.console_log.stat().st_size
    lab.ssh(shlex.join(["sudo", *in_a_second("reboot")]), check=False, timeout=60)
    lab.wait_for_log(PROMPT, start)
    assert "does not match stored policy digest" in lab.log(start)
    waiting = lab.boot(check=False)  # the VM runs; the prompt is for a person: it says so
    assert waiting.returncode == 5
    assert "the TPM2 did not unlock the root" in waiting.stderr
    passphrase = (lab.directory / "vm" / "luks-passphrase").read_text()
    type_on_console(lab.files.console, passphrase + "\r")
    lab.wait_for_log("Password query on /dev/ttyS0 finished", start)
    answered = lab.boot()  # the VM runs: this waits for SSH on the new boot
    assert "already running" in answered.stderr
    assert lab.boot_id() != before
    assert lab.ssh("findmnt -no SOURCE /").startswith("/dev/mapper/cryptroot")
