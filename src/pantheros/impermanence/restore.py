"""`panther restore`: bring a file or tree back from an old root.

The source path is resolved inside the old root as if it were `/`: a symlink on the way is
followed within the old root, and one that would climb out of it is refused. The copy keeps
owner, mode, timestamps, xattrs and ACLs (`cp -a`, which also keeps hardlinks and copies
symlinks as symlinks), goes to a temporary name beside the destination and is renamed into
place, so a failed copy never leaves half a file at the destination.
"""

from __future__ import annotations

import os
from pathlib import Path

from pantheros import process
from pantheros.errors import Refused, UsageError
from pantheros.fsutil import remove_path

MAX_SYMLINKS = 40


def resolve_inside(base: Path, path: str) -> Path:
    """Resolve path (absolute, as the old root saw it) under base, chroot-style.

    Intermediate symlinks are followed inside base; the last component is not followed, so
    restoring a symlink restores the link itself.
    """
    parts = list(Path(os.path.normpath("/" + path)).parts[1:])
    current: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            # normpath removed the user's own "..": this one came from a symlink.
            if not current:
                raise Refused(f"a symlink in {path} escapes the old root")
            current.pop()
            continue
        candidate = base.joinpath(*current, name)
        if parts and candidate.is_symlink():
            hops += 1
            if hops > MAX_SYMLINKS:
                raise Refused(f"{path}: too many levels of symlinks")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        current.append(name)
    return base.joinpath(*current)


def restore(source_root: Path, path: str, dest: Path, *, force: bool) -> Path:
    """Copy path from the old root mounted at source_root to dest; returns dest."""
    source = resolve_inside(source_root, path)
    if not os.path.lexists(source):
        raise UsageError(f"{path} does not exist in that old root")
    if os.path.lexists(dest) and not force:
        raise Refused(f"{dest} exists; give --force to replace it, or --to another place")
    if not dest.parent.is_dir():
        raise UsageError(f"{dest.parent} does not exist")
    staging = dest.with_name(f".{dest.name}.panther-restore")
    remove_path(staging)
    process.run(
        ["cp", "-a", "--reflink=auto", "--no-target-directory", str(source), str(staging)],
        check=True,
    )
    if os.path.lexists(dest) and os.path.isdir(dest) and not os.path.islink(dest):
        displaced = dest.with_name(f".{dest.name}.panther-replaced")
        os.rename(dest, displaced)
        os.rename(staging, dest)
        remove_path(displaced)
    else:
        os.replace(staging, dest)
    return dest
