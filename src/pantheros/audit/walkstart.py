"""The audit's file walk as it starts: what it walks (plan), the walker program, and the process
it runs in. Loaded with os alone (and native and mountlines, which load nothing more), so that
`panther audit` of this machine starts its walk about 12 ms after the interpreter, before the rest
of panther has loaded (pantheros.main, D158). The rules of the walk, its result and its fallback
to `find` are pantheros.audit.inventory's.
"""

from __future__ import annotations

import atexit
import os

from pantheros import mountlines, native

TYPE_CHECKING = False  # typing is not loaded for this
if TYPE_CHECKING:
    from typing import IO

MAX_LANES = 4  # beyond it, a few large directories decide the time anyway
WALKER = "pantheros-walk"
WALKER_SOURCE = "pantheros-walk.c"
WALKER_ENV = "PANTHER_WALKER"  # set by the Nix package's wrapper: the walker it built

# What the walk enters, below the machine's root (a top reached through a symlink is not).
SCAN_DIRS = (
    *("bin", "sbin", "usr", "lib", "lib64", "opt", "etc", "var", "srv", "home", "root"),
    *("run/wrappers", "boot", "nix"),
)
# Nix canonicalises every store path to mode 0444/0555 and never stores a setuid bit.
NIX_STORE = "nix/store"
PSEUDO_FS = frozenset(
    {
        *("proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs"),
        *("tracefs", "configfs", "fusectl", "bpf", "pstore", "efivarfs", "mqueue", "hugetlbfs"),
        *("autofs", "binfmt_misc", "nsfs"),
    }
)


def plan(base: str) -> tuple[list[str], list[str]]:
    """(tops, pruned) of the walk of the machine under base, as host paths: the SCAN_DIRS that
    are directories reached without a symlink, and the store and the pseudo and read-only
    nosuid mounts inside them (nothing on those can be a setuid binary or a file others may
    write)."""
    root = os.path.realpath(base)
    tops = []
    for top in SCAN_DIRS:
        path = os.path.join(root, top)
        if os.path.isdir(path) and os.path.realpath(path) == path:
            tops.append(path)
    prefix = root.rstrip("/")
    inside = tuple(f"{prefix}/{top}/" for top in SCAN_DIRS)
    pruned = {f"{prefix}/{NIX_STORE}"}
    # The host's table: an offline tree (the lab) is mounted on this host too. Only mounts
    # inside the walk matter.
    for _, _, _, _, mountpoint, options, fstype, _, _ in mountlines.read():
        if not mountpoint.startswith(inside):
            continue
        if fstype in PSEUDO_FS or {"ro", "nosuid"} <= set(options):
            pruned.add(mountpoint)
    return tops, sorted(pruned)


def default_threads() -> int:
    """The walker's threads: one per processor this process may run on, at most MAX_LANES."""
    return min(len(os.sched_getaffinity(0)), MAX_LANES)


def source() -> str:
    """The walker's C source, shipped with panther."""
    return os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "audit", WALKER_SOURCE)


def located() -> tuple[str, bool]:
    """Where the walker is (built or not), and whether the environment named it."""
    named = os.environ.get(WALKER_ENV)
    if named:
        return named, True
    built = os.path.join(native.cache_root(), f"walk-{native.digest(source())}")
    return os.path.join(built, WALKER), False


def checked(program: str) -> tuple[str, str | None]:
    """The walker's path as it is run (its directory resolved, native.checked), and why it may
    not be run as root or None."""
    directory, why = native.checked(os.path.dirname(program), os.path.basename(program))
    real = os.path.join(directory, os.path.basename(program))
    return real, None if why is None else f"will not run {program}: {why}"


def argv(program: str, threads: int, tops: list[str], pruned: frozenset[str]) -> list[str]:
    words = [program, "-j", str(threads)]
    for path in sorted(pruned):
        words += ["-p", path]
    return [*words, "--", *tops]


LOST = 255  # Child.wait's answer when the status was lost (SIGCHLD ignored: reaped unseen)


class Child:
    """The walker, running: its output goes to files in memory (a pipe nobody reads until the
    other checks are done would stop it). wait() and kill() as subprocess.Popen's; a child
    still running when panther exits is stopped then (_live)."""

    def __init__(self, words: list[str]) -> None:
        self.argv = words
        self.out: IO[bytes] = _memory_file()
        self.err: IO[bytes] = _memory_file()
        self.returncode: int | None = None
        # Not an environment entry without a name ("=x"): posix_spawn refuses it.
        env = {key: value for key, value in os.environ.items() if key}
        try:
            self.pid = os.posix_spawn(
                words[0],
                words,
                env,
                file_actions=[
                    (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                    (os.POSIX_SPAWN_DUP2, self.out.fileno(), 1),
                    (os.POSIX_SPAWN_DUP2, self.err.fileno(), 2),
                ],
            )
        except (OSError, ValueError):
            self.out.close()
            self.err.close()
            raise
        _live.add(self)

    def wait(self) -> int:
        if self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped by the kernel unseen: how it ended is lost
                self.returncode = LOST
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
            _live.discard(self)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:  # never a pid reaped, and perhaps reused since
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:  # reaped unseen (SIGCHLD was ignored)
                self.wait()

    def stop(self) -> None:
        """Ended unread: killed, waited for, its files closed."""
        self.kill()
        self.wait()
        self.out.close()
        self.err.close()


def _memory_file() -> IO[bytes]:
    """A file in memory, on a descriptor above 2: with one of 0-2 closed when panther started,
    the lowest free descriptor would be one the spawn overwrites with another."""
    import fcntl

    fd = os.memfd_create(WALKER)
    try:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)
    return open(high, "rb")


_live: set[Child] = set()  # started and not yet waited for


# The walk of this machine started ahead, until inventory takes it or the process ends.
_ahead: Child | None = None


def ahead() -> None:
    """Start the walk of this machine now, before the audit that will want it has loaded, when
    its walker is already built and safe to run (else the audit builds it, or says why not).
    inventory.start() uses it only when it is exactly the walk then asked for; otherwise, and at
    exit, it is stopped."""
    global _ahead
    if _ahead is not None:
        return
    try:
        program, why = checked(located()[0])
        if why is not None or not os.access(program, os.X_OK):
            return
        tops, pruned = plan("/")
        _ahead = Child(argv(program, default_threads(), tops, frozenset(pruned)))
    except (OSError, ValueError):
        return  # the audit meets the same trouble where it can say so


def take() -> Child | None:
    """The walk started ahead, now the caller's to use or to stop; None when there is none."""
    global _ahead
    child, _ahead = _ahead, None
    return child


@atexit.register
def _stop_all() -> None:
    """At exit: every walker still running stopped (one started ahead and never taken, one an
    interrupted audit had taken over)."""
    take()
    for child in list(_live):
        child.stop()
