"""What the lab machine's boot makes when its persistent storage lacks it, as NixOS's would.

On a PantherOS host, the first boot writes the machine-id (systemd), the SSH host keys (sshd's
key generation) and the state directories (activation, systemd) through the bind mounts into
persistent storage. The lab boots no services, so its boot makes them itself: the persistent
copy of each declared entry owned by root that has none yet. A directory is made with its mode;
a file only when its content is known (the machine-id, an SSH host key pair); any other file is
left for `panther persist list` to show as missing. Nothing that exists is touched, and nothing
is made through a symlink (an entry whose way into persistent storage has one is skipped).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

from pantheros import process, ui
from pantheros.errors import PantherError
from pantheros.fsutil import resolve_inside
from pantheros.manifest import Manifest
from pantheros.manifest.models import PersistenceEntry

MACHINE_ID = "/etc/machine-id"
HOST_KEY = re.compile(r"/etc/ssh/ssh_host_([a-z0-9]+)_key(\.pub)?")


def make_missing(manifest: Manifest, root: Path) -> list[str]:
    """Make the missing persistent copies of the manifest's entries in the machine at root;
    the paths made, as the machine sees them."""
    persist = manifest.persist
    if persist is None:
        return []
    persist_root = root / persist.mountpoint.lstrip("/")
    made = []
    for entry in manifest.persistence:
        copy = persist_root / entry.path.lstrip("/")
        if os.path.lexists(copy) or (entry.user, entry.group) != ("root", "root"):
            continue
        try:
            if resolve_inside(persist_root, entry.path) != entry.path:
                raise PantherError("a symlink on its way in persistent storage")
            if _make(entry, copy):
                made.append(entry.path)
        except (PantherError, OSError) as exc:
            ui.warn(f"{entry.path}: not made at boot: {exc}")
    return made


def _make(entry: PersistenceEntry, copy: Path) -> bool:
    mode = int(entry.mode, 8)
    copy.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "directory":
        copy.mkdir()
        os.chmod(copy, mode)
        return True
    if entry.path == MACHINE_ID:
        _write_new(copy, f"{uuid.uuid4().hex}\n".encode(), mode)
        return True
    key = HOST_KEY.fullmatch(entry.path)
    if key is None:
        return False
    private = copy.with_suffix("") if key.group(2) else copy
    _host_key(key.group(1), private, copy, mode)
    return True


def _write_new(path: Path, content: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, content)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _host_key(kind: str, private: Path, target: Path, mode: int) -> None:
    """target, one half of a host key pair, as sshd's key generation makes it: a new pair when
    the private key is missing too, else the public half derived from the private one."""
    public = Path(f"{private}.pub")
    if os.path.lexists(private):
        derived = process.run(["ssh-keygen", "-y", "-f", str(private)], check=True).stdout
        _write_new(public, derived.encode(), mode)
        return
    staging = Path(tempfile.mkdtemp(prefix=".pantheros-key.", dir=private.parent))
    try:
        made = staging / private.name
        argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "", "-f", str(made)]
        process.run(argv, check=True)
        for half, default in ((private, 0o600), (public, 0o644)):
            source = made if half == private else Path(f"{made}.pub")
            os.chmod(source, mode if half == target else default)
            if not os.path.lexists(half):
                os.rename(source, half)
    finally:
        shutil.rmtree(staging)
