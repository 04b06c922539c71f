"""The first-boot state `panther install` sends with nixos-anywhere (`--extra-files`), staged in
a private directory.

What is staged is the manifest's first_boot (pantheros.impermanence.firstBoot): its directories
with their modes, the login users' password hashes (from a file or asked for, never echoed),
the SSH host keys (made here with ssh-keygen, so the operator knows the machine's key before it
first answers), the machine-id, and optional secrets keys (an age key for sops-nix or agenix).
All of it lies under /persist, which disko has mounted at /mnt/persist when nixos-anywhere
copies the tree there. nixos-anywhere extracts the tree with tar as root, keeping modes, every
file owned by root: an owner other than root is given with `--chown` where its ids are fixed.

The staging directory is private (0700) and removed whatever happens (the context manager).
"""

from __future__ import annotations

import getpass
import os
import re
import secrets
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from pantheros import process
from pantheros.errors import PantherError, UsageError
from pantheros.manifest import Manifest
from pantheros.manifest.models import FirstBootEntry

HOST_KEY = re.compile(r".*/ssh_host_([a-z0-9]+)_key(\.pub)?")
HOST_KEY_TYPES = ("ed25519", "rsa", "ecdsa")
# A crypt(5) hash as mkpasswd and NixOS's hashedPasswordFile take it, or a locked one.
CRYPT_HASH = re.compile(r"(\$[A-Za-z0-9]+(\$[^$:\s]*)+|![^:\s]*)")
MACHINE_ID = "/etc/machine-id"
AGE_KEY_PATH = "/persist/var/lib/sops-nix/key.txt"
Asker = Callable[[str], str]


@dataclass(frozen=True)
class Entry:
    """One path of the staged tree, as the target will have it."""

    path: str  # absolute, as the running system sees it (under /persist)
    kind: str  # "directory" | "file"
    mode: int
    user: str
    group: str
    uid: int | None
    gid: int | None
    source: str  # where its content comes from, for the plan
    content: str = ""  # password | host-key | host-key-public | machine-id | age-key
    login: str | None = None  # whose password hash

    @property
    def owner_fixed_elsewhere(self) -> bool:
        """Not root, with ids the installer cannot know: the first boot applies the owner."""
        return self.user != "root" and (self.uid is None or self.gid is None)

    @property
    def chown(self) -> str | None:
        """uid:gid for nixos-anywhere's --chown, when the owner is not root and known."""
        if self.uid is None or self.gid is None or (self.uid, self.gid) == (0, 0):
            return None
        return f"{self.uid}:{self.gid}"

    def describe(self) -> str:
        kind = "d" if self.kind == "directory" else "-"
        bits = stat.filemode(self.mode | (stat.S_IFDIR if self.kind == "directory" else 0))
        owner = f"{self.user}:{self.group}"
        return f"{kind}{bits[1:]} {owner:<12} {self.path}  {self.source}"


@dataclass
class Sources:
    """Where the secrets come from (files the user named; the rest is asked for)."""

    password_hash_files: dict[str, str] = field(default_factory=dict)  # login -> file
    disk_key_file: str | None = None
    age_key_file: str | None = None
    age_key_path: str = AGE_KEY_PATH


def _mode(entry: FirstBootEntry) -> int:
    return entry.mode_bits


def planned(manifest: Manifest, sources: Sources, host: str) -> list[Entry]:
    """The staged tree, in order (parents first), with where each file comes from. Refuses a
    required file it has no way to make."""
    persist = manifest.persist
    assert persist is not None, "checked with the plan"
    fb = manifest.first_boot
    entries: list[Entry] = []
    for d in fb.directories:
        later = d.user != "root" and (d.uid is None or d.gid is None)
        source = f"owner {d.user}:{d.group} applied at the first boot" if later else ""
        entries.append(Entry(d.path, "directory", _mode(d), d.user, d.group, d.uid, d.gid, source))
    for f in fb.files:
        found = HOST_KEY.fullmatch(f.path)
        login: str | None = None
        if f.login is not None:
            given = sources.password_hash_files.get(f.login)
            content, login = "password", f.login
            source = f"the password hash of {f.login}, " + (
                f"from {given}" if given else "asked for (never shown)"
            )
        elif found and found.group(1) in HOST_KEY_TYPES and not found.group(2):
            content = "host-key"
            source = f"the {found.group(1)} host key, made here (ssh-keygen)"
        elif found and found.group(1) in HOST_KEY_TYPES:
            content = "host-key-public"
            source = "its public half (printed as a known_hosts line)"
        elif f.path == f"{persist.mountpoint}{MACHINE_ID}":
            content, source = "machine-id", "a new machine id, made here"
        elif f.required:
            raise UsageError(
                f"host {host}: {f.path} ({f.what or 'required at the first boot'}) is required "
                "and panther install has no way to make it"
            )
        else:
            continue  # made at the first boot
        entries.append(
            Entry(f.path, "file", _mode(f), f.user, f.group, f.uid, f.gid, source, content, login)
        )
    if sources.age_key_file is not None:
        path = sources.age_key_path
        if not path.startswith(persist.mountpoint + "/"):
            raise UsageError(f"--age-key-path {path}: not on {persist.mountpoint}")
        source = f"the age key, from {sources.age_key_file}"
        entries.append(Entry(path, "file", 0o600, "root", "root", 0, 0, source, "age-key"))
    for e in entries:
        # nixos-anywhere's --chown is recursive: a directory given to someone holds only what
        # is theirs too.
        inside = [
            o
            for o in entries
            if o.path.startswith(e.path + "/") and (o.uid, o.gid) != (e.uid, e.gid)
        ]
        if e.chown and inside:
            raise UsageError(
                f"host {host}: {e.path} is staged for {e.user} but holds {inside[0].path} of "
                f"{inside[0].user}: nixos-anywhere's --chown would give that away"
            )
        if e.kind == "file" and e.owner_fixed_elsewhere:
            raise UsageError(
                f"host {host}: {e.path} belongs to {e.user}, whose uid is given only at the first "
                f"boot: set users.users.{e.user}.uid to stage it"
            )
    return _with_parents(entries, persist.mountpoint)


def _with_parents(entries: list[Entry], persist: str) -> list[Entry]:
    """entries with every missing parent directory below / (root 0755), parents first."""
    declared = {e.path: e for e in entries}
    result: dict[str, Entry] = {}

    def add_parents(path: str) -> None:
        parts = path.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:depth])
            if parent not in result and parent not in declared:
                source = "the persistent subvolume's root" if parent == persist else ""
                result[parent] = Entry(parent, "directory", 0o755, "root", "root", 0, 0, source)
            elif parent in declared and parent not in result:
                add_parents(parent)
                result[parent] = declared[parent]

    for e in entries:
        add_parents(e.path)
        result[e.path] = e
    return sorted(result.values(), key=lambda e: (e.path.count("/"), e.path))


@dataclass
class Staged:
    """The staged tree and the secret files beside it, in a private directory."""

    directory: Path
    tree: Path
    disk_key: Path | None = None
    known_hosts: list[str] = field(default_factory=list)


@contextmanager
def private_directory() -> Iterator[Path]:
    """A 0700 directory removed when the body ends, also on SIGTERM or SIGHUP (turned into
    the KeyboardInterrupt the command line handles), so no secret is left behind."""

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    directory = Path(tempfile.mkdtemp(prefix="panther-install-"))
    try:
        os.chmod(directory, 0o700)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=False)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _read_secret_file(path: str, what: str, limit: int = 64 * 1024) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UsageError(f"{what} {path}: cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise UsageError(f"{what} {path}: larger than {limit // 1024} KiB")
    return data


def read_password_hash(path: str, login: str) -> bytes:
    text = _read_secret_file(path, f"the password hash of {login}").decode("utf-8", "replace")
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1 or not CRYPT_HASH.fullmatch(lines[0].strip()):
        raise UsageError(
            f"the password hash of {login} in {path}: expected one crypt(5) hash line, as "
            "`mkpasswd -m yescrypt` prints it"
        )
    return lines[0].strip().encode() + b"\n"


def check_sources(sources: Sources) -> None:
    """Read every file the user named, so a bad one is refused before anything is asked."""
    for login, path in sources.password_hash_files.items():
        read_password_hash(path, login)
    if sources.disk_key_file:
        read_disk_key(sources.disk_key_file)
    if sources.age_key_file:
        _read_secret_file(sources.age_key_file, "--age-key")


def read_disk_key(path: str) -> bytes:
    data = _read_secret_file(path, "--disk-key")
    if b"\0" in data or not data.strip():
        raise UsageError(f"--disk-key {path}: a passphrase is text, not empty")
    return data


def hash_password(password: str) -> bytes:
    """password as a crypt(5) hash: yescrypt with mkpasswd (NixOS's default), else SHA-512
    with openssl. The password goes on stdin, never on a command line."""
    if shutil.which("mkpasswd"):
        argv = ["mkpasswd", "--method=yescrypt", "--stdin"]
    else:
        argv = ["openssl", "passwd", "-6", "-stdin"]
    out = process.run(argv, check=True, input=password + "\n").stdout.strip()
    if not CRYPT_HASH.fullmatch(out):
        raise PantherError(f"{argv[0]} gave no password hash")
    return out.encode() + b"\n"


def ask_twice(what: str, ask: Asker) -> str:
    first = ask(f"{what}: ")
    if not first:
        raise UsageError(f"{what}: empty")
    if ask(f"{what} (again): ") != first:
        raise UsageError(f"{what}: the two entries differ (nothing was installed)")
    return first


def terminal_asker() -> Asker:
    """getpass on the terminal; refuses when there is none to ask on."""

    def ask(prompt: str) -> str:
        try:
            with open("/dev/tty", "rb"):
                pass
        except OSError:
            raise UsageError(
                f"{prompt.rstrip(': ')}: no terminal to ask on (give it in a file: see --help)"
            ) from None
        return getpass.getpass(prompt)

    return ask


def stage(
    directory: Path,
    entries: list[Entry],
    sources: Sources,
    *,
    host: str,
    address: str,
    luks: bool,
    ask: Asker,
) -> Staged:
    """Make the tree in directory (private) as entries say; the disk key beside it."""
    tree = directory / "tree"
    tree.mkdir(mode=0o700)
    os.chmod(tree, 0o755)  # noqa: S103 - the tree's root becomes the target's /mnt
    staged = Staged(directory=directory, tree=tree)
    publics: dict[str, bytes] = {}
    for e in entries:
        target = tree / e.path.lstrip("/")
        if e.kind == "directory":
            target.mkdir(mode=0o700)
            os.chmod(target, e.mode)
            continue
        if e.path in publics:
            _write(target, publics[e.path], e.mode)
            continue
        if e.content == "password":
            assert e.login is not None
            given = sources.password_hash_files.get(e.login)
            data = (
                read_password_hash(given, e.login)
                if given
                else hash_password(ask_twice(f"Password of {e.login} on {host}", ask))
            )
            _write(target, data, e.mode)
        elif e.content == "host-key":
            found = HOST_KEY.fullmatch(e.path)
            assert found is not None
            kind = found.group(1)
            made = directory / f"hostkey-{kind}"
            process.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"root@{host}", "-f", str(made)],
                check=True,
            )
            _write(target, made.read_bytes(), e.mode)
            public = Path(f"{made}.pub").read_bytes()
            publics[f"{e.path}.pub"] = public
            key_type, key = public.decode().split()[:2]
            staged.known_hosts.append(f"{address} {key_type} {key}")
        elif e.content == "machine-id":
            _write(target, (secrets.token_hex(16) + "\n").encode(), e.mode)
        elif e.content == "age-key":
            assert sources.age_key_file is not None
            _write(target, _read_secret_file(sources.age_key_file, "--age-key"), e.mode)
        else:
            raise PantherError(f"no way to stage {e.path}: its key is not made here")
    if luks:
        if sources.disk_key_file:
            data = read_disk_key(sources.disk_key_file)
        else:
            data = ask_twice(f"LUKS passphrase for the disk of {host}", ask).encode()
        staged.disk_key = directory / "disk.key"
        _write(staged.disk_key, data, 0o600)
    return staged
