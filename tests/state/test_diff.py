"""`panther diff` against the truth a mutation script recorded, by the trees, send and walk."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.machine import Machine
from tests.helpers import one_line_error, panther
from tests.state import mutate

pytestmark = pytest.mark.root


def bless_blank(lab: Path) -> None:
    """Make the lab's current root its blank (a base image with content), then reboot."""
    machine = Machine.select(str(lab))
    assert panther("lab", "down", str(lab)).returncode == 0
    with machine.top_level() as top:
        blank = top / machine.manifest.storage.blank_snapshot
        btrfs.set_readonly(blank, False)
        btrfs.delete_subvolume(blank)
        btrfs.snapshot(top / "root", blank, readonly=True)
    assert panther("blank", "bless", "--lab", str(lab), "--yes").returncode == 0
    assert panther("lab", "up", str(lab)).returncode == 0
    assert panther("lab", "reboot", str(lab)).returncode == 0


@pytest.fixture(scope="module")
def mutated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, mutate.Truth]]:
    """A lab whose blank holds 3,000 files, and a root with every kind of change."""
    from tests.helpers import cleanup_under

    base = tmp_path_factory.mktemp("diff")
    os.environ["PANTHER_STATE_DIR"] = str(base / "state")
    lab = base / "lab"
    assert panther("lab", "up", str(lab), "--size", "2G").returncode == 0
    root = lab / "mnt"
    files = mutate.populate(root, 3000)
    bless_blank(lab)
    truth = mutate.apply(root, files, random_changes=3000)
    yield lab, truth
    cleanup_under(base)


def diff_json(lab: Path, *args: str) -> dict[str, dict[str, object]]:
    proc = panther("diff", "--json", "--lab", str(lab), *args)
    assert proc.returncode == 0, proc.stderr
    return {c["path"]: c for c in json.loads(proc.stdout)["changes"]}


def as_text(path: bytes) -> str:
    return str(json.loads(json.dumps(os.fsdecode(path))))


@pytest.mark.scenario("diff-and-persist: Every change reported")
@pytest.mark.parametrize("method", ["tree", "send", "walk"])
def test_every_change_is_reported_and_nothing_else(
    mutated: tuple[Path, mutate.Truth], method: str
) -> None:
    lab, truth = mutated
    found = diff_json(lab, "--method", method)
    expected = {as_text(p): k for p, k in truth.items() if k != "times"}
    missing = {p: k for p, k in expected.items() if p not in found}
    assert not missing, f"{len(missing)} changes missed, e.g. {list(missing.items())[:5]}"
    wrong = {p: (k, found[p]["kind"]) for p, k in expected.items() if found[p]["kind"] != k}
    assert not wrong, f"wrong kinds: {list(wrong.items())[:5]}"
    extra = {p: c["kind"] for p, c in found.items() if p not in expected}
    assert not extra, f"false entries: {list(extra.items())[:5]}"


def test_methods_agree_and_times_are_behind_a_flag(mutated: tuple[Path, mutate.Truth]) -> None:
    lab, truth = mutated
    send = diff_json(lab, "--method", "send", "--times")
    for method in ("tree", "walk"):
        other = diff_json(lab, "--method", method, "--times")
        kinds = {p: c["kind"] for p, c in other.items()}
        assert kinds == {p: c["kind"] for p, c in send.items()}, method
    touched = [as_text(p) for p, k in truth.items() if k == "times"]
    for path in touched:
        assert send[path]["kind"] == "times"
    # With --times, the only entries beyond the truth are directories whose entries changed.
    truth_text = {as_text(t) for t in truth}
    noise = {p: c for p, c in send.items() if p not in truth_text}
    assert all(c["type"] == "dir" and c["kind"] == "times" for c in noise.values()), noise


def test_renames_and_special_files_are_described(mutated: tuple[Path, mutate.Truth]) -> None:
    lab, _ = mutated
    found = diff_json(lab)
    assert found["/data/d39-renamed"]["old_path"] == "/data/d39"
    assert found["/new/fifo"]["type"] == "fifo"
    assert found["/new/null"]["type"] == "chardev"
    assert found["/new/symlink"]["type"] == "symlink"
    assert found["/new/sub"]["type"] == "subvolume"
    assert found["/new/hardlink-to-old"]["detail"] == "hardlink"
    assert found[as_text(b"/new/caf\xe9-latin1")]["kind"] == "created"


def test_filters_persisted_ignored_and_managed(workdir: Path) -> None:
    lab = workdir / "lab"
    assert panther("lab", "up", str(lab), "--size", "1G").returncode == 0
    root = lab / "mnt"
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc" / "keep-me").write_text("shown")
    (root / "etc" / "ignored.log").write_text("ignored")
    os.symlink("/etc/static/hosts", root / "etc" / "hosts")  # a NixOS-managed link
    (root / "var" / "cache").mkdir()
    (root / "var" / "cache" / "junk").write_text("x")
    (lab / "diff-ignore").write_text("# caches\n/var/cache\n")
    # The first boot's bind mount taken away: what lies in the root's own /var/lib/nixos.
    subprocess.run(["umount", str(root / "var" / "lib" / "nixos")], check=True)
    (root / "var" / "lib" / "nixos" / "uid-map").write_text("{}")  # declared persistent
    found = diff_json(lab, "--ignore", "*.log")
    assert "/etc/keep-me" in found
    assert "/etc/ignored.log" not in found
    assert "/etc/hosts" not in found
    assert not any(p.startswith("/var/cache") for p in found)
    assert not any(p.startswith("/var/lib") for p in found)
    text = panther("diff", "--lab", str(lab))
    assert "/etc  (2 created" in text.stdout
    listing = panther("diff", "--list", "--lab", str(lab)).stdout.splitlines()
    assert "+ /etc/keep-me" in listing
    proc = panther("diff", "--lab", str(lab), "--ignore-file", str(workdir / "nope"))
    assert "cannot read ignore file" in one_line_error(proc)
    # An ignore file is read byte for byte: a line that is not UTF-8 names such a file.
    (root / "etc").joinpath(os.fsdecode(b"caf\xe9")).write_text("latin-1 name")
    (workdir / "latin1-ignore").write_bytes(b"/etc/caf\xe9\n")
    latin1 = diff_json(lab, "--ignore-file", str(workdir / "latin1-ignore"))
    assert os.fsdecode(b"/etc/caf\xe9") not in latin1
    assert "/etc/keep-me" in latin1

    # What was left out, and why, on request: each reason names its rule and its source.
    assert "--show-excluded lists them" in text.stderr
    proc = panther("diff", "--json", "--show-excluded", "--lab", str(lab), "--ignore", "*.log")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    why = {e["path"]: e["why"] for e in report["excluded"]}
    assert len(why) == report["hidden"]
    assert why["/etc/ignored.log"] == "ignored: *.log (--ignore)"
    assert why["/var/cache/junk"] == f"ignored: /var/cache ({lab / 'diff-ignore'})"
    assert why["/etc/hosts"].startswith("a link NixOS makes again at every boot")
    assert why["/var/lib/nixos/uid-map"] == "persistent: /var/lib/nixos is declared"
    assert why["/var/lib"] == "made again at every boot, as the parent of /var/lib/nixos"
    assert not set(why) & set(found)
    assert "excluded" not in json.loads(panther("diff", "--json", "--lab", str(lab)).stdout)
    for mode in ((), ("--list",)):
        proc = panther("diff", *mode, "--show-excluded", "--lab", str(lab), "--ignore", "*.log")
        assert proc.returncode == 0, proc.stderr
        assert "left out: + /etc/ignored.log  (ignored: *.log (--ignore))" in proc.stdout
        assert "--show-excluded lists them" not in proc.stderr


def test_temporary_snapshot_is_always_removed(mutated: tuple[Path, mutate.Truth]) -> None:
    lab, _ = mutated
    diff_json(lab)
    machine = Machine.select(str(lab))
    with machine.top_level(readonly=True) as top:
        assert not [p for p in top.iterdir() if p.name.startswith(".pantheros-diff")]


def test_hostile_names_and_nested_subvolumes_are_listed_once_a_line_each(lab: Path) -> None:
    """Under a UTF-8 locale (not C), a name that is not UTF-8 must not crash the listing; a
    newline in a name must not forge a line; a subvolume in a subvolume is one change."""
    root = os.fsencode(lab / "mnt")
    btrfs.create_subvolume(Path(os.fsdecode(root + b"/outer")))
    btrfs.create_subvolume(Path(os.fsdecode(root + b"/outer/inner")))
    Path(os.fsdecode(root + b"/outer/inner/f")).write_text("x")
    names = [b"/latin1-caf\xe9", b"/forged\n+ etc-shadow", b"/clear\x1b[2J"]
    for name in names:
        Path(os.fsdecode(root + name)).write_text("x")
    proc = panther("diff", "--list", "--lab", str(lab), env={"PYTHONIOENCODING": "utf-8"})
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.splitlines()) == sorted(
        [
            "+ /outer",
            "+ /outer/inner",
            "+ /outer/inner/f",
            "+ /latin1-caf\\xe9",
            "+ /forged\\n+ etc-shadow",
            "+ /clear\\x1b[2J",
        ]
    )
    tree = panther("diff", "--lab", str(lab), env={"PYTHONIOENCODING": "utf-8"})
    assert tree.returncode == 0, tree.stderr
    assert "\x1b" not in tree.stdout
    assert "/latin1-caf\\xe9  (1 created" in tree.stdout
    found = json.loads(panther("diff", "--json", "--lab", str(lab)).stdout)["changes"]
    paths = [c["path"] for c in found]
    assert len(paths) == len(set(paths)) == 6
    assert {c["path"]: c["type"] for c in found}["/outer/inner"] == "subvolume"


def test_a_missing_blank_is_one_line_in_the_machine_s_words(lab: Path) -> None:
    """The top level is a private mount: its path means nothing to the user, and a path is
    text, never a bytes repr."""
    machine = Machine.select(str(lab))
    with machine.top_level() as top:
        os.rename(top / "root-blank", top / "kept-blank")
    try:
        proc = panther("diff", "--lab", str(lab))
        line = one_line_error(proc)
        assert line == (
            "panther: error: the blank snapshot root-blank is missing: nothing to diff against"
        )
        assert proc.returncode == 1
    finally:
        with machine.top_level() as top:
            os.rename(top / "kept-blank", top / "root-blank")
    assert panther("diff", "--lab", str(lab)).returncode == 0


def test_a_killed_diff_s_snapshot_is_removed_by_the_next(lab: Path) -> None:
    machine = Machine.select(str(lab))
    dead = subprocess.Popen(["true"])
    dead.wait()
    with machine.top_level() as top:
        btrfs.snapshot(top / "root", top / f".pantheros-diff-{dead.pid}", readonly=True)
        btrfs.snapshot(top / "root", top / f".pantheros-diff-{os.getpid()}", readonly=True)
        (top / f".pantheros-diff-empty-{dead.pid}").mkdir()  # not a subvolume: not touched
    proc = panther("diff", "--lab", str(lab))
    assert proc.returncode == 0, proc.stderr
    with machine.top_level() as top:
        left = sorted(p.name for p in top.iterdir() if p.name.startswith(".pantheros-diff"))
        assert left == [f".pantheros-diff-{os.getpid()}", f".pantheros-diff-empty-{dead.pid}"]
        btrfs.delete_subvolume(top / f".pantheros-diff-{os.getpid()}")
        (top / f".pantheros-diff-empty-{dead.pid}").rmdir()
