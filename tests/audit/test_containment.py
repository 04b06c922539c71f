"""`panther audit --root`: every read stays inside the tree; hostile files are skipped, not read.

Each case runs the real command line in a subprocess with a timeout, so a read that blocks (a
FIFO) fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pantheros.audit.system import System
from pantheros.audit.tree import MAX_BYTES, Tree
from tests.helpers import REPO


def audit(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "pantheros", "audit", "--root", str(root), "--json", *extra],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), "NO_COLOR": "1"},
        check=False,
    )
    assert proc.returncode in (0, 1, 7), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def finding(report: dict[str, Any], cid: str) -> dict[str, Any]:
    return next(f for f in report["findings"] if f["id"] == cid)


def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    return root


def test_an_absolute_symlink_is_re_rooted_at_the_tree(tmp_path: Path) -> None:
    host = tmp_path / "host" / "shadow"
    host.parent.mkdir()
    host.write_text("root:!:1::::::\neve::1::::::\n")  # the host file must never be read
    root = tree(tmp_path)
    (root / "etc/shadow").symlink_to(host)
    f = finding(audit(root)[1], "users.empty_password")
    assert f["status"] == "skipped"
    assert "missing" in f["reason"]
    # The same link, with the target present inside the tree: that file is what is read.
    inside = root / str(host).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("root:!:1::::::\nbob::1::::::\n")
    f = finding(audit(root)[1], "users.empty_password")
    assert (f["status"], f["actual"]) == ("fail", "bob")


def test_dot_dot_cannot_climb_out_of_the_tree(tmp_path: Path) -> None:
    root = tree(tmp_path)
    secret = tmp_path / "shadow"
    secret.write_text("eve::1::::::\n")
    (root / "etc/shadow").symlink_to("../../../../../../../.." + str(secret))
    f = finding(audit(root)[1], "users.empty_password")
    assert f["status"] == "skipped"


def test_a_fifo_is_skipped_without_blocking(tmp_path: Path) -> None:
    root = tree(tmp_path)
    os.mkfifo(root / "etc/shadow")
    f = finding(audit(root)[1], "users.empty_password")
    assert f["status"] == "skipped"
    assert "a FIFO" in f["reason"]


def test_links_to_devices_are_not_read(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "etc/shadow").symlink_to("/dev/zero")
    f = finding(audit(root)[1], "users.empty_password")
    assert (f["status"], f["reason"]) == ("skipped", "not readable: /etc/shadow: missing")
    if os.geteuid() != 0:
        pytest.skip("making a device node in the tree needs root")
    (root / "dev").mkdir()
    os.mknod(root / "dev/zero", 0o666 | 0o020000, os.makedev(1, 5))
    f = finding(audit(root)[1], "users.empty_password")
    assert f["status"] == "skipped"
    assert "a character device" in f["reason"]


def test_a_huge_file_is_refused_at_the_cap(tmp_path: Path) -> None:
    root = tree(tmp_path)
    with open(root / "etc/shadow", "wb") as out:
        out.truncate(MAX_BYTES + 1)
    f = finding(audit(root)[1], "users.empty_password")
    assert f["status"] == "skipped"
    assert "larger than" in f["reason"]
    with open(root / "etc/shadow", "r+b") as out:
        out.truncate(MAX_BYTES)
    assert Tree(root).read_bytes("etc/shadow") == bytes(MAX_BYTES)


def test_the_file_walk_does_not_follow_a_top_level_link_to_the_host(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "usr").symlink_to("/usr")  # the host's /usr has setuid binaries
    (root / "etc/NIXOS").write_text("")
    (root / "bin").mkdir()
    (root / "bin/own").write_text("")
    os.chmod(root / "bin/own", 0o4755)
    suid, _, _ = System(base=root, live=False).special_files
    assert suid == ["/bin/own"]
    f = finding(audit(root)[1], "files.suid")
    assert f["status"] == "fail"
    assert "/usr/" not in f["reason"]


def test_configuration_is_read_through_links_inside_the_tree(tmp_path: Path) -> None:
    """An offline NixOS tree: /etc/ssh/sshd_config -> /etc/static/... -> /nix/store/..."""
    root = tree(tmp_path)
    store = root / "nix/store/abc-etc/etc/ssh"
    store.mkdir(parents=True)
    (store / "sshd_config").write_text("# generated\nPermitRootLogin yes\n")
    (root / "etc/static").symlink_to("/nix/store/abc-etc/etc")
    (root / "etc/ssh").mkdir()
    (root / "etc/ssh/sshd_config").symlink_to("/etc/static/ssh/sshd_config")
    f = finding(audit(root)[1], "ssh.PermitRootLogin")
    assert (f["status"], f["actual"]) == ("fail", "yes")
    assert f["evidence"] == {"path": "/etc/ssh/sshd_config", "line": 2}


def test_a_file_name_that_is_not_utf8_is_reported_not_a_crash(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "etc/NIXOS").write_text("")
    (root / "usr/bin").mkdir(parents=True)
    odd = os.fsencode(root / "usr/bin") + b"/tool-\xff"
    with open(odd, "w") as out:
        out.write("")
    os.chmod(odd, 0o4755)
    f = finding(audit(root)[1], "files.suid")
    assert f["status"] == "fail"
    assert "/usr/bin/tool-" in f["reason"]
    text = subprocess.run(
        [sys.executable, "-m", "pantheros", "audit", "--root", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert text.returncode == 1, text.stderr
    assert "tool-\\xff" in text.stdout  # the byte, shown escaped


def test_the_trees_own_manifest_is_read_inside_the_tree(tmp_path: Path) -> None:
    host = tmp_path / "host-manifest.json"
    host.write_text("{")  # read from the host, it would be a bad-input error
    root = tree(tmp_path)
    (root / "etc/pantheros").mkdir()
    (root / "etc/pantheros/manifest.json").symlink_to(host)
    assert audit(root)[1]["manifest"] is None
    inside = root / str(host).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("{")
    proc = subprocess.run(
        [sys.executable, "-m", "pantheros", "audit", "--root", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 2
    assert "manifest.json: $: not JSON" in proc.stderr


@pytest.mark.root
def test_a_system_built_into_the_store_is_read_through_its_store_links(tmp_path: Path) -> None:
    """`--root ./result`: a NixOS toplevel whose links lead into the same store.

    A private mount namespace puts a scratch store at /nix/store for this one command.
    """
    store = tmp_path / "store"
    etc = store / "aaa-etc/etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "ssh/sshd_config").write_text("PermitRootLogin yes\n")
    (etc / "shadow").symlink_to("/etc/shadow")  # the host's: must not be read
    system = store / "bbb-nixos-system"
    system.mkdir()
    (system / "etc").symlink_to("/nix/store/aaa-etc/etc")
    (system / "kernel-params").write_text("loglevel=4 slab_nomerge\n")
    script = (
        f"mount --bind {store} /nix/store && exec {sys.executable} -m pantheros audit "
        "--root /nix/store/bbb-nixos-system --level hardened --json"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    ssh = finding(report, "ssh.PermitRootLogin")
    assert (ssh["status"], ssh["actual"]) == ("fail", "yes")
    assert finding(report, "cmdline.slab_nomerge")["status"] == "pass"
    shadow = finding(report, "users.empty_password")
    assert shadow["status"] == "skipped"
    assert "leaves the tree" in shadow["reason"]


@pytest.mark.root
def test_the_walk_skips_the_store_and_what_only_root_can_enter(tmp_path: Path) -> None:
    root = tmp_path / "tree [*]"  # -path takes a glob: the prune must match literally
    for rel in ("nix/store/abc-x/bin/s", "root/s", "home/alice/s", "var/open/s"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        path.chmod(0o4755)
    (root / "root").chmod(0o700)  # root's, 0700: only root reaches what is inside
    os.chown(root / "home/alice", 1000, 1000)
    (root / "home/alice").chmod(0o700)  # alice's: she can run what is inside
    suid, _, _ = System(base=root, live=False).special_files
    # Nix never stores a setuid bit, so the store is not walked.
    assert suid == ["/home/alice/s", "/var/open/s"]
