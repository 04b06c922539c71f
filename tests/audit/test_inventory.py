"""The audit's file walk (pantheros.audit.inventory) finds exactly what the single `find` walk
before it found, on a tree with every kind of finding, hostile names, links, and mounts inside
it: in the walker (pantheros-walk) with any number of threads, and in the `find` walk it falls
back to with any number of `find` processes; a walker that cannot run or does not finish leaves
the walk to `find`, with the same result.

The mounts live in a private mount namespace of the test process (the kernel drops them with
it); the old walk (tests/audit/findwalk.py) runs in it too, as a subprocess.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pantheros import native
from pantheros.audit import inventory, walkstart
from pantheros.audit.system import System
from pantheros.main import audits_this_machine
from pantheros.storage import mounts
from tests.audit.findwalk import find_walk
from tests.helpers import REPO, panther

pytestmark = pytest.mark.root

# struct vfs_cap_data, revision 2, effective: CAP_NET_RAW permitted.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
HOSTILE = ["new\nline", "dash -rf", "glob[*?]", "tab\tand space", os.fsdecode(b"latin1-\xe9")]


def setuid(path: Path, mode: int = 0o4755) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)


def tmpfs(at: Path, options: str) -> None:
    at.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(at)], check=True)
    setuid(at / "s")
    (at / "w").write_text("")
    (at / "w").chmod(0o666)
    if options:
        subprocess.run(["mount", "-o", f"remount,{options}", str(at)], check=True)


def build(root: Path) -> None:
    usr = root / "usr" / "bin"
    setuid(usr / "suid")
    setuid(usr / "sgid", 0o2755)
    setuid(usr / "suid-not-executable", 0o4644)
    for name in HOSTILE:
        setuid(usr / name)
    setuid(usr / "capable", 0o755)
    os.setxattr(usr / "capable", "security.capability", CAPABILITY)
    setuid(usr / "capable-not-executable", 0o644)
    os.setxattr(usr / "capable-not-executable", "security.capability", CAPABILITY)
    (usr / "link-to-suid").symlink_to("suid")
    (usr / "link-to-etc").symlink_to("../../etc")
    os.mkfifo(usr / "fifo", 0o666)
    os.chmod(usr / "fifo", 0o666)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(usr / "socket"))
    os.chmod(usr / "socket", 0o777)
    for number in range(2000):  # enough entries for the helpers to share the work
        (root / "usr" / "share" / f"d{number % 40}").mkdir(parents=True, exist_ok=True)
        (root / "usr" / "share" / f"d{number % 40}" / f"f{number}").write_text("")
    setuid(root / "usr" / "share" / "d7" / "deep-suid")
    large = root / "usr" / "share" / "large"  # read in several parts, which threads share
    large.mkdir()
    for number in range(4000):
        (large / f"a-long-enough-name-{number:05}").write_text("")
    setuid(large / "a-long-enough-name-03999-suid")
    (large / "a-long-enough-name-02000").chmod(0o666)

    etc = root / "etc"
    (etc / "open").mkdir(parents=True)
    (etc / "open").chmod(0o777)
    (etc / "sticky").mkdir()
    (etc / "sticky").chmod(0o1777)
    (etc / "sticky" / "writable").write_text("")
    (etc / "sticky" / "writable").chmod(0o666)
    (etc / "writable").write_text("")
    (etc / "writable").chmod(0o646)
    (etc / "fine").write_text("")

    setuid(root / "root" / "hidden")  # root's, 0700: only root reaches it
    (root / "root").chmod(0o700)
    setuid(root / "var" / "lib" / "searchable" / "s")
    (root / "var" / "lib" / "searchable").chmod(0o710)
    setuid(root / "home" / "alice" / "s")
    os.chown(root / "home" / "alice", 1000, 1000)
    (root / "home" / "alice").chmod(0o700)  # alice's: she runs what is inside
    deep = root / "home" / "deep"
    for level in range(300):
        deep /= f"l{level}"
    setuid(deep / "bottom")
    long = root / "var" / "long"  # names of 255 bytes, a path longer than PATH_MAX
    os.makedirs(long)
    fd = os.open(long, os.O_RDONLY)
    for _ in range(20):
        os.mkdir("n" * 255, dir_fd=fd)
        inner = os.open("n" * 255, os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = inner
    made = os.open("bottom", os.O_CREAT | os.O_WRONLY, 0o4755, dir_fd=fd)
    os.fchmod(made, 0o4755)
    os.close(made)
    os.close(fd)
    leased = usr / "capable-and-leased"  # its owner holds a write lease while it is walked
    setuid(leased, 0o755)
    os.setxattr(leased, "security.capability", CAPABILITY)

    setuid(root / "nix" / "store" / "abc-x" / "bin" / "s")  # the store is not walked
    outside = root.parent / "outside"
    setuid(outside / "s")
    (root / "opt").symlink_to(outside)  # a top reached through a link is not walked
    (root / "srv").mkdir()
    (root / "srv" / "link").symlink_to(outside)

    tmpfs(root / "var" / "mnt-rw", "")
    tmpfs(root / "var" / "mnt-ro-nosuid", "ro,nosuid")  # neither finding can live there
    tmpfs(root / "var" / "mnt-nosuid", "nosuid")
    tmpfs(root / "var" / "mnt-ro", "ro")
    (root / "var" / "proc").mkdir()
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "var" / "proc")], check=True)
    (root / "srv" / "bind").mkdir()
    subprocess.run(["mount", "--bind", str(usr), str(root / "srv" / "bind")], check=True)


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    with mounts.private_namespace():
        root = tmp_path / "tree [*]"  # brackets: a pruned path must match literally
        build(root)
        yield root


def test_the_walk_finds_what_find_found(tree: Path, tmp_path: Path) -> None:
    system = System(base=tree, live=False)
    base = str(tree.resolve())
    tops, pruned = walkstart.plan(str(tree))
    # A write lease: every other open of the file fails (O_NONBLOCK) while it is held; the
    # capability must be read without one.
    # (A walk that opened it would break the lease: SIGIO, ignored here, not the test's end.)
    lease = os.open(tree / "usr" / "bin" / "capable-and-leased", os.O_RDWR)
    signal.signal(signal.SIGIO, signal.SIG_IGN)
    fcntl.fcntl(lease, fcntl.F_SETLEASE, fcntl.F_WRLCK)
    before = find_walk(base, tops, pruned)
    for find in (False, True):
        for lanes in (1, 2, 4):
            walk = inventory.Walk(base, tops, frozenset(pruned), lanes, find=find)
            assert (walk.native is None) == find  # the walker, or find's processes
            found = walk.result()
            assert (found.suid, found.caps, found.writable) == before, (find, lanes)
            assert not found.errors
    # The walker as it reads capabilities on a kernel without getxattrat (before 6.13).
    old_kernel = tmp_path / "old-kernel"
    old_kernel.mkdir()
    source = Path(walkstart.source())
    native.compile_c(source, old_kernel / "walk", "-pthread", "-DPANTHEROS_NO_GETXATTRAT", why="")
    os.environ[walkstart.WALKER_ENV] = str(old_kernel / "walk")
    try:
        found = inventory.Walk(base, tops, frozenset(pruned), 2).result()
    finally:
        del os.environ[walkstart.WALKER_ENV]
    assert (found.suid, found.caps, found.writable, found.errors, found.how) == (*before, [], "")
    assert system.special_files == before
    assert not system.notes  # the walker ran: no note of a fallback
    os.close(lease)
    signal.signal(signal.SIGIO, signal.SIG_DFL)

    suid, caps, writable = before
    assert "/usr/bin/suid" in suid
    assert "/usr/bin/sgid" in suid
    assert "/usr/bin/suid-not-executable" in suid
    assert all(f"/usr/bin/{name}" in suid for name in HOSTILE)
    assert "/usr/share/d7/deep-suid" in suid
    assert any(p.endswith("/l299/bottom") for p in suid)
    assert "/home/alice/s" in suid
    assert "/var/lib/searchable/s" in suid
    for mount in ("mnt-rw", "mnt-nosuid", "mnt-ro"):
        assert f"/var/{mount}/s" in suid
    assert "/srv/bind/suid" in suid  # a mount of the same files elsewhere is walked there
    for absent in ("/root/hidden", "/var/mnt-ro-nosuid/s", "/opt/s", "/srv/link/s"):
        assert absent not in suid
    assert not [p for p in suid if p.startswith(("/nix/", "/var/proc/", "/usr/bin/link"))]
    assert caps == [
        "/srv/bind/capable",
        "/srv/bind/capable-and-leased",
        "/usr/bin/capable",
        "/usr/bin/capable-and-leased",
    ]
    assert "/var/long/" + ("n" * 255 + "/") * 20 + "bottom" in suid
    assert set(writable) == {
        "/etc/open",
        "/etc/writable",
        "/etc/sticky/writable",
        "/var/mnt-rw/w",
        "/var/mnt-nosuid/w",
        "/var/mnt-ro/w",
        "/usr/share/large/a-long-enough-name-02000",
    }
    assert "/usr/share/large/a-long-enough-name-03999-suid" in suid


def _two_halves(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    for number in range(20000):
        (root / "usr" / f"d{number % 2}").mkdir(parents=True, exist_ok=True)
        (root / "usr" / f"d{number % 2}" / f"f{number}").write_text("")
    setuid(root / "usr" / "d0" / "s")
    setuid(root / "usr" / "d1" / "s")
    setuid(root / "usr" / "top-level")  # find's walk reads it here, before any find starts
    return root


def test_a_find_that_was_killed_runs_again(tmp_path: Path) -> None:
    root = _two_halves(tmp_path)
    walk = inventory.Walk(str(root), [str(root / "usr")], frozenset(), 2, find=True)
    assert len(walk.lanes) == 2
    walk.lanes[0].find.kill()
    assert walk.lanes[0].find.wait() == -signal.SIGKILL  # killed before it was done
    found = walk.result()
    assert found.suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]
    assert not found.errors


def test_a_walker_that_was_killed_leaves_the_walk_to_find(tmp_path: Path) -> None:
    root = _two_halves(tmp_path)
    walk = inventory.Walk(str(root), [str(root / "usr")], frozenset(), 2)
    assert walk.native is not None
    walk.native.find.kill()
    assert walk.native.find.wait() == -signal.SIGKILL
    found = walk.result()
    assert found.suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]
    assert not found.errors
    assert found.how == "pantheros-walk did not finish (exit status -9)"


def test_a_tree_deeper_than_the_walkers_descriptors_is_walked_by_find(tmp_path: Path) -> None:
    """One descriptor per level: a tree deeper than the limit (set low here) is find's."""
    root = tmp_path / "tree"
    deep = root / "var" / "tmp"
    for level in range(200):
        deep /= f"l{level}"
    setuid(deep / "bottom")
    (deep / "open").mkdir()
    (deep / "open").chmod(0o777)
    # In a child: its limit, hard too (the walker raises its own to the hard one), is for good.
    code = f"""
import json, resource
from pantheros import native
from pantheros.audit import inventory
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
found = inventory.Walk({str(root)!r}, [{str(root / "var")!r}], frozenset(), 1).result()
print(json.dumps([found.suid, found.writable, found.errors, found.how]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    suid, writable, errors, how = json.loads(proc.stdout)
    below = str(deep.relative_to(root))
    assert suid == [f"/{below}/bottom"]
    assert writable == [f"/{below}/open"]
    assert how == "pantheros-walk did not finish (out of file descriptors)"
    assert not errors


@pytest.mark.parametrize("how", ["missing", "in a directory others may write", "no compiler"])
def test_a_walker_that_cannot_run_leaves_the_walk_to_find(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """The walker panther would run as root must be safe to run: else find walks, and the
    audit says why in a note."""
    root = _two_halves(tmp_path)
    if how == "missing":
        monkeypatch.setenv(walkstart.WALKER_ENV, str(tmp_path / "nothing"))
        why = f"{walkstart.WALKER_ENV}={tmp_path / 'nothing'} is not an executable"
    elif how == "in a directory others may write":
        shared = tmp_path / "shared"
        shared.mkdir()
        shutil.copy(inventory.walker(), shared / "pantheros-walk")
        shared.chmod(0o757)
        monkeypatch.setenv(walkstart.WALKER_ENV, str(shared / "pantheros-walk"))
        why = f"will not run {shared / 'pantheros-walk'}: {shared} is writable by others"
    else:
        monkeypatch.setenv("PANTHER_CACHE_DIR", str(tmp_path / "cache"))  # nothing built yet
        tools = tmp_path / "tools"  # find, and no compiler
        tools.mkdir()
        (tools / "find").symlink_to(shutil.which("find") or "/usr/bin/find")
        monkeypatch.setenv("PATH", str(tools))
        why = "required tool not found: cc, to build the audit's file walker (gcc)"
    walk = inventory.Walk(str(root), [str(root / "usr")], frozenset(), 2)
    assert walk.native is None
    found = walk.result()
    assert found.suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]
    assert found.how == why


def test_the_walk_started_ahead_is_taken_only_when_it_walks_that(tmp_path: Path) -> None:
    """`panther audit` starts the walk of / before it has loaded (pantheros.main): the audit
    takes it when the walk it wants is the same, else it is stopped and a new one started."""
    tops, pruned = walkstart.plan("/")
    walkstart.ahead()
    early = walkstart._ahead
    assert early is not None
    walk = inventory.start("/", tops, frozenset(pruned))
    assert walk.native is not None
    assert walk.native.find is early
    assert walkstart._ahead is None
    walk.stop()

    walkstart.ahead()
    other = walkstart._ahead
    assert other is not None
    root = _two_halves(tmp_path)
    walk = inventory.start(str(root), [str(root / "usr")], frozenset())
    assert walk.native is not None
    assert walk.native.find is not other
    assert other.returncode is not None  # stopped, and waited for
    assert other.out.closed
    assert walk.result().suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]


def test_the_walk_started_ahead_gives_what_a_walk_started_later_gives() -> None:
    tops, pruned = walkstart.plan("/")
    later = inventory.Walk("/", tops, frozenset(pruned)).result()
    walkstart.ahead()
    early = inventory.start("/", tops, frozenset(pruned))
    assert early.native is not None
    found = early.result()
    assert (found.suid, found.caps, found.writable) == (later.suid, later.caps, later.writable)
    assert found.how == later.how == ""


def test_a_walk_started_ahead_and_never_taken_ends_with_the_process() -> None:
    code = "from pantheros.audit import walkstart; walkstart.ahead(); print(walkstart._ahead.pid)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    pid = int(proc.stdout)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass  # gone: killed and reaped at exit
    else:
        with open(f"/proc/{pid}/stat") as stat:  # the pid may have been reused since
            assert "pantheros-walk" not in stat.read()


def _walkers_running(program: Path) -> list[int]:
    """The processes running this program (by its path: no other test runs this copy)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/exe") == str(program):
                found.append(int(pid))
        except OSError:
            continue  # gone, or not ours to read
    return found


def test_the_audit_ends_its_walk_and_writes_its_report_whole_as_it_exits(tmp_path: Path) -> None:
    """`panther audit` ends without the interpreter's teardown (pantheros.main): the report is
    still whole, on stdout and in --output, a walk started ahead and never taken (the level
    is refused before the audit starts) is still stopped, and a failed check still exits 1."""
    walker = tmp_path / "walker" / walkstart.WALKER
    walker.parent.mkdir(mode=0o700)
    shutil.copy(inventory.walker(), walker)
    env = {walkstart.WALKER_ENV: str(walker)}
    refused = panther("audit", "--level", "no-such-level", env=env)
    assert refused.returncode == 2, refused.stderr
    assert _walkers_running(walker) == []
    report = tmp_path / "report.json"
    done = panther("audit", "--json", "--all", "--output", str(report), env=env)
    assert done.returncode in (0, 1), done.stderr
    found = json.loads(report.read_text())
    assert found["findings"]
    assert any(f["id"] == "files.suid" for f in found["findings"])
    shown = panther("audit", "--json", "--all", env=env)
    assert json.loads(shown.stdout)["findings"] == found["findings"]
    assert shown.returncode == done.returncode
    assert _walkers_running(walker) == []


def test_the_walker_runs_by_its_resolved_path_with_nothing_inherited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run by the path that was checked (a symlink on the way could be swapped after the
    check), with no descriptor of panther's but 0-2, an environment posix_spawn refuses
    cleaned, and its output on descriptors above 2 when panther started with 0 closed."""
    safe = tmp_path / "safe"
    safe.mkdir(mode=0o700)
    shutil.copy(inventory.walker(), safe / walkstart.WALKER)
    (tmp_path / "link").symlink_to(safe)
    monkeypatch.setenv(walkstart.WALKER_ENV, str(tmp_path / "link" / walkstart.WALKER))
    monkeypatch.setitem(os.environ._data, b"", b"nameless")  # type: ignore[attr-defined]
    root = _two_halves(tmp_path)
    walk = inventory.Walk(str(root), [str(root / "usr")], frozenset(), 2)
    assert walk.native is not None
    assert isinstance(walk.native.find, walkstart.Child)
    assert walk.native.find.argv[0] == str(safe / walkstart.WALKER)
    assert walk.result().suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]
    read, write = os.pipe()
    os.set_inheritable(write, True)
    try:
        child = walkstart.Child([str(safe / walkstart.WALKER), "-j", "1", "--", "/usr"])
    finally:
        os.close(write)
    # The pipe ends (EOF) when every holder of its write end has closed it.
    ended, _, _ = select.select([read], [], [], 10)
    os.close(read)
    running = os.waitpid(child.pid, os.WNOHANG) == (0, 0)
    child.stop()
    assert ended
    if not running:
        pytest.skip("the walk of /usr ended before the pipe could tell who held it")


def test_an_audit_with_stdin_closed_or_sigchld_ignored_keeps_its_walker() -> None:
    """Its output is not /dev/null (0 closed: the lowest descriptor), and its status is not
    lost to a SIGCHLD ignored by whoever started panther (the kernel would reap it unseen)."""
    quiet = "import signal, os, sys; signal.signal(signal.SIGCHLD, signal.SIG_IGN); "
    for prefix in ("exec 0<&- && exec", None):
        if prefix is None:
            argv = [sys.executable, "-c", quiet + "os.execv(sys.executable, sys.argv[1:])"]
        else:
            argv = ["sh", "-c", f'{prefix} "$@"', "sh"]
        argv += [sys.executable, "-m", "pantheros", "audit", "--json"]
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert proc.returncode in (0, 1), proc.stderr
        assert json.loads(proc.stdout)["findings"]
        assert "the file walk ran find" not in proc.stderr, (prefix, proc.stderr)


def test_an_interrupted_audit_leaves_no_walker(tmp_path: Path) -> None:
    walker = tmp_path / "walker" / walkstart.WALKER
    walker.parent.mkdir(mode=0o700)
    shutil.copy(inventory.walker(), walker)
    env = {**os.environ, walkstart.WALKER_ENV: str(walker), "PYTHONPATH": str(REPO / "src")}
    for delay in (0.05, 0.15):
        proc = subprocess.Popen(
            [sys.executable, "-m", "pantheros", "audit", "--json"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        assert _walkers_running(walker) == []


def test_no_walk_starts_ahead_with_a_walker_that_is_not_safe_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head runs nothing the audit would refuse: a walker others may replace, or none."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    shutil.copy(inventory.walker(), shared / walkstart.WALKER)
    monkeypatch.setenv(walkstart.WALKER_ENV, str(shared / walkstart.WALKER))
    walkstart.ahead()
    assert walkstart._ahead is None
    monkeypatch.setenv(walkstart.WALKER_ENV, str(tmp_path / "nothing"))
    walkstart.ahead()
    assert walkstart._ahead is None


def test_the_audit_of_this_machine_finds_the_same_with_the_walker_and_with_find() -> None:
    """The whole audit, both ways: the walker (started ahead, pantheros.main) and the find
    walk a walker that cannot run leaves it to; only the note of the fallback differs."""
    walked = panther("audit", "--json")
    found = panther("audit", "--json", env={walkstart.WALKER_ENV: "/nonexistent/walker"})
    assert walked.returncode == found.returncode, (walked.stderr, found.stderr)
    assert json.loads(walked.stdout)["findings"] == json.loads(found.stdout)["findings"]
    note = "the file walk ran find, more slowly: PANTHER_WALKER=/nonexistent/walker is not an"
    assert note in found.stderr
    assert "the file walk ran find" not in walked.stderr


@pytest.mark.parametrize(
    ("words", "ahead"),
    [
        (["audit"], True),
        (["audit", "--json", "--level", "strict"], True),
        (["audit", "--root", "/mnt"], False),
        (["audit", "--root=/"], False),
        (["audit", "--lab", "/var/lib/lab"], False),
        (["audit", "--help"], False),
        (["-v", "audit"], False),  # not recognised: the audit then starts its walk itself
        (["audit", "--ro", "/mnt"], False),  # argparse takes abbreviations
        (["audit", "--roo=/mnt"], False),
        (["audit", "--la", "/var/lib/lab"], False),
        (["audit", "--he"], False),
        (["audit", "--le", "strict"], True),  # --level
        (["roots", "list"], False),
        ([], False),
    ],
)
def test_only_an_audit_of_this_machine_starts_its_walk_ahead(words: list[str], ahead: bool) -> None:
    assert audits_this_machine(words) is ahead
