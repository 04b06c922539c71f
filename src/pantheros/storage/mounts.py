"""Mounting: mount and unmount, private mount namespaces, the top-level mount every tool uses,
and where panther keeps its runtime state."""

from __future__ import annotations

import contextlib
import ctypes
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pantheros import process
from pantheros.errors import NotRoot, PantherError

CLONE_NEWNS = 0x00020000


def state_dir() -> Path:
    """Runtime state (mount records, private mounts): /run/pantheros unless overridden."""
    return Path(os.environ.get("PANTHER_STATE_DIR", "/run/pantheros"))


def require_root(action: str) -> None:
    if os.geteuid() != 0:
        raise NotRoot(f"{action} needs root (run it with sudo)")


def mount(
    source: str | int, target: str | Path | int, options: list[str], fstype: str | None = None
) -> None:
    """mount(8). Each option must be one option: nothing in it that mount(8) would read as
    the start of another (a comma) or as quoting, so no name can add options of its own.

    A source or target given as a descriptor (O_PATH, opened without following a symlink:
    pantheros.files.open_beneath) is mounted exactly: mount(8) gets /proc/self/fd/N and does
    not canonicalize it, so the kernel follows the descriptor, not a path that may have been
    swapped for a symlink since it was checked."""
    for option in options:
        if not option or any(c in option for c in ",\"'\\\0\n"):
            raise PantherError(f"refusing to mount with the option {option!r}: not one option")
    if isinstance(source, str) and not source.startswith("/"):
        # A device or a directory: never read as an option.
        raise PantherError(f"refusing to mount {source!r}: not an absolute path")
    fds = tuple(fd for fd in (source, target) if isinstance(fd, int))
    argv = ["mount", "--no-canonicalize"] if fds else ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if options:
        argv += ["-o", ",".join(options)]
    where = [
        f"/proc/self/fd/{what}" if isinstance(what, int) else os.path.abspath(what)
        for what in (source, target)
    ]
    process.run([*argv, *where], check=True, pass_fds=fds)


def unmount(target: str | Path) -> None:
    process.run(["umount", str(target)], check=True)


def _namespace_call(name: str, *args: int) -> None:
    # os.unshare and os.setns arrive with Python 3.12; libc has them on every Linux.
    function = getattr(os, name, None)
    if function is not None:
        function(*args)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


# The mount namespaces this process came from, innermost last (see private_namespace).
_outer_namespaces: list[int] = []


def _join(namespace: int, cwd: int) -> None:
    _namespace_call("setns", namespace, CLONE_NEWNS)
    os.fchdir(cwd)  # joining a mount namespace moves the working directory to /


@contextmanager
def private_namespace() -> Iterator[None]:
    """Run the body in a mount namespace of this process's own, then return to the original.

    A mount made in the body is seen by this process and its children only, and the kernel
    removes it with the namespace when the process ends: a SIGKILL cannot leak it. A mount
    the machine must keep (a persist bind mount) is made inside `host_namespace()`.
    """
    original = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _namespace_call("unshare", CLONE_NEWNS)
        _outer_namespaces.append(original)
        try:
            # Slave: a mount made here never propagates back to the host, and the host's
            # unmounts reach here, so this namespace never keeps a copy of a mount the machine
            # let go (a deletion looks at every mount namespace, D81).
            process.run(["mount", "--make-rslave", "/"], check=True)
            yield
        finally:
            _outer_namespaces.pop()
            _join(original, cwd)
    finally:
        os.close(cwd)
        os.close(original)


@contextmanager
def host_namespace() -> Iterator[None]:
    """Run the body in the namespace panther started in, also from inside private_namespace:
    for mounts and unmounts the machine must see (the top level's private mount is not
    visible there)."""
    if not _outer_namespaces:
        yield
        return
    private = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _join(_outer_namespaces[0], cwd)
        try:
            yield
        finally:
            _join(private, cwd)
    finally:
        os.close(cwd)
        os.close(private)


@contextmanager
def top_level_mount(device: str, *, readonly: bool = False) -> Iterator[Path]:
    """Mount device's btrfs top level (subvolid=5) at a private directory for the duration.

    The mount lives in a private mount namespace (see private_namespace): no other process
    sees it, and a killed panther leaves no mount behind. The directory is removed with rmdir
    only, so it is never emptied; one left by a killed run is removed by the next.
    noatime: looking at a fresh root must not change it.
    """
    base = state_dir() / "top"
    base.mkdir(parents=True, exist_ok=True)
    _remove_dead_directories(base)
    directory = Path(tempfile.mkdtemp(prefix=f"top-{os.getpid()}-", dir=base))
    options = ["subvolid=5", "noatime"] + (["ro"] if readonly else [])
    try:
        with private_namespace():
            mount(device, directory, options, fstype="btrfs")
            try:
                yield directory
            finally:
                unmount(directory)
    finally:
        directory.rmdir()


def _remove_dead_directories(base: Path) -> None:
    """rmdir the empty mount directories of panther processes that no longer run."""
    for entry in base.iterdir():
        parts = entry.name.split("-")
        if len(parts) != 3 or parts[0] != "top" or not parts[1].isdigit():
            continue
        try:
            os.kill(int(parts[1]), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                entry.rmdir()
