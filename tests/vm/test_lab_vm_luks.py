"""`panther lab boot --luks --tpm`: a LUKS2 lab laid out by the installer VM, a TPM2 enrolled at
its first boot, unattended unlocks, and the passphrase asked when the measured state changes."""

from __future__ import annotations

import shlex
import socket
import time

import pytest

from tests.vm.labvm import LabVM

pytestmark = [pytest.mark.root, pytest.mark.vm]

PROMPT = "Please enter passphrase"


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


def test_luks_tpm_unlocks_unattended_and_asks_after_a_pcr_change(lab: LabVM) -> None:
    """`lab boot --luks --tpm` on a new directory: the installer VM lays out the LUKS2 disk
    (`panther disk format`, in a guest: this host has no device-mapper) and fills the blank;
    the first boot takes the passphrase at the console prompt (typed by `lab boot`), enrols
    PCR 7 and makes a recovery key shown once; the reboot unlocks unattended; after a dbx update
    (PCR 7 changes) the boot asks on the console, and the test answers there."""
    first = lab.boot("--luks", "--tpm")
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
    assert "enrolled already" not in lab.log(start), "the enrolment unit ran again"

    lab.root(f"python3 -c {shlex.quote(DBX_UPDATE)}")
    before = lab.boot_id()
    start = lab.files.console_log.stat().st_size
    lab.ssh("sudo systemctl reboot", check=False, timeout=60)
    lab.wait_for_log(PROMPT, start)
    assert "does not match stored policy digest" in lab.log(start)
    passphrase = (lab.directory / "vm" / "luks-passphrase").read_text()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as console:
        console.connect(str(lab.files.console))
        console.sendall(passphrase.encode() + b"\r")
        time.sleep(1)
    answered = lab.boot()  # the VM runs: this waits for SSH on the new boot
    assert "already running" in answered.stderr
    assert lab.boot_id() != before
    assert lab.ssh("findmnt -no SOURCE /").startswith("/dev/mapper/cryptroot")
