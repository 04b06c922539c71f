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

Inside what it enters, the walk looks only at directories and regular files, told from
symlinks, devices, FIFOs and sockets by the directory entry's type (d_type) without a stat:
none of those can be a finding. Symlinks are never followed. Only an executable is asked for
its capability attribute.

Nearly all the time goes to the stat of every regular file, which no sound rule may skip, and
to reading the directories. The walk is `pantheros-walk` (data/audit/pantheros-walk.c): the
same rules in C, every open relative to an open directory, one process whose threads (one per
processor, at most MAX_LANES) share the directories as they find them. It costs about two
thirds of `find`'s CPU for the same walk and needs no Python per entry (D156). The Nix
package builds it (PANTHER_WALKER); elsewhere it is compiled once into panther's cache
(pantheros.native), and where it cannot be (no C compiler, a cache others may write), or when
it does not finish (killed, out of file descriptors in a tree deeper than the limit), the walk
is `find`'s, with the same result: the tops and their entries are read here, and the
directories among those are handed to `find` processes, one per processor the load leaves
idle (at least one, at most MAX_LANES). Either starts when the walk does and runs while the
audit's other checks do; result() waits for it. What the walk covers (plan), the walker's
program and its process are pantheros.audit.walkstart's, which loads nothing else: `panther
audit` of this machine starts the walker there before the rest of panther has loaded, and the
audit takes that walk over when it is exactly the one it wants (start(); D156, D158).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from pantheros import native, process
from pantheros.audit import walkstart
from pantheros.errors import PantherError, Refused, ToolMissing

SETID = stat.S_ISUID | stat.S_ISGID
OUT_OF_FDS = 3  # the walker's exit status when a tree was deeper than its descriptors
_ENDED = {
    OUT_OF_FDS: "out of file descriptors",
    walkstart.LOST: "its exit status was lost: SIGCHLD is ignored",
}

Directory = tuple[str, int]  # full path, and its link count: on most file systems 2 + subdirs


@dataclass
class Inventory:
    """Paths as the machine sees them (starting with "/")."""

    suid: list[str] = field(default_factory=list)  # setuid or setgid regular files
    caps: list[str] = field(default_factory=list)  # executables with security.capability
    writable: list[str] = field(default_factory=list)  # o+w files, o+w directories without +t
    errors: list[str] = field(default_factory=list)  # what could not be read, and why
    how: str = ""  # why the walk was find's, when it was (else empty)

    def sorted(self) -> Inventory:
        return Inventory(
            sorted(self.suid), sorted(self.caps), sorted(self.writable), self.errors, self.how
        )


def walk(base: str, tops: list[str], pruned: frozenset[str]) -> Inventory:
    """The whole walk at once (see Walk)."""
    return Walk(base, tops, pruned).result()


def start(base: str, tops: list[str], pruned: frozenset[str]) -> Walk:
    """A walk of exactly this: the one started ahead (walkstart.ahead) when it is that, else a
    new one (and the one started ahead, if any, stopped)."""
    return Walk(base, tops, pruned, early=walkstart.take())


def walker() -> Path:
    """The walker program, built if need be and checked safe to run as root; PantherError
    (ToolMissing, Refused) when it cannot be had."""
    program, named = walkstart.located()
    if named:
        if not os.access(program, os.X_OK):
            raise ToolMissing(f"{walkstart.WALKER_ENV}={program} is not an executable")
    else:

        def build(staging: Path) -> None:
            output = staging / walkstart.WALKER
            native.compile_c(
                Path(walkstart.source()), output, "-pthread", why="the audit's file walker"
            )

        native.build_once(Path(program).parent, build, walkstart.WALKER)
    real, why = walkstart.checked(program)
    if why is not None:
        raise Refused(why)
    return Path(real)


@dataclass
class _Lane:
    find: subprocess.Popen[bytes] | walkstart.Child
    out: IO[bytes]
    err: IO[bytes]
    directories: list[str]


class Walk:
    """A walk under way: started here, its result collected by result().

    `tops` are full paths below `base`; `pruned` full paths not entered (mount points, the
    store). `lanes`: the walker's threads (by default one per processor, at most MAX_LANES),
    or, for `find`'s walk, its processes (by default default_lanes()). `find=True` walks the
    way the walker's absence does.
    """

    def __init__(
        self,
        base: str,
        tops: list[str],
        pruned: frozenset[str],
        lanes: int | None = None,
        *,
        find: bool = False,
        early: walkstart.Child | None = None,
    ) -> None:
        self.cut = len(base.rstrip("/"))
        self.tops = tops
        self.pruned = pruned
        self.lanes_wanted = lanes
        self.found = Inventory()
        self.lanes: list[_Lane] = []
        self.native: _Lane | None = None
        if find:
            self.found.how = "asked for"
        else:
            try:
                threads = lanes or walkstart.default_threads()
                words = walkstart.argv(str(walker()), threads, tops, pruned)
                if early is not None and (self.cut, early.argv) != (0, words):
                    early.stop()  # not this walk: it stops before this one starts
                    early = None
                child, early = early or walkstart.Child(words), None
                process.started(words)
                self.native = _Lane(child, child.out, child.err, tops)
            except PantherError as exc:
                self.found.how = str(exc)
            except OSError as exc:  # the cache could not be made, or the walker not started
                self.found.how = f"{exc.filename or walkstart.WALKER}: {exc.strerror}"
            except ValueError as exc:  # an environment posix_spawn refuses
                self.found.how = f"{walkstart.WALKER} not started: {exc}"
        if early is not None:
            early.stop()
        if self.native is None:
            self._start_find()

    def stop(self) -> None:
        """End the walk unread: its processes killed and waited for, their files closed."""
        lanes = [self.native] if self.native is not None else self.lanes
        for lane in lanes:
            lane.find.kill()
            lane.find.wait()
            lane.out.close()
            lane.err.close()
        self.native, self.lanes = None, []

    def _start_find(self) -> None:
        """The tops and their entries read here, the directories below shared among finds."""
        directories: list[Directory] = []
        for top in self.tops:
            try:
                st = os.lstat(top)
            except OSError as exc:
                self.found.errors.append(f"{top}: {exc.strerror}")
                continue
            if top not in self.pruned and self._enter(top, st):
                directories += self._read(top)
        count = max(1, min(self.lanes_wanted or default_lanes(), len(directories)))
        shares: list[list[str]] = [[] for _ in range(count)]
        weights = [0] * count
        for path, links in sorted(directories, key=lambda d: -d[1]):
            lightest = weights.index(min(weights))
            shares[lightest].append(path)
            weights[lightest] += links
        self.lanes = [self._start(share) for share in shares if share]

    def _enter(self, path: str, st: os.stat_result) -> bool:
        """Note a directory that is a finding; whether the walk goes into it."""
        mode = st.st_mode
        if st.st_uid == 0 and not mode & 0o011:
            return False  # root's, and only root may search it
        if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
            self.found.writable.append(path[self.cut :])
        return True

    def _read(self, path: str) -> list[Directory]:
        """Note the findings among a top's entries; the directories among them to enter."""
        directories: list[Directory] = []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    child = f"{path}/{entry.name}"
                    if entry.is_dir(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if child not in self.pruned and self._enter(child, st):
                            directories.append((child, st.st_nlink))
                    elif entry.is_file(follow_symlinks=False):
                        self._file(child, entry.stat(follow_symlinks=False).st_mode)
        except OSError as exc:
            self.found.errors.append(f"{path}: {exc.strerror}")
        return directories

    def _file(self, path: str, mode: int) -> None:
        rel = path[self.cut :]
        if mode & stat.S_IWOTH:
            self.found.writable.append(rel)
        if mode & SETID:
            self.found.suid.append(rel)
        if mode & 0o111 and _has_capabilities(path):
            self.found.caps.append(rel)

    def _start(self, directories: list[str]) -> _Lane:
        # Files, not pipes: a pipe nobody reads until the checks are done would stop it.
        out = tempfile.TemporaryFile()  # noqa: SIM115 - result() closes it
        err = tempfile.TemporaryFile()  # noqa: SIM115 - result() closes it
        argv = self._argv(directories)
        find = process.start(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        return _Lane(find, out, err, directories)

    def _argv(self, directories: list[str]) -> list[str]:
        prune: list[str] = []
        for path in sorted(self.pruned):
            # -path takes a glob: a literal path must not match what its brackets would.
            prune += ["-path", re.sub(r"([\\*?\[])", r"\\\1", path), "-o"]
        skipped = ["(", *prune[:-1], ")", "-prune", "-o"] if prune else []
        # The directories themselves were judged here (-mindepth 1): find judges what is below.
        return [
            "find", "-P", *directories, "-mindepth", "1", *skipped,
            "-type", "d", "-uid", "0", "!", "-perm", "/011", "-prune", "-o",
            "(",
            "-type", "f", "(", "-perm", "/6000", "-o", "-perm", "-0002", "-o", "-perm", "/111", ")",
            "-o", "-type", "d", "-perm", "-0002", "!", "-perm", "-1000",
            ")",
            "-printf", "%m %y %p\\0",
        ]  # fmt: skip

    def result(self) -> Inventory:
        if self.native is not None:
            lane, self.native = self.native, None
            code = lane.find.wait()
            lane.out.seek(0)
            records = lane.out.read().split(b"\0")
            lane.err.seek(0)
            message = lane.err.read().decode(errors="replace").strip()
            lane.out.close()
            lane.err.close()
            if code == 0:
                for record in records:
                    if record:
                        self._finding(record[:1], os.fsdecode(record[2:]))
                return self.found.sorted()
            # Killed, out of descriptors, or failed: what it printed is not all there is.
            why = _ENDED.get(code, f"exit status {code}")
            self.found.how = f"{walkstart.WALKER} did not finish ({message or why})"
            self._start_find()
        for lane in self.lanes:
            code = lane.find.wait()
            if code < 0:  # killed: what it printed is not all there is; once more, waiting
                lane.out.close()
                lane.err.close()
                lane = self._start(lane.directories)
                code = lane.find.wait()
            lane.out.seek(0)
            for record in lane.out.read().split(b"\0"):
                if record:
                    mode, kind, path = record.split(b" ", 2)
                    self._record(int(mode, 8), kind, os.fsdecode(path))
            lane.err.seek(0)
            if code != 0:
                message = lane.err.read().decode(errors="replace").strip()
                self.found.errors.append(message or f"find exited with {code}")
            lane.out.close()
            lane.err.close()
        self.lanes = []
        return self.found.sorted()

    def _finding(self, kind: bytes, path: str) -> None:
        """One record of the walker's."""
        if kind == b"e":
            self.found.errors.append(path)
        else:
            found = {b"s": self.found.suid, b"c": self.found.caps, b"w": self.found.writable}
            found[kind].append(path[self.cut :])

    def _record(self, mode: int, kind: bytes, path: str) -> None:
        if kind == b"d":
            self.found.writable.append(path[self.cut :])
        elif kind == b"f":
            self._file(path, mode)


def default_lanes() -> int:
    """How many `find` processes: this one's and each processor the load leaves idle."""
    processors = len(os.sched_getaffinity(0))
    try:
        idle = int(processors - os.getloadavg()[0])
    except OSError:  # no load average to read (some containers): assume the machine is busy
        return 1
    return max(1, min(processors, idle, walkstart.MAX_LANES))


def _has_capabilities(path: str) -> bool:
    try:
        os.getxattr(path, "security.capability", follow_symlinks=False)
    except OSError:
        return False
    return True
