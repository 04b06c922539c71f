"""Programs panther ships as C source and runs as root: where they are built, and whether what
is there may be run.

The Nix package builds them and its wrapper names where (an environment variable per program
set); elsewhere each is compiled once from the shipped source into a cache directory keyed by
the hash of what it is built from, and placed there atomically (a concurrent build wins). What
is run as root is checked before every run: owned by root (or by the user running panther) and
writable by nobody else, up to /.
"""

from __future__ import annotations

import os
import stat

TYPE_CHECKING = False  # typing is not loaded for this
if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# os alone at the top: the audit's walk finds its walker here before the rest of panther has
# loaded (pantheros.audit.walkstart); what builds one is loaded when it builds.


def cache_root() -> str:
    override = os.environ.get("PANTHER_CACHE_DIR")
    if override:
        return override
    if os.geteuid() == 0:
        return "/var/cache/pantheros"
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(home, "pantheros")


def unsafe_part(path: str | Path) -> str | None:
    """Why path cannot be run as root, or None: it and every directory up to / must be owned by
    root (or by the user running panther) and writable by nobody else. A directory others may
    write is accepted only with the sticky bit and owned by root (/tmp, /nix/store): nobody else
    can then rename or remove what lies in it."""
    uid = os.geteuid()
    real = part = os.path.realpath(path)
    while True:
        try:
            st = os.lstat(part)
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        if st.st_uid not in (0, uid):
            return f"{part} is owned by uid {st.st_uid}"
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not (part != real and st.st_mode & stat.S_ISVTX and st.st_uid == 0):
            return f"{part} is writable by {'its group' if shared & stat.S_IWGRP else 'others'}"
        if part == "/":
            return None
        part = os.path.dirname(part)


def checked(directory: str | Path, *names: str) -> tuple[str, str | None]:
    """The directory resolved, and why it or a name in it cannot be run as root (None: each
    can). What is run is named by the resolved directory, as checked: a symlink on the way to
    it, in a directory a user owns, could be swapped after the check."""
    real = os.path.realpath(directory)
    for part in (real, *(os.path.join(real, name) for name in names)):
        why = unsafe_part(part)
        if why is not None:
            return real, why
    return real, None


def digest(*sources: str | Path) -> str:
    """The cache key of what is built from these files."""
    import hashlib

    contents = []
    for source in sources:
        with open(source, "rb") as f:
            contents.append(f.read())
    return hashlib.sha256(b"\0".join(contents)).hexdigest()[:16]


def compile_c(source: Path, output: Path, *flags: str, why: str) -> None:
    """Compile one C file to output (flags: beyond -O2 -Wall); `why` names it when no compiler."""
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        from pantheros.errors import ToolMissing

        raise ToolMissing(f"required tool not found: cc, to build {why} (gcc)")
    from pantheros import process  # loaded only to compile: the audit's walk starts without it

    process.run([compiler, "-O2", "-Wall", *flags, "-o", str(output), str(source)], check=True)


def build_once(dest: Path, fill: Callable[[Path], None], done: str) -> Path:
    """The directory dest, made by fill(staging) unless dest/done already exists; renamed into
    place whole, so a reader sees all of it or nothing (a concurrent build wins)."""
    if (dest / done).is_file():
        return dest
    import shutil
    import tempfile
    from pathlib import Path

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        fill(staging)  # mkdtemp made the directory 0700: the owner's alone
        try:
            os.rename(staging, dest)
        except OSError:
            if not (dest / done).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest
