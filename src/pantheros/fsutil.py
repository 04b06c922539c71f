"""Small file helpers shared by diff and persist."""

from __future__ import annotations

import os


def same_bytes(a: str | bytes | os.PathLike[str], b: str | bytes | os.PathLike[str]) -> bool:
    """Whether two regular files hold the same data (read in 1 MiB blocks, stops early)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def xattrs(path: str | bytes | os.PathLike[str]) -> dict[str, bytes]:
    """Extended attributes (ACLs included) of path itself, not of a symlink's target."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
        return {n: os.getxattr(path, n, follow_symlinks=False) for n in names}
    except OSError:
        return {}
