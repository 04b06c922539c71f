"""`panther diff --method tree` where btrfs's metadata is hardest to read, against the truth.

Deletions that empty whole leaves (the scan cannot see them, only the directory sizes can), a
nested subvolume added where a name of the same length went, names in INODE_EXTREF items, holes
punched without a change of size, files replaced under the same name or by a rename, and a
directory deleted after a file moved out of it. Every method must agree on every path, and the
tree method must be the one `auto` picks on a root made from the blank.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.errors import PantherError
from pantheros.impermanence import bootstep
from pantheros.machine import Machine
from pantheros.state import diff, treediff
from tests.helpers import one_line_error, panther
from tests.state.test_diff import bless_blank, diff_json

pytestmark = pytest.mark.root

FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000
LONG = "x" * 196  # hard link names long enough that one INODE_REF item cannot hold them all


def build_blank(root: Path) -> None:
    (root / "big").mkdir()
    for number in range(3000):
        (root / "big" / f"f{number:05}").write_bytes(b"b" * (number % 5))
    (root / "sub").mkdir()
    for name in ("aaaa", "cccc"):
        (root / "sub" / name).write_text(name)
    (root / "cow").mkdir()
    (root / "cow" / "file").write_bytes(os.urandom(1 << 20))
    (root / "nocow").mkdir()
    with open(root / "nocow" / "file", "wb") as f:
        fcntl.ioctl(f.fileno(), FS_IOC_SETFLAGS, struct.pack("i", FS_NOCOW_FL))
        f.write(os.urandom(1 << 20))
    (root / "links").mkdir()
    (root / "links" / "target").write_text("linked")
    for number in range(300):
        os.link(root / "links" / "target", root / "links" / f"l{number:03}{LONG}")
    for rel in ("tree/a/b/c/x", "tree/a/b/y", "tree/a/z", "tree/keep"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    (root / "meta").mkdir()
    (root / "meta" / "file").write_bytes(os.urandom(2 << 20))
    (root / "meta" / "x").write_text("x")
    os.setxattr(root / "meta" / "x", "user.k", b"v")
    (root / "same").mkdir()
    (root / "same" / "f").write_text("same size")
    (root / "rep").mkdir()
    (root / "rep" / "a").write_text("a")
    (root / "rep" / "b").write_text("b")
    (root / "edge").mkdir()
    for number in range(100):
        (root / "edge" / f"e{number:03}").write_text("e")


def change(root: Path) -> dict[str, str]:
    """Apply the changes; returns what a correct diff reports (path -> kind)."""
    truth: dict[str, str] = {}
    for number in range(1000, 2500):  # contiguous: whole leaves of items go
        (root / "big" / f"f{number:05}").unlink()
        truth[f"/big/f{number:05}"] = "deleted"
    btrfs.create_subvolume(root / "sub" / "bbbb")  # a name as long as the one deleted
    (root / "sub" / "aaaa").unlink()
    truth["/sub/bbbb"] = "created"
    truth["/sub/aaaa"] = "deleted"
    size = (root / "cow" / "file").stat().st_size
    subprocess.run(
        ["fallocate", "--punch-hole", "--offset", "0", "--length", "65536", root / "cow" / "file"],
        check=True,
    )
    assert (root / "cow" / "file").stat().st_size == size
    truth["/cow/file"] = "modified"
    with open(root / "nocow" / "file", "r+b") as f:
        f.seek(100)
        f.write(b"changed in place")
    truth["/nocow/file"] = "modified"
    for number in range(100):
        (root / "links" / f"l{number:03}{LONG}").unlink()
        truth[f"/links/l{number:03}{LONG}"] = "deleted"
    for number in range(300, 350):
        os.link(root / "links" / "target", root / "links" / f"l{number:03}{LONG}")
        truth[f"/links/l{number:03}{LONG}"] = "created"
    os.rename(root / "tree/a/b/c/x", root / "tree/moved-x")
    truth["/tree/moved-x"] = "renamed"
    subprocess.run(["rm", "-r", root / "tree" / "a"], check=True)
    for rel in ("a", "a/b", "a/b/c", "a/b/y", "a/z"):
        truth[f"/tree/{rel}"] = "deleted"
    os.chmod(root / "meta" / "file", 0o600)
    truth["/meta/file"] = "metadata"
    os.removexattr(root / "meta" / "x", "user.k")
    truth["/meta/x"] = "metadata"
    (root / "same" / "f").unlink()
    (root / "same" / "f").write_text("same size")
    truth["/same/f"] = "modified"
    os.rename(root / "rep" / "a", root / "rep" / "b")
    truth["/rep/a"] = "deleted"
    truth["/rep/b"] = "modified"
    for number in (0, 1):  # the first indices of a directory
        (root / "edge" / f"e{number:03}").unlink()
        truth[f"/edge/e{number:03}"] = "deleted"
    return truth


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    from tests.helpers import cleanup_under

    base = tmp_path_factory.mktemp("treediff")
    os.environ["PANTHER_STATE_DIR"] = str(base / "state")
    lab = base / "lab"
    assert panther("lab", "up", str(lab), "--size", "2G").returncode == 0
    build_blank(lab / "mnt")
    bless_blank(lab)
    truth = change(lab / "mnt")
    yield lab, truth
    cleanup_under(base)


def test_every_method_finds_the_hard_cases(changed: tuple[Path, dict[str, str]]) -> None:
    lab, truth = changed
    found = {}
    for method in ("tree", "send", "walk"):
        found[method] = {p: c["kind"] for p, c in diff_json(lab, "--method", method).items()}
        missing = {p: k for p, k in truth.items() if found[method].get(p) != k}
        assert not missing, f"{method}: {len(missing)} wrong, e.g. {list(missing.items())[:5]}"
    assert found["tree"] == found["send"] == found["walk"]
    report = json.loads(panther("diff", "--json", "--lab", str(lab)).stdout)
    assert report["method"] == "tree"


def test_leaves_emptied_whole_are_found_through_the_directory_size(
    changed: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The 1,500 names deleted from /big leave no hole the scan sees: the windows find them."""
    lab, truth = changed
    windows: list[tuple[int, int]] = []
    real = treediff._lost_in

    def spy(*args: object, **kwargs: object) -> list[treediff.Entry]:
        windows.append(args[3])  # type: ignore[arg-type]
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(treediff, "_lost_in", spy)
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        since = diff.tree_since(top, "root", "root-blank")
        assert since is not None
        snapshot = top / "test-snapshot"
        btrfs.snapshot(top / "root", snapshot, readonly=True)
        try:
            found = diff.tree_candidates(top, top / "root-blank", snapshot, since)
        finally:
            btrfs.delete_subvolume(snapshot)
    assert windows, "the scan alone accounted for every deletion: the test lost its point"
    removed = {"/" + os.fsdecode(p) for p in found.removed}
    assert {p for p, k in truth.items() if k == "deleted"} <= removed


def test_tree_is_refused_when_the_root_was_not_made_from_this_blank(workdir: Path) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    (lab / "mnt" / "file").write_text("x")
    assert panther("lab", "down", str(lab)).returncode == 0
    machine = Machine.select(str(lab))
    with machine.top_level() as top:  # a new blank, the root left as it was
        btrfs.set_readonly(top / "root-blank", False)
        btrfs.delete_subvolume(top / "root-blank")
        btrfs.snapshot(top / "root", top / "root-blank", readonly=True)
    assert panther("lab", "up", str(lab)).returncode == 0
    proc = panther("diff", "--json", "--lab", str(lab), "--method", "tree")
    assert proc.returncode == 2
    assert "is not an unchanged snapshot of root-blank" in one_line_error(proc)
    auto = json.loads(panther("diff", "--json", "--lab", str(lab)).stdout)
    assert auto["method"] == "walk"  # what auto chose before the trees: a blank of few entries
    assert "/file" not in {c["path"] for c in auto["changes"]}  # the blank holds it now


def test_the_helper_reads_the_changed_leaves_as_python_does(
    changed: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """`changed-since` (the boot step's helper, in C) and the Python scan it stands in for
    read the same from the hard cases' leaves (extrefs, a nested subvolume, emptied leaves);
    without the helper, or with one that cannot run, the diff reads them in Python."""
    lab, _ = changed
    helper = bootstep.artifact_dir() / bootstep.HELPER
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        since = diff.tree_since(top, "root", "root-blank")
        assert since is not None
        with btrfs.opened(top) as fd:
            tree = treediff.Tree(fd, btrfs.subvolume_info(top / "root").id)
            python = treediff._scan(tree, since)
            assert treediff.changed_leaves(tree, since, helper) == python
            assert treediff.changed_leaves(tree, since, None) == python
            assert treediff.changed_leaves(tree, since, tmp_path / "missing") == python
    assert any(len(names) > 1 for names in python.names.values())  # the 300 links
    assert python.added
    assert python.seen


def test_the_helpers_records_are_read_whole_or_refused() -> None:
    good = b"I" + struct.pack("=7Q", 300, 1, 2, 3, 1, 0o100644, 0)
    assert treediff._read_scan(good).changed[300].mode == 0o100644
    for bad in (good[:-1], good + b"Z", b"R" + struct.pack("=QQQH", 300, 256, 2, 9) + b"short"):
        with pytest.raises(PantherError, match="changed-since"):
            treediff._read_scan(bad)
