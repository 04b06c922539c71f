"""The audit's file inventory: setuid/setgid files, files with capabilities, world-writable
entries, in one pass over the system directories.

What the walk does not enter, and why nothing there can be one of the three:

- the Nix store: Nix canonicalises every store path (owner root, mode 0444 or 0555, no
  setuid or setgid bit, no extended attributes, so no capabilities) and mounts the store
  read-only;
- pseudo file systems (proc, sysfs, cgroup, ...): the kernel makes their entries, no chmod or
  setxattr of a user gives one a setuid bit or a capability;
- a mount both read-only and nosuid: the kernel honours no setuid or setgid bit and no file
  capability on a nosuid mount, and nothing on a read-only one can be written by anyone;
- a directory owned by root that neither its group nor others may search: only root reaches
  what lies below, and root needs no setuid bit or writable file to act. (Another path to the
  same file, a hard link or a mount elsewhere, is walked where it is.)

Inside what it enters, the walk looks only at directories and regular files, and tells them
from symlinks, devices, FIFOs and sockets by the directory entry's type (d_type), without a
stat: none of those can be a finding. A directory or a regular file is stat'ed once, relative
to the directory being read; only an executable is asked for its capability attribute.
Symlinks are never followed, and a directory is entered only if it is still the one listed.

Nearly all the time goes to that stat of every regular file, which no sound rule may skip, so
the walk uses the processors that are idle: the directories one level below the tops are handed
out, one at a time, to forked helpers and to the caller, which joins in once it asks for the
result (the audit starts the walk before its other checks and collects it after them). On a
busy machine a helper only competes for the same processors, so there are as many helpers as
the load average leaves processors idle, at most MAX_HELPERS.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import stat
import struct
from dataclasses import dataclass, field

SETID = stat.S_ISUID | stat.S_ISGID
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ITEM = struct.Struct("=I")
F_GETPIPE_SZ = 1032  # fcntl: how many bytes a pipe holds before its writer would block
MAX_HELPERS = 3  # beyond it, a few large directories decide the time anyway

Directory = tuple[str, int, int]  # full path, and the identity (st_dev, st_ino) it was listed with


@dataclass
class Inventory:
    """Paths as the machine sees them (starting with "/")."""

    suid: list[str] = field(default_factory=list)  # setuid or setgid regular files
    caps: list[str] = field(default_factory=list)  # executables with security.capability
    writable: list[str] = field(default_factory=list)  # o+w files, o+w directories without +t
    errors: list[str] = field(default_factory=list)  # what could not be read, and why

    def add(self, other: Inventory) -> None:
        self.suid += other.suid
        self.caps += other.caps
        self.writable += other.writable
        self.errors += other.errors

    def sorted(self) -> Inventory:
        return Inventory(sorted(self.suid), sorted(self.caps), sorted(self.writable), self.errors)


def walk(base: str, tops: list[str], pruned: frozenset[str]) -> Inventory:
    """The whole walk at once (see Walk)."""
    return Walk(base, tops, pruned).result()


class Walk:
    """A walk under way: started here, its result collected by result().

    `tops` are full paths below `base`; `pruned` full paths not entered (mount points, the
    store). The tops and the level below them are read here; the directories found there are
    then walked by `helpers` forked processes (by default idle_processors()) and by result()'s
    caller.
    """

    def __init__(
        self, base: str, tops: list[str], pruned: frozenset[str], helpers: int | None = None
    ) -> None:
        self.cut = len(base.rstrip("/"))
        self.pruned = pruned
        self.found = Inventory()
        self.items: list[Directory] = []
        for top in tops:
            try:
                st = os.lstat(top)
            except OSError as exc:
                self.found.errors.append(f"{top}: {exc.strerror}")
                continue
            if top not in pruned and _enter(top, st, self.found, self.cut):
                self.items += _read((top, st.st_dev, st.st_ino), pruned, self.found, self.cut)
        if helpers is None:
            helpers = idle_processors()
        self.helpers: list[tuple[int, int]] = []  # (pid, the read end of its result pipe)
        self.queue = -1
        self.rest: list[Directory] = []  # items that did not fit in the queue
        if helpers > 0 and len(self.items) > 1:
            self._fork(min(helpers, len(self.items) - 1))

    def _fork(self, helpers: int) -> None:
        queue_read, queue_write = os.pipe2(os.O_CLOEXEC)
        # Every item goes into the pipe before anyone reads: a read of one item's 4 bytes
        # then always returns one whole item, to exactly one reader.
        count = min(len(self.items), fcntl.fcntl(queue_write, F_GETPIPE_SZ) // _ITEM.size)
        os.write(queue_write, b"".join(_ITEM.pack(i) for i in range(count)))
        os.close(queue_write)
        self.queue = queue_read
        self.rest = self.items[count:]
        for _ in range(helpers):
            result_read, result_write = os.pipe2(os.O_CLOEXEC)
            try:
                pid = os.fork()
            except OSError:  # no more processes: the caller and the helpers so far do it all
                os.close(result_read)
                os.close(result_write)
                break
            if pid == 0:  # a helper: walk what it takes, report, and leave without cleanup
                code = 1
                try:
                    os.close(result_read)
                    mine = self._take()
                    with os.fdopen(result_write, "wb") as out:
                        pickle.dump(mine, out)
                    code = 0
                finally:
                    os._exit(code)
            os.close(result_write)
            self.helpers.append((pid, result_read))

    def _take(self) -> Inventory:
        """Walk items from the queue until it is empty."""
        mine = Inventory()
        while raw := os.read(self.queue, _ITEM.size):
            _walk_below(self.items[_ITEM.unpack(raw)[0]], self.pruned, mine, self.cut)
        return mine

    def result(self) -> Inventory:
        below = Inventory()  # what the items hold
        if self.queue < 0:  # no helpers: all of it here
            for item in self.items:
                _walk_below(item, self.pruned, below, self.cut)
        else:
            below = self._collect()
        found = Inventory()
        found.add(self.found)
        found.add(below)
        return found.sorted()

    def _collect(self) -> Inventory:
        """Join the helpers: take items until none is left, then gather what they found."""
        below = self._take()
        os.close(self.queue)
        for item in self.rest:
            _walk_below(item, self.pruned, below, self.cut)
        failed = False
        for pid, result_read in self.helpers:
            with os.fdopen(result_read, "rb") as report:
                data = report.read()
            _, status = os.waitpid(pid, 0)
            if os.waitstatus_to_exitcode(status) != 0:
                failed = True
                continue
            below.add(pickle.loads(data))  # noqa: S301 - written by our own fork, just now
        if failed:  # what a helper walked is lost: walk every item again, here
            below = Inventory()
            for item in self.items:
                _walk_below(item, self.pruned, below, self.cut)
        return below


def idle_processors() -> int:
    """How many helpers to fork: the processors beyond this one that the load leaves idle."""
    processors = len(os.sched_getaffinity(0))
    try:
        idle = int(processors - os.getloadavg()[0])
    except OSError:  # no load average to read (some containers): assume the machine is busy
        return 0
    return max(0, min(processors - 1, idle, MAX_HELPERS))


def _enter(path: str, st: os.stat_result, found: Inventory, cut: int) -> bool:
    """Note a directory that is a finding; whether the walk goes into it."""
    mode = st.st_mode
    if st.st_uid == 0 and not mode & 0o011:
        return False  # root's, and only root may search it
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        found.writable.append(path[cut:])
    return True


def _walk_below(item: Directory, pruned: frozenset[str], found: Inventory, cut: int) -> None:
    # Directories wait by path and identity: one descriptor is open at a time however deep
    # the tree, and one replaced since it was listed (by a symlink, or another directory) is
    # not entered.
    pending = [item]
    while pending:
        pending += _read(pending.pop(), pruned, found, cut)


def _read(item: Directory, pruned: frozenset[str], found: Inventory, cut: int) -> list[Directory]:
    """Note the findings among a directory's entries; the subdirectories to enter."""
    path, dev, ino = item
    subdirectories: list[Directory] = []
    try:
        fd = os.open(path, _OPEN_DIR)
    except OSError as exc:
        found.errors.append(f"{path}: {exc.strerror}")
        return subdirectories
    writable, suid, caps = found.writable, found.suid, found.caps
    try:
        here = os.fstat(fd)
        if (here.st_dev, here.st_ino) != (dev, ino):
            found.errors.append(f"{path}: replaced while the walk ran")
            return subdirectories
        with os.scandir(fd) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    child = path + "/" + entry.name
                    if child in pruned:
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if _enter(child, st, found, cut):
                        subdirectories.append((child, st.st_dev, st.st_ino))
                elif entry.is_file(follow_symlinks=False):
                    mode = entry.stat(follow_symlinks=False).st_mode
                    if not mode & (SETID | 0o111 | stat.S_IWOTH):
                        continue
                    child = path + "/" + entry.name
                    if mode & stat.S_IWOTH:
                        writable.append(child[cut:])
                    if mode & SETID:
                        suid.append(child[cut:])
                    if mode & 0o111 and _has_capabilities(child):
                        caps.append(child[cut:])
    except OSError as exc:
        found.errors.append(f"{path}: {exc.strerror}")
    finally:
        os.close(fd)
    return subdirectories


def _has_capabilities(path: str) -> bool:
    try:
        os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return False
    return True
