"""Reads inside a machine's tree, chroot-style (safety invariant 7).

An offline tree (`--root`, `--lab`) is full of absolute symlinks that are meant for the machine
itself: NixOS links `/etc/ssh/sshd_config` through `/etc/static` into `/nix/store`. Every lookup
therefore goes through openat2(2) with RESOLVE_IN_ROOT, which the kernel resolves as if the
tree were `/`: an absolute link is re-rooted at the tree and `..` stops at its top. Only
regular files are read, opened without blocking and never beyond a size cap; a FIFO, a device,
a directory or a missing file makes the read return None and records why, so the check that
wanted it is skipped with that reason instead of hanging or reading the host.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pantheros import files
from pantheros.files import kind

MAX_BYTES = 4 << 20  # larger than any configuration file the checks read
STORE = "/nix/store/"


@dataclass
class Tree:
    """The files of one machine, whose `/` is `base` on this host."""

    base: Path
    problems: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        real = Path(os.path.realpath(self.base))
        self._prefix = ""
        if real.parts[1:3] == ("nix", "store") and len(real.parts) > 3:
            # A system built into this host's store (`--root ./result`): its links lead to its
            # closure in the same store, so it resolves from the host's / and must stay there.
            self._prefix = str(real).lstrip("/") + "/"
            real = Path("/")
        self._root = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        # The running system needs no containment, and some container sandboxes refuse openat2.
        self._plain = not self._prefix and os.path.samestat(os.fstat(self._root), os.stat("/"))

    def close(self) -> None:
        os.close(self._root)

    def _open(self, rel: str, flags: int) -> int:
        """An fd for rel (as the machine sees it) resolved inside the tree; raises OSError."""
        rel = (self._prefix + rel.lstrip("/")).rstrip("/") or "."
        # openat2 rejects any flag beside O_PATH but these three.
        flags |= os.O_CLOEXEC if flags & os.O_PATH else os.O_CLOEXEC | os.O_NOCTTY
        if self._plain:
            return os.open(rel, flags, dir_fd=self._root)
        fd = files.openat2(
            self._root, rel, flags, files.RESOLVE_IN_ROOT | files.RESOLVE_NO_MAGICLINKS
        )
        if self._prefix and not os.readlink(f"/proc/self/fd/{fd}").startswith(STORE):
            os.close(fd)
            raise OSError(errno.EXDEV, "leaves the Nix store", rel)
        return fd

    def stat(self, rel: str) -> os.stat_result | None:
        """stat of rel inside the tree, or None when it does not resolve."""
        try:
            fd = self._open(rel, os.O_PATH)
        except OSError:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        return self.stat(rel) is not None

    def is_dir(self, rel: str) -> bool:
        st = self.stat(rel)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def read_bytes(self, rel: str, limit: int = MAX_BYTES) -> bytes | None:
        """The content of the regular file rel, or None (the reason is in `problems`)."""
        try:
            pathfd = self._open(rel, os.O_PATH)
        except OSError as exc:
            self.problems[rel] = _missing(exc)
            return None
        try:
            st = os.fstat(pathfd)
            if not stat.S_ISREG(st.st_mode):
                self.problems[rel] = f"{kind(st.st_mode)}, not a regular file"
                return None
            # Reopening the O_PATH descriptor reads exactly the inode that was checked.
            fd = os.open(f"/proc/self/fd/{pathfd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            self.problems[rel] = _missing(exc)
            return None
        finally:
            os.close(pathfd)
        try:
            chunks = []
            size = 0
            while size <= limit:
                chunk = os.read(fd, min(1 << 16, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        except OSError as exc:
            self.problems[rel] = _missing(exc)
            return None
        finally:
            os.close(fd)
        if size > limit:
            self.problems[rel] = f"larger than {limit // (1 << 20)} MiB"
            return None
        return b"".join(chunks)

    def read(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else data.decode(errors="replace")

    def why(self, rel: str) -> str:
        """Why the last read of rel returned None, as '/etc/shadow: a FIFO, ...'."""
        return f"/{rel.lstrip('/')}: {self.problems.get(rel, 'not read')}"

    def listdir(self, rel: str) -> list[str]:
        """Names in the directory rel (resolved inside the tree), sorted; [] when none."""
        try:
            fd = self._open(rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK)
        except OSError:
            return []
        try:
            return sorted(os.listdir(fd))
        finally:
            os.close(fd)

    def files(self, directory: str, suffix: str) -> list[str]:
        """Paths (as the machine sees them) of the entries in directory ending with suffix."""
        return [f"{directory}/{n}" for n in self.listdir(directory) if n.endswith(suffix)]


def _missing(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "missing"
    if exc.errno == errno.EXDEV:
        return "a link that leaves the tree"
    if exc.errno == errno.ELOOP:
        return "too many levels of symlinks"
    return exc.strerror or str(exc)
