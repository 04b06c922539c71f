"""Apply every kind of change to a root and record the truth a correct diff must report.

Every change touches its own path, so the truth is unambiguous: path -> (kind, detail).
"""

from __future__ import annotations

import os
import random
import stat
import subprocess
from pathlib import Path

from pantheros import btrfs

Truth = dict[bytes, str]


def populate(root: Path, files: int, seed: int = 7) -> list[bytes]:
    """A base tree of `files` files in 40 directories; returns their relative paths."""
    rng = random.Random(seed)
    made = []
    for number in range(files):
        rel = f"data/d{number % 40:02}/f{number:05}".encode()
        path = root / os.fsdecode(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(rng.choice([0, 10, 300, 2000])))
        made.append(rel)
    for number in range(10):
        os.symlink(f"../d00/f{number:05}", root / f"data/d01/link{number}")
    return made


def apply(root: Path, base_files: list[bytes], random_changes: int, seed: int = 11) -> Truth:
    """Every named kind of change once, then random ones; returns the truth."""
    rng = random.Random(seed)
    truth: Truth = {}
    r = os.fsencode(root)

    def p(rel: bytes) -> bytes:
        return r + b"/" + rel

    pool = list(base_files)
    rng.shuffle(pool)

    def take() -> bytes:
        return pool.pop()

    # Named kinds.
    os.makedirs(p(b"new/dir"))
    truth[b"/new"] = "created"
    truth[b"/new/dir"] = "created"
    Path(os.fsdecode(p(b"new/file"))).write_bytes(b"hello")
    truth[b"/new/file"] = "created"
    Path(os.fsdecode(p(b"new/empty"))).write_bytes(b"")
    truth[b"/new/empty"] = "created"
    os.symlink(b"file", p(b"new/symlink"))
    truth[b"/new/symlink"] = "created"
    os.mkfifo(p(b"new/fifo"))
    truth[b"/new/fifo"] = "created"
    os.mknod(p(b"new/null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    truth[b"/new/null"] = "created"
    os.link(p(b"new/file"), p(b"new/hardlink"))
    truth[b"/new/hardlink"] = "created"
    target = take()
    os.link(p(target), p(b"new/hardlink-to-old"))
    truth[b"/new/hardlink-to-old"] = "created"
    truth[b"/" + target] = "times"  # a new link changes the target's ctime, nothing else
    pool = [f for f in pool if f != target]
    (root / "new" / "caf\udce9-latin1").write_bytes(b"not utf-8")  # a non-UTF-8 name
    truth[b"/new/caf\xe9-latin1"] = "created"
    btrfs.create_subvolume(root / "new" / "sub")
    btrfs.create_subvolume(root / "new" / "sub" / "inner")
    (root / "new" / "sub" / "inner" / "deep").write_bytes(b"nested")
    truth[b"/new/sub"] = "created"
    truth[b"/new/sub/inner"] = "created"
    truth[b"/new/sub/inner/deep"] = "created"

    rel = take()
    with open(p(rel), "ab") as f:
        f.write(b"appended")
    truth[b"/" + rel] = "modified"
    rel = take()
    os.chmod(p(rel), 0o600)
    truth[b"/" + rel] = "metadata"
    rel = take()
    os.chown(p(rel), 1234, 5678)
    truth[b"/" + rel] = "metadata"
    rel = take()
    os.setxattr(p(rel), "user.tag", b"v")
    truth[b"/" + rel] = "metadata"
    rel = take()
    os.unlink(p(rel))
    truth[b"/" + rel] = "deleted"
    rel = take()
    os.rename(p(rel), p(rel) + b".renamed")
    truth[b"/" + rel + b".renamed"] = "renamed"
    rel = take()
    os.rename(p(rel), p(b"new/dir/moved-across"))
    truth[b"/new/dir/moved-across"] = "renamed"
    rel = take()
    os.utime(p(rel), (1_000_000_000, 1_000_000_000))
    truth[b"/" + rel] = "times"
    # A whole directory renamed: one rename, its children come along.
    os.rename(p(b"data/d39"), p(b"data/d39-renamed"))
    truth[b"/data/d39-renamed"] = "renamed"
    pool = [f for f in pool if not f.startswith(b"data/d39/")]
    # A whole directory deleted: every entry in it is gone.
    for victim in sorted(f for f in base_files if f.startswith(b"data/d38/")):
        if os.path.lexists(p(victim)):
            truth[b"/" + victim] = "deleted"
    subprocess.run(["rm", "-r", os.fsdecode(p(b"data/d38"))], check=True)
    truth[b"/data/d38"] = "deleted"
    pool = [f for f in pool if not f.startswith(b"data/d38/")]

    # Random ones, each on a path of its own.
    kinds = ["create", "empty", "append", "chmod", "chown", "xattr", "delete", "rename",
             "symlink", "truncate"]  # fmt: skip
    for number in range(random_changes):
        kind = rng.choice(kinds)
        if kind in ("create", "empty", "symlink"):
            rel = f"data/d{rng.randrange(30):02}/new{number}".encode()
            if kind == "symlink":
                os.symlink(b"somewhere", p(rel))
            else:
                Path(os.fsdecode(p(rel))).write_bytes(
                    b"" if kind == "empty" else b"x" * rng.randrange(1, 999)
                )
            truth[b"/" + rel] = "created"
            continue
        if not pool:
            break
        rel = take()
        if stat.S_ISLNK(os.lstat(p(rel)).st_mode):
            continue
        if kind == "append":
            with open(p(rel), "ab") as f:
                f.write(b"+")
            truth[b"/" + rel] = "modified"
        elif kind == "truncate":
            size = os.lstat(p(rel)).st_size
            os.truncate(p(rel), size + 1)
            truth[b"/" + rel] = "modified"
        elif kind == "chmod":
            os.chmod(p(rel), 0o640)
            truth[b"/" + rel] = "metadata"
        elif kind == "chown":
            os.chown(p(rel), 4321, 4321)
            truth[b"/" + rel] = "metadata"
        elif kind == "xattr":
            os.setxattr(p(rel), "user.n", str(number).encode())
            truth[b"/" + rel] = "metadata"
        elif kind == "delete":
            os.unlink(p(rel))
            truth[b"/" + rel] = "deleted"
        elif kind == "rename":
            os.rename(p(rel), p(rel) + b"-r")
            truth[b"/" + rel + b"-r"] = "renamed"
    return truth
