"""Copy and verify: the persistent copy holds everything the live path held, checked, not assumed.

A new copy is made in a private staging directory beside its place (`fsutil.staging_dir`), so
putting it in place is one rename, and nobody can predict or pre-create the name.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from pantheros.fsutil import copy_all, remove_path, same_bytes, staging_dir, xattrs
from pantheros.state.persist.failures import VerifyFailed
from pantheros.state.persist.journal import Journal
from pantheros.state.persist.location import Where


def _walk(base: Path) -> Iterator[tuple[str, os.stat_result]]:
    top = os.lstat(base)
    yield "", top
    if not stat.S_ISDIR(top.st_mode):
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            yield os.path.relpath(full, base), os.lstat(full)


def verify(source: Path, copy: Path) -> None:
    """The copy equals the source: entries, types, owners, modes, times, xattrs, data, links."""
    theirs = dict(_walk(copy))
    inodes: dict[int, str] = {}
    for rel, st in _walk(source):
        other = theirs.pop(rel, None)
        where = rel or "."
        if other is None:
            raise VerifyFailed(f"{where} is missing from the copy")
        if (st.st_mode, st.st_uid, st.st_gid) != (other.st_mode, other.st_uid, other.st_gid):
            raise VerifyFailed(f"{where}: owner or mode differ in the copy")
        if not stat.S_ISDIR(st.st_mode) and st.st_mtime_ns != other.st_mtime_ns:
            raise VerifyFailed(f"{where}: modification time differs in the copy")
        src, dst = source / rel, copy / rel
        if xattrs(src) != xattrs(dst):
            raise VerifyFailed(f"{where}: xattrs or ACLs differ in the copy")
        if stat.S_ISLNK(st.st_mode) and os.readlink(src) != os.readlink(dst):
            raise VerifyFailed(f"{where}: symlink target differs in the copy")
        if stat.S_ISREG(st.st_mode):
            if st.st_nlink > 1:
                # Hardlinked names in the source share one inode in the copy too.
                first = inodes.setdefault(st.st_ino, rel)
                if first != rel and os.lstat(copy / first).st_ino != other.st_ino:
                    raise VerifyFailed(f"{where}: hardlink to {first} not kept in the copy")
            if st.st_size != other.st_size or not same_bytes(src, dst):
                raise VerifyFailed(f"{where}: data differs in the copy")
    if theirs:
        raise VerifyFailed(f"the copy has entries the source lacks: {sorted(theirs)[:3]}")


def make_parents(where: Where) -> None:
    """Create the copy's missing parent directories with the live parents' owner and mode."""
    missing = []
    parent = where.copy.parent
    live_parent = where.live.parent
    while not parent.exists():
        missing.append((parent, live_parent))
        parent, live_parent = parent.parent, live_parent.parent
    for made, model in reversed(missing):
        made.mkdir()
        st = os.lstat(model)
        os.chown(made, st.st_uid, st.st_gid)
        os.chmod(made, stat.S_IMODE(st.st_mode))


def copy_verified(where: Where, journal: Journal, *, steps: bool) -> Path:
    """A verified copy of the live path in a new staging directory; returns the copy."""
    journal.discard_staging()
    staging = staging_dir(where.copy)
    journal.use_staging(staging)
    try:
        staged = staging / where.copy.name
        copy_all(where.live, staged)
        if steps:
            journal.advance("staged")
        verify(where.live, staged)
        if steps:
            journal.advance("verified")
        return staged
    except BaseException:
        remove_path(staging)
        raise


def merge_missing(source: Path, dest: Path) -> None:
    """Copy into dest what it lacks from source, entry by entry; nothing in dest is replaced."""
    for child in sorted(source.iterdir()):
        target = dest / child.name
        if not os.path.lexists(target):
            copy_all(child, target)
        elif child.is_dir() and not child.is_symlink() and target.is_dir():
            merge_missing(child, target)
