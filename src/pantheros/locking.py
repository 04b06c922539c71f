"""One writer per machine (invariant 8): commands that change a machine hold its lock.

The lock is an advisory `flock` on a file of the machine's own: `DIR/.lock` for a lab, and
`<state dir>/host.lock` (normally /run/pantheros/host.lock) for the running host. A second
command waits, saying so once on stderr, or with `wait=False` fails at once with a "busy" line.
The lock is re-entrant within one process, so a command that calls another's steps (`lab
reboot` runs the rollback, then mounts) takes it once and nests freely.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pantheros import ui
from pantheros.errors import ExitCode, PantherError

_held: dict[Path, int] = {}


class Busy(PantherError):
    """Another command holds the machine's lock and the caller asked not to wait."""

    exit_code = ExitCode.REFUSED


@contextlib.contextmanager
def exclusive(path: Path, *, what: str, wait: bool = True) -> Iterator[None]:
    """Hold the lock file at `path` (created 0600 if missing) for the duration."""
    path = Path(os.path.abspath(path))
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _acquire(path, what=what, wait=wait)
    try:
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
    finally:
        os.close(fd)


def _acquire(path: Path, *, what: str, wait: bool) -> int:
    """A descriptor holding the lock on the file that is at path now.

    `lab down --purge` deletes the lock file while holding it; a command that waited on the
    deleted file must not go on, so each attempt checks that path still names its file.
    """
    warned = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_NONBLOCK|O_NOCTTY: a FIFO or a terminal planted at path must not hang or capture.
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
        fd = os.open(path, flags, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PantherError(f"{path} is not a regular file: not a lock panther made")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if not wait:
                    raise Busy(f"{what} is busy: another panther command is changing it") from None
                if not warned:
                    ui.warn(f"waiting for another panther command to finish with {what} ...")
                    warned = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
