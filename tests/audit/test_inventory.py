"""The audit's file walk (pantheros.audit.inventory) finds exactly what the single `find` walk
before it found, on a tree with every kind of finding, hostile names, links, and mounts inside
it, however many `find` processes share it.

The mounts live in a private mount namespace of the test process (the kernel drops them with
it); the old walk (tests/audit/findwalk.py) runs in it too, as a subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pantheros.audit import inventory
from pantheros.audit.system import SCAN_DIRS, System
from pantheros.storage import mounts
from tests.audit.findwalk import find_walk

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


def test_the_walk_finds_what_find_found(tree: Path) -> None:
    system = System(base=tree, live=False)
    base = str(tree.resolve())
    tops = [
        str(tree / top)
        for top in SCAN_DIRS
        if (tree / top).is_dir() and os.path.realpath(tree / top) == str(tree / top)
    ]
    pruned = system.walk_pruned()
    before = find_walk(base, tops, pruned)
    for lanes in (1, 2, 4):
        found = inventory.Walk(base, tops, frozenset(pruned), lanes).result()
        assert (found.suid, found.caps, found.writable) == before, lanes
        assert not found.errors
    assert system.special_files == before

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
    assert caps == ["/srv/bind/capable", "/usr/bin/capable"]
    assert set(writable) == {
        "/etc/open",
        "/etc/writable",
        "/etc/sticky/writable",
        "/var/mnt-rw/w",
        "/var/mnt-nosuid/w",
        "/var/mnt-ro/w",
    }


def test_a_find_that_was_killed_runs_again(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    for number in range(20000):
        (root / "usr" / f"d{number % 2}").mkdir(parents=True, exist_ok=True)
        (root / "usr" / f"d{number % 2}" / f"f{number}").write_text("")
    setuid(root / "usr" / "d0" / "s")
    setuid(root / "usr" / "d1" / "s")
    setuid(root / "usr" / "top-level")  # read here, before any find starts
    walk = inventory.Walk(str(root), [str(root / "usr")], frozenset(), 2)
    assert len(walk.lanes) == 2
    walk.lanes[0].find.send_signal(signal.SIGKILL)
    assert walk.lanes[0].find.wait() == -signal.SIGKILL  # killed before it was done
    found = walk.result()
    assert found.suid == ["/usr/d0/s", "/usr/d1/s", "/usr/top-level"]
    assert not found.errors
