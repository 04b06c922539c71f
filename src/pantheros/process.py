"""The single runner through which every external command goes.

Every argv is logged at debug level (`panther -v` shows them). `check` has no default: each
caller decides whether a non-zero exit is an error. Failures become typed errors that the
command line turns into one clear line.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO

from pantheros.errors import CommandFailed, ToolMissing

log = logging.getLogger(__name__)

# Which Debian package provides a tool, so "missing tool" can say how to fix it.
PACKAGES: Mapping[str, str] = {
    "btrfs": "btrfs-progs",
    "mkfs.btrfs": "btrfs-progs",
    "cryptsetup": "cryptsetup-bin",
    "sgdisk": "gdisk",
    "mkfs.vfat": "dosfstools",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "partx": "util-linux",
    "wipefs": "util-linux",
    "blkid": "util-linux",
    "lsblk": "util-linux",
    "ssh": "openssh-client",
    "nix": "nix-bin",
}


def require(tool: str) -> str:
    """Return the path of `tool` or raise ToolMissing with the package that provides it."""
    found = shutil.which(tool)
    if found is None:
        package = PACKAGES.get(tool)
        hint = f" (install the {package} package)" if package else ""
        raise ToolMissing(f"required tool not found: {tool}{hint}")
    return found


def run(
    argv: Sequence[str],
    *,
    check: bool,
    input: str | bytes | None = None,
    capture: bool = True,
    pass_stderr: bool = False,
    env: Mapping[str, str] | None = None,
    errors: str = "strict",
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[str]:
    """Run argv and return the completed process; raise CommandFailed when check is set.

    `capture` collects stdout and stderr; `pass_stderr` leaves stderr on ours (a tool whose
    messages are for the user, whose stdout is for us). `errors` is how undecodable output is
    decoded ("surrogateescape" keeps file names exact). `pass_fds`: descriptors the command
    inherits (a path it opens as /proc/self/fd/N).
    """
    args = list(argv)
    require(args[0])
    log.debug("run: %s", " ".join(args))
    full_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            args,
            check=False,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture and not pass_stderr else None,
            env=full_env,
            text=True,
            errors=errors,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise CommandFailed(args, -1, str(exc)) from exc
    if proc.returncode != 0:
        log.debug("exit %d: %s", proc.returncode, (proc.stderr or "").strip())
        if check:
            raise CommandFailed(args, proc.returncode, proc.stderr or "")
    return proc


@contextmanager
def stream(argv: Sequence[str]) -> Iterator[IO[bytes]]:
    """Run argv and yield its stdout as a binary stream; a non-zero exit raises at the end."""
    args = list(argv)
    require(args[0])
    log.debug("run: %s", " ".join(args))
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=1 << 20)
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        yield proc.stdout
        # Whatever the reader left unread is drained, so the writer never blocks on a full pipe.
        while proc.stdout.read(1 << 16):
            pass
    finally:
        proc.stdout.close()
        stderr = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        returncode = proc.wait()
    if returncode != 0:
        log.debug("exit %d: %s", returncode, stderr.strip())
        raise CommandFailed(args, returncode, stderr)


def started(argv: Sequence[str]) -> None:
    """Log a command started without this module (pantheros.audit.walkstart: before logging or
    this module had loaded), as run() logs its own."""
    log.debug("run: %s", " ".join(argv))


def start(
    argv: Sequence[str],
    *,
    stdin: int | IO[bytes] = subprocess.PIPE,
    stdout: int | IO[bytes] = subprocess.PIPE,
    stderr: int | IO[bytes] = subprocess.PIPE,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start argv without waiting for it, for a caller that drives it itself (a deadline, an
    interruption) and waits for it; logged like run(). Pipes by default: a caller that does not
    read one passes a file instead (a pipe left unread would stop the command). `new_session`:
    its own process group, which a Ctrl-C on the terminal does not reach, so the caller decides
    how it ends."""
    args = list(argv)
    require(args[0])
    log.debug("run: %s", " ".join(args))
    try:
        return subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=new_session
        )
    except OSError as exc:
        raise CommandFailed(args, -1, str(exc)) from exc
