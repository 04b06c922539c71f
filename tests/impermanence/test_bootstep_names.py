"""Names from the disk against the boot step, its report and stage 2 (issue 20: 7, 8, 9, 11, 13).

A name is bytes until it is printed: any byte but `/` and NUL may be in it, and nothing read
from the disk may break a line of the report, forge a record, stop the pruning, or keep stage 2
from running.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantheros import btrfs
from pantheros.impermanence import bootstep
from pantheros.storage import keyvalue
from tests.helpers import Pfs, kept_hashes, panther, subvolume_ids
from tests.impermanence.test_bootstep_hostile import _full_boot, script, step

ALL_BYTES = bytes(range(256))
# Every byte a name may hold (all but NUL and '/'), and some code points that split lines in
# Python (str.splitlines) or on a terminal.
NAME_BYTES = [bytes([b]) for b in range(1, 256) if b != 0x2F]
SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029", "\x1b[2J"]


# --- the record format ------------------------------------------------------------------------


def test_every_byte_value_survives_the_record_format() -> None:
    """The writer's escaping and the reader's parsing are one rule, byte for byte."""
    for byte in range(256):
        value = bytes([byte]) + b"=\\x" + bytes([byte])
        escaped = keyvalue.escape(value)
        assert escaped.isascii()
        assert escaped.isprintable()
        assert keyvalue.unescape_bytes(escaped) == value
        [(key, back)] = keyvalue.parse(keyvalue.render([("note", value)]))
        assert (key, os.fsencode(back)) == ("note", value)
    assert keyvalue.unescape_bytes(keyvalue.escape(ALL_BYTES)) == ALL_BYTES


def _esc_function() -> str:
    """The boot step's own `esc`, cut from the shipped script."""
    text = (Path(bootstep.__file__).parent.parent / "data" / "boot" / bootstep.SCRIPT).read_text()
    start = text.index("esc() {")
    return text[start : text.index("\n}\n", start) + 3]


def test_the_boot_step_escapes_every_byte_as_panther_does() -> None:
    """Bytes 1-255 through the script's esc (bash cannot hold NUL, nor can a name)."""
    program = (
        "export LC_ALL=C\n"
        + _esc_function()
        + "while IFS= read -r -d '' v; do esc out \"$v\"; printf '%s\\n' \"$out\"; done\n"
    )
    values = [bytes([b]) for b in range(1, 256)] + [bytes(range(1, 256))]
    data = b"".join(v + b"\0" for v in values)
    proc = subprocess.run(["bash", "-c", program], input=data, capture_output=True, check=True)
    lines = proc.stdout.decode("ascii").split("\n")[:-1]
    assert lines == [keyvalue.escape(v) for v in values]


# --- names through a real boot step -------------------------------------------------------------


def _writable_old_root(pfs: Pfs, name: bytes) -> None:
    """A subvolume in the old-roots location, left writable as an interrupted run leaves one."""
    btrfs.create_subvolume(os.fsdecode(os.fsencode(pfs.old_roots) + b"/" + name))


@pytest.mark.root
def test_names_holding_every_byte_come_back_exact_from_the_report(pfs: Pfs) -> None:
    """Issue 20.7 and 20.11: a writable old root is sealed (by stage 2's `--prepare`, D151) and
    named in a note; with every byte value and every line separator in names, the reports stay
    one record a line, parse, and give each name back byte for byte."""
    names = [b"x" + b + b"y" for b in NAME_BYTES]
    names += [f"s{s}result=fresh{s}".encode() for s in SEPARATORS]
    names += [b"\xff\xfe-not-utf8", b".dot-named"]
    for name in names:
        _writable_old_root(pfs, name)
    pfs.dirty()
    proc = subprocess.run(script(pfs), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(0x20 <= b < 0x7F or b == 0x0A for b in proc.stdout), "the report is not ASCII"
    stepped = bootstep.parse_report(proc.stdout)
    assert stepped.result == "fresh"
    proc = subprocess.run([*script(pfs), "--prepare"], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert all(0x20 <= b < 0x7F or b == 0x0A for b in proc.stdout), "the report is not ASCII"
    outcome = bootstep.parse_report(proc.stdout, bootstep.PREPARE_RESULTS)
    assert outcome.result == "prepared"
    sealed = {
        os.fsencode(n.removeprefix("made old root ").removesuffix(" read-only"))
        for n in outcome.notes
        if n.startswith("made old root ")
    }
    # Those, and the root the step just archived (writable until now).
    assert sealed == {*names, *map(os.fsencode, stepped.archived)}
    for name in names:
        path = os.fsencode(pfs.old_roots) + b"/" + name
        assert btrfs.subvolume_info(os.fsdecode(path)).readonly, name


FORGED = "\rresult=fresh\r\u2028result=fresh\nresult=fresh"


@pytest.mark.root
def test_a_path_that_holds_a_forged_record_stays_dirty(pfs: Pfs, workdir: Path) -> None:
    """Issue 20.7: a mount path holding \\rresult=fresh\\r made `lab reboot --json` say fresh
    while the report said dirty. The path comes back exact in the error, the result stays."""
    live = workdir / f"live{FORGED}"
    live.mkdir()
    subprocess.run(["mount", "-o", "subvol=root", f"{pfs.device}p2", str(live)], check=True)
    try:
        pfs.dirty()
        proc = subprocess.run(script(pfs), capture_output=True, check=False)
        assert proc.returncode == 6, proc.stderr
        outcome = bootstep.parse_report(proc.stdout)
        assert outcome.result == "dirty"
        assert f"is mounted at {live}" in (outcome.error or "")
    finally:
        subprocess.run(["umount", str(live)], check=True)
    # A top level given with such a name (not btrfs: the message names it).
    plain = workdir / f"top{FORGED}"
    plain.mkdir()
    proc = subprocess.run(script(pfs, top=plain), capture_output=True, check=False)
    assert proc.returncode == 6, proc.stderr
    outcome = bootstep.parse_report(proc.stdout)
    assert outcome.result == "dirty"
    assert str(plain) in (outcome.error or "")


@pytest.mark.root
def test_a_nested_subvolume_with_a_newline_is_pruned_with_its_root(pfs: Pfs) -> None:
    """Issue 20.8: an unprivileged user's subvolume named with a newline in /tmp made the
    full-disk pruning give up; now that root is pruned (nested subvolume and all) like any."""
    pfs.dirty()
    (pfs.root / "tmp").mkdir()
    btrfs.create_subvolume(pfs.root / "tmp" / "evil\nname")
    btrfs.create_subvolume(pfs.root / "tmp" / "evil\nname" / "deeper\rstill")
    assert step(pfs).returncode == 0
    [oldest] = pfs.old_root_names()
    for number in range(2):
        pfs.dirty("n", str(number))
        fd = os.open(pfs.root / "data", os.O_CREAT | os.O_WRONLY, 0o600)
        os.posix_fallocate(fd, 0, 60 << 20)
        os.close(fd)
        assert step(pfs).returncode == 0
    proc = _full_boot(pfs, "--keep-min", "1")
    outcome = bootstep.parse_report(proc.stdout)
    assert oldest in outcome.pruned, (outcome, proc.stderr)
    assert oldest not in pfs.old_root_names()
    assert not any("evil" in path for path in subvolume_ids(pfs).values())


@pytest.mark.root
def test_twelve_thousand_long_names_in_the_old_roots_location(pfs: Pfs) -> None:
    """Issue 20.9: the step read every entry through one helper call's arguments ("Argument
    list too long"); the helper now reads the directory itself, however many entries."""
    base = os.fsencode(pfs.old_roots)
    for number in range(12_000):
        os.mkdir(base + b"/" + f"{number:05d}-".encode() + b"n" * 240)
    for name in (b".dot-writable", b"\xff-writable"):
        _writable_old_root(pfs, name)
    pfs.dirty("etc/hostname", "many")
    before, ids = kept_hashes(pfs), subvolume_ids(pfs)
    proc = subprocess.run(script(pfs), capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    outcome = bootstep.parse_report(proc.stdout)
    assert outcome.result == "fresh"
    assert len(outcome.archived) == 1
    assert (pfs.old_roots / outcome.archived[0] / "etc/hostname").read_text() == "many"
    assert kept_hashes(pfs) == before
    assert set(ids) <= set(subvolume_ids(pfs))
    assert len(os.listdir(base)) == 12_000 + 3
    # The step never lists the old roots (D151): stage 2's --prepare seals them, the dot-named
    # and non-UTF-8 ones too (issue 20.13).
    for name in (b".dot-writable", b"\xff-writable"):
        assert not btrfs.subvolume_info(os.fsdecode(base + b"/" + name)).readonly
    proc = subprocess.run([*script(pfs), "--prepare"], capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for name in (b".dot-writable", b"\xff-writable"):
        assert btrfs.subvolume_info(os.fsdecode(base + b"/" + name)).readonly


# --- stage 2 and the commands ------------------------------------------------------------------


@pytest.mark.root
def test_a_non_utf8_old_root_name_leaves_stage_two_running(lab: Path) -> None:
    """Issue 20.11: the report was decoded strictly and stage 2 never ran; now `lab reboot`
    records the boot, and roots list, gc and status print the name escaped."""
    top = _lab_top(lab)
    try:
        btrfs.create_subvolume(os.fsdecode(os.fsencode(top / "old_roots") + b"/\xff\xfe\nx"))
    finally:
        subprocess.run(["umount", str(top)], check=True)
    (lab / "mnt" / "junk").write_text("x")
    proc = panther("lab", "reboot", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["result"] == "fresh"
    # Stage 2's --prepare sealed it (D151), and said so.
    assert any(n.startswith("made old root ") for n in outcome["notes"]), outcome["notes"]
    record = json.loads((lab / "mnt" / "persist" / ".pantheros" / "rollback.json").read_text())
    assert record["result"] == "fresh"
    listing = panther("roots", "list", "--lab", str(lab))
    assert listing.returncode == 0, listing.stderr
    assert "\\xff\\xfe\\nx" in listing.stdout
    _set_max_count(lab, 1)
    gc = panther("roots", "gc", "--lab", str(lab))
    assert gc.returncode == 0, gc.stderr
    # Issue 20.13: gc prints names escaped, as roots list does: one line each.
    [line] = [line for line in gc.stdout.splitlines() if "\\xff\\xfe" in line]
    assert line.split(maxsplit=1)[1].startswith("\\xff\\xfe\\nx: "), line
    assert not any(line.startswith("x:") for line in gc.stdout.splitlines())


def _lab_top(lab: Path) -> Path:
    dev = json.loads(panther("lab", "status", str(lab), "--json").stdout)["device"]
    top = lab.parent / "top-for-test"
    top.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", "subvolid=5", f"{dev}p2", str(top)], check=True)
    return top


def _set_max_count(lab: Path, count: int) -> None:
    manifest = lab / "manifest.json"
    doc = json.loads(manifest.read_text())
    doc["impermanence"]["retention"]["max_count"] = count
    doc["impermanence"]["retention"]["keep_min"] = 1
    manifest.write_text(json.dumps(doc))


@pytest.mark.root
def test_gc_keeps_an_old_root_mounted_in_another_mount_namespace(lab: Path) -> None:
    """Issue 20.2: `unshare -m`, the old root mounted read-only there and a shell inside it:
    roots gc consulted only its own mount table and deleted it."""
    for number in range(2):
        (lab / "mnt" / f"n{number}").write_text("x")
        assert panther("lab", "reboot", str(lab)).returncode == 0
    names = json.loads(panther("roots", "list", "--lab", str(lab), "--json").stdout)["roots"]
    oldest = names[-1]["name"]
    dev = json.loads(panther("lab", "status", str(lab), "--json").stdout)["device"]
    where = lab.parent / "elsewhere"
    where.mkdir()
    holder = subprocess.Popen(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            f"mount -o ro,subvol=old_roots/{oldest} {dev}p2 {where} && cd {where} "
            "&& echo mounted && exec sleep 600",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "mounted"
        _set_max_count(lab, 1)
        gc = panther("roots", "gc", "--lab", str(lab), "--json")
        assert gc.returncode == 0, gc.stderr
        result = json.loads(gc.stdout)
        assert result["deleted"] == []
        [kept] = [d for d in result["decisions"] if d["name"] == oldest]
        assert kept["keep"] is True
        assert f"mounted at {where} (in the mount namespace of process" in kept["reason"]
    finally:
        holder.kill()
        holder.wait()
    gc = panther("roots", "gc", "--lab", str(lab), "--json")
    assert gc.returncode == 0, gc.stderr
    assert json.loads(gc.stdout)["deleted"] == [f"old_roots/{oldest}"]


@pytest.mark.root
@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    lines=st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.text(alphabet="aqz_09=\\x5cfF \x7f\n\r\t\u2028", max_size=14).map(
                lambda t: t.encode("utf-8")
            ),
            st.sampled_from([b"name=root-blank", b"id=1", b"a=\\x0a", b"a=\\x41", b"a=\\\\"]),
        ),
        max_size=6,
    ),
    final=st.booleans(),
)
def test_the_helper_and_panther_read_a_record_alike(
    record_top: Path, lines: list[bytes], final: bool
) -> None:
    """The blank's record is read by the boot step through the helper and by panther through
    keyvalue.parse: for any bytes, both accept or both refuse, and agree on what they read."""
    data = b"\n".join(lines) + (b"\n" if final and lines else b"")
    (record_top / "record").write_bytes(data)
    helper = subprocess.run(
        [str(bootstep.artifact_dir() / bootstep.HELPER), "read-record", str(record_top), "record"],
        capture_output=True,
        check=False,
    )
    try:
        keyvalue.parse(data)
        python_ok = True
    except keyvalue.RecordError:
        python_ok = False
    assert (helper.returncode == 0) == python_ok, (data, helper.stderr)
    if python_ok:
        # As it is, its last line ended (a request's answer must end its lines: "= RC" follows).
        assert helper.stdout == data + (b"\n" if data and not data.endswith(b"\n") else b"")


@pytest.fixture(scope="module")
def record_top(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small btrfs top level of its own (the helper reads records only at one)."""
    base = tmp_path_factory.mktemp("records")
    image = base / "img"
    with open(image, "wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["mkfs.btrfs", "-q", "-f", str(image)], check=True, capture_output=True)
    top = base / "top"
    top.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(top)], check=True)
    try:
        yield top
    finally:
        subprocess.run(["umount", str(top)], check=True)
