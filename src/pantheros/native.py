"""Programs panther ships as C source and runs as root: where they are built, and whether what
is there may be run.

The Nix package builds them and its wrapper names where (an environment variable per program
set); elsewhere each is compiled once from the shipped source into a cache directory keyed by
the hash of what it is built from, and placed there atomically (a concurrent build wins). What
is run as root is checked before every run: owned by root (or by the user running panther) and
writable by nobody else, up to /.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from pantheros.errors import ToolMissing


def cache_root() -> Path:
    override = os.environ.get("PANTHER_CACHE_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/pantheros")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pantheros"


def unsafe_part(path: Path) -> str | None:
    """Why path cannot be run as root, or None: it and every directory up to / must be owned by
    root (or by the user running panther) and writable by nobody else. A directory others may
    write is accepted only with the sticky bit and owned by root (/tmp, /nix/store): nobody else
    can then rename or remove what lies in it."""
    uid = os.geteuid()
    real = Path(os.path.realpath(path))
    for part in (real, *real.parents):
        try:
            st = os.lstat(part)
        except OSError as exc:
            return f"{part}: {exc.strerror}"
        if st.st_uid not in (0, uid):
            return f"{part} is owned by uid {st.st_uid}"
        shared = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if shared and not (part != real and st.st_mode & stat.S_ISVTX and st.st_uid == 0):
            return f"{part} is writable by {'its group' if shared & stat.S_IWGRP else 'others'}"
    return None


def digest(*sources: Path) -> str:
    """The cache key of what is built from these files."""
    return hashlib.sha256(b"\0".join(source.read_bytes() for source in sources)).hexdigest()[:16]


def compile_c(source: Path, output: Path, *flags: str, why: str) -> None:
    """Compile one C file to output (flags: beyond -O2 -Wall); `why` names it when no compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ToolMissing(f"required tool not found: cc, to build {why} (gcc)")
    from pantheros import process  # loaded only to compile: the audit's walk starts without it

    process.run([compiler, "-O2", "-Wall", *flags, "-o", str(output), str(source)], check=True)


def build_once(dest: Path, fill: Callable[[Path], None], done: str) -> Path:
    """The directory dest, made by fill(staging) unless dest/done already exists; renamed into
    place whole, so a reader sees all of it or nothing (a concurrent build wins)."""
    if (dest / done).is_file():
        return dest
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
