"""What the lab VM's own units run inside it (`python3 -m pantheros.commands.lab_guest ACTION`).

Not a `panther` command: the lab's Debian runs these at boot, where NixOS's modules would do the
same work (pantheros.lab.guestos names the units).

- `persistence`: the SSH host key, made in /persist at the first boot, then the bind mounts of
  every persisted path the machine's manifest declares (what impermanence does at boot).
- `enroll-tpm2`: on a LUKS2 lab with a TPM2, once: enrol PCR 7, make a recovery key (left in
  /run for `lab boot` to keep and show once), drop the installer's enrolment key.
- `install`: in the LUKS installer VM: `panther disk format` the target, then lay the OS into
  its blank.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import secrets
import subprocess
import sys
from pathlib import Path

from pantheros import manifest as manifests
from pantheros import process, ui
from pantheros.errors import PantherError
from pantheros.fsutil import resolve_inside
from pantheros.lab import guestos
from pantheros.machine import Machine
from pantheros.state.persist.hostfile import declared
from pantheros.state.persist.location import where_of
from pantheros.state.persist.mounting import apply
from pantheros.storage import luks, mounts

HOST_KEY = "etc/ssh/ssh_host_ed25519_key"
ENROLL_KEY = guestos.ENROLL_KEY
RECOVERY_KEY = Path("/run/pantheros/lab/recovery-key")
INSTALL = Path("/etc/pantheros/lab/install.json")
RECOVERY_PATTERN = re.compile(r"\b[cbdefghijklnrtuv]{8}(?:-[cbdefghijklnrtuv]{8}){7}\b")


def persistence() -> int:
    machine = Machine.select(None)
    persist = machine.manifest.persist
    assert persist is not None
    key = machine.host_path(persist.mountpoint) / HOST_KEY
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        key.with_name(key.name + ".pub").unlink(missing_ok=True)
        process.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True
        )
        print(f"pantheros-lab: made the SSH host key in {key}")
    for entry in declared(machine):
        where = where_of(machine, entry.path)
        # impermanence makes a declared directory's persistent copy when there is none yet.
        if entry.kind == "directory" and not os.path.lexists(where.copy):
            if resolve_inside(where.persist_root, entry.path) != entry.path:
                print(f"pantheros-lab: {where.copy}: a symlink on its way; not made")
                continue
            where.copy.mkdir(parents=True)
            os.chown(where.copy, pwd.getpwnam(entry.user).pw_uid, grp.getgrnam(entry.group).gr_gid)
            where.copy.chmod(int(entry.mode, 8))
    count = apply(machine)
    print(f"pantheros-lab: {count} persistent path(s) bind-mounted")
    return 0


def _luks_device(manifest: manifests.Manifest) -> str:
    return f"/dev/disk/by-partlabel/{manifest.storage.partition_label}"


def _tokens(device: str) -> list[str]:
    out = process.run(["cryptsetup", "luksDump", "--dump-json-metadata", device], check=True)
    metadata = json.loads(out.stdout)
    return [str(t.get("type")) for t in metadata.get("tokens", {}).values()]


def enroll_tpm2() -> int:
    machine = Machine.select(None)
    device = _luks_device(machine.manifest)
    if "systemd-tpm2" in _tokens(device):
        print("pantheros-lab: the TPM2 is enrolled already: nothing to do")
        return 0
    persist = machine.manifest.persist
    assert persist is not None
    key = machine.host_path(persist.mountpoint) / ENROLL_KEY
    if not key.exists():
        raise PantherError(f"no enrolment key at {key}: enrol by hand (systemd-cryptenroll)")
    unlock = f"--unlock-key-file={key}"
    process.run(
        ["systemd-cryptenroll", unlock, "--tpm2-device=auto", "--tpm2-pcrs=7", device],
        check=True,
    )
    made = process.run(["systemd-cryptenroll", unlock, "--recovery-key", device], check=True)
    found = RECOVERY_PATTERN.search(made.stdout + made.stderr)
    if found is None:
        raise PantherError("systemd-cryptenroll made a recovery key, but printed none that reads")
    RECOVERY_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(RECOVERY_KEY, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(found.group(0) + "\n")
    process.run(["cryptsetup", "luksRemoveKey", "--key-file", str(key), device], check=True)
    with open(key, "r+b") as f:
        f.write(secrets.token_bytes(max(64, os.fstat(f.fileno()).st_size)))
        f.flush()
        os.fsync(f.fileno())
    key.unlink()
    print(
        "pantheros-lab: enrolled the TPM2 (PCR 7); made a recovery key; dropped the enrolment key"
    )
    return 0


def install() -> int:
    """Lay out the target disk with `panther disk format` (the real command), open it, and lay
    the OS (the tarball on its own disk) into its blank; add the enrolment key for a TPM2."""
    plan = json.loads(INSTALL.read_text())
    target, tarball = plan["target"], plan["tarball"]
    manifest_path = Path("/run/pantheros-lab/manifest.json")
    key_path = Path("/run/pantheros-lab/passphrase")
    manifest_path.parent.mkdir(mode=0o700, exist_ok=True)
    manifest_path.write_text(json.dumps(plan["manifest"]))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(plan["passphrase"])  # no newline: what a person types at the prompt
    print("pantheros-lab-install: panther disk format", flush=True)
    subprocess.run(
        [guestos.PANTHER, "disk", "format", "--manifest", str(manifest_path), target,
         "--key-file", str(key_path), "--yes-wipe"],
        check=True,
    )  # fmt: skip
    manifest = manifests.load(manifest_path)
    mapping = manifest.storage.luks
    assert mapping is not None
    main = f"{target}2" if manifest.storage.esp else f"{target}1"
    secret = luks.Secret(key_file=str(key_path))
    luks.open_mapping(main, mapping.name, secret, mapping.allow_discards)
    try:
        with mounts.top_level_mount(mapping.mapper_path) as top:
            print("pantheros-lab-install: laying the OS into the blank", flush=True)
            guestos.lay_in(top, manifest, tarball)
            persist = manifest.persist
            assert persist is not None
            if plan.get("tpm2"):
                enroll = top / persist.name / ENROLL_KEY
                enroll.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(enroll, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(secrets.token_bytes(64))
                process.run(
                    ["cryptsetup", "luksAddKey", "--key-file", str(key_path), main, str(enroll)],
                    check=True,
                )
    finally:
        luks.close_mapping(mapping.name, target)
    print(guestos.INSTALL_DONE, flush=True)
    return 0


ACTIONS = {"persistence": persistence, "enroll-tpm2": enroll_tpm2, "install": install}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in ACTIONS:
        ui.info(f"usage: python3 -m pantheros.commands.lab_guest {'|'.join(ACTIONS)}")
        return 2
    try:
        return ACTIONS[argv[0]]()
    except (PantherError, OSError, subprocess.CalledProcessError) as exc:
        print(f"pantheros-lab: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
