"""The one reader and writer of a machine's files (pantheros.files), on real files: records are
replaced whole or not at all, reached without a symlink, and only regular files are read, never
past the cap and never waiting on a FIFO."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pantheros import files
from pantheros.errors import ExitCode, PantherError


def test_write_json_replaces_whole_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_text("old")
    os.chmod(path, 0o600)
    files.write_json(path, {"b": 1, "a": [1, 2]}, beneath=tmp_path, sort_keys=True)
    text = path.read_text()
    assert json.loads(text) == {"a": [1, 2], "b": 1}
    assert text.index('"a"') < text.index('"b"')
    assert text.endswith("}\n")
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_write_json_of_what_json_cannot_encode_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    files.write_json(path, {"kept": True}, beneath=tmp_path)
    with pytest.raises(TypeError):
        files.write_json(path, {"big": "y" * 100000, "bad": object()}, beneath=tmp_path)
    assert json.loads(path.read_text()) == {"kept": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record.json"]


def test_replace_file_failing_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "record"
    files.replace_file(path, b"old", beneath=None)

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(PantherError) as raised:
        files.replace_file(path, b"new" * 100000, beneath=None)
    assert str(raised.value) == f"cannot write {path}: No space left on device"
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["record"]


def test_replace_file_killed_before_the_rename_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    files.write_json(path, {"kept": True}, beneath=tmp_path)
    # SIGKILLed with the new content written out, at the fsync before the rename.
    script = f"""
import os, signal
from pathlib import Path
from pantheros import files

os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
files.write_json(Path({str(path)!r}), {{"big": "y" * 1000000}}, beneath=None)
"""
    proc = subprocess.run([sys.executable, "-c", script], check=False)
    assert proc.returncode == -signal.SIGKILL
    assert json.loads(path.read_text()) == {"kept": True}
    leftovers = [p for p in tmp_path.iterdir() if p.name != "record.json"]
    assert len(leftovers) == 1
    assert leftovers[0].name.startswith(".record.json.")
    assert leftovers[0].name.endswith(".tmp")
    assert os.path.getsize(leftovers[0]) > 1000000  # it had written the new content
    files.write_json(path, {"next": 1}, beneath=tmp_path)  # the leftover never stands in the way
    assert json.loads(path.read_text()) == {"next": 1}


def test_write_json_flushes_the_file_before_and_the_directory_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def rename(src: str, dst: str, **dirs: int) -> None:
        events.append("rename")
        real_rename(src, dst, **dirs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    files.write_json(tmp_path / "record.json", [1], beneath=tmp_path)
    assert events == ["fsync file", "rename", "fsync dir"]


def test_write_json_does_not_follow_a_planted_name(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_text("untouched")
    records = tmp_path / "records"
    records.mkdir()
    for name in ("record.json.tmp", ".record.json.tmp", "record.json"):
        (records / name).symlink_to(outside)
    files.write_json(records / "record.json", {"a": 1}, beneath=records)
    assert outside.read_text() == "untouched"
    assert json.loads((records / "record.json").read_text()) == {"a": 1}


def test_write_json_into_a_missing_directory_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(PantherError) as raised:
        files.write_json(tmp_path / "absent" / "record.json", {}, beneath=None)
    assert str(raised.value) == (
        f"cannot write {tmp_path}/absent/record.json: {tmp_path}/absent does not exist"
    )


def test_records_beneath_a_base_make_their_directories_but_never_through_a_symlink(
    tmp_path: Path,
) -> None:
    base = tmp_path / "persist"
    base.mkdir()
    files.write_json(base / ".pantheros" / "journal" / "a.json", {"a": 1}, beneath=base)
    assert json.loads((base / ".pantheros" / "journal" / "a.json").read_text()) == {"a": 1}
    assert stat.S_IMODE(os.lstat(base / ".pantheros").st_mode) == 0o755

    host = tmp_path / "host"
    host.mkdir()
    (host / "rollback.json").write_text('{"planted": true}')
    other = tmp_path / "other"
    other.mkdir()
    (other / ".pantheros").symlink_to(host)  # a machine's records pointed at the host
    (other / "up").symlink_to("..")
    for rel in (".pantheros/rollback.json", ".pantheros/new/x.json", "up/other/x.json"):
        path = other / rel
        with pytest.raises(files.Unreadable) as raised:
            files.write_json(path, {"written": True}, beneath=other)
        assert "a symlink on its way" in str(raised.value)
        with pytest.raises(files.Unreadable):
            files.read_json(path, beneath=other)
        with pytest.raises(files.Unreadable):
            files.remove_file(path, beneath=other)
    assert sorted(p.name for p in host.iterdir()) == ["rollback.json"]
    assert json.loads((host / "rollback.json").read_text()) == {"planted": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host", "other", "persist"]

    # The record itself a symlink: refused on reading, replaced (not followed) on writing.
    (base / "linked.json").symlink_to(host / "rollback.json")
    with pytest.raises(files.Unreadable, match="a symlink, not a regular file: not read"):
        files.read_json(base / "linked.json", beneath=base)
    files.remove_file(base / "linked.json", beneath=base)
    assert not os.path.lexists(base / "linked.json")
    assert (host / "rollback.json").exists()


def test_a_path_outside_its_base_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(PantherError, match="is not under"):
        files.read_bytes(Path("/etc/hostname"), beneath=tmp_path)
    with pytest.raises(PantherError, match="is not a file under"):
        files.read_bytes(tmp_path / "a" / ".." / ".." / "x", beneath=tmp_path)


def _with_timeout(function: object, seconds: float = 10) -> BaseException | None:
    """Run function in a thread; fail the test if it does not return (a read that hangs)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            function()  # type: ignore[operator]
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still running after {seconds} s: it hangs"
    return outcome[0]


@pytest.mark.parametrize("beneath", [True, False])
def test_only_a_regular_file_is_read_and_never_past_the_cap(tmp_path: Path, beneath: bool) -> None:
    base = tmp_path if beneath else None
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    raised = _with_timeout(lambda: files.read_json(fifo, beneath=base, what="the record"))
    assert isinstance(raised, files.Unreadable)
    assert str(raised) == f"the record {fifo}: a FIFO, not a regular file: not read"
    assert raised.exit_code == ExitCode.REFUSED

    directory = tmp_path / "dir"
    directory.mkdir()
    with pytest.raises(files.Unreadable, match="a directory, not a regular file"):
        files.read_bytes(directory, beneath=base)

    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(files.MAX_BYTES + 1)
    with pytest.raises(files.Unreadable, match="larger than 16 MiB: not read"):
        files.read_bytes(big, beneath=base)
    assert files.read_bytes(big, beneath=base, limit=files.MAX_BYTES + 1) is not None

    assert files.read_bytes(tmp_path / "absent", beneath=base) is None
    assert files.read_json(tmp_path / "absent", beneath=base) is None


def test_a_link_to_a_device_is_refused_where_links_are_followed(tmp_path: Path) -> None:
    # A path the user named is followed (NixOS links /etc into the store); a device is not read.
    (tmp_path / "zero").symlink_to("/dev/zero")
    raised = _with_timeout(lambda: files.read_bytes(tmp_path / "zero", beneath=None))
    assert isinstance(raised, files.Unreadable)
    assert "a character device, not a regular file" in str(raised)
    # Where the path is panther's own, the link itself is refused.
    with pytest.raises(files.Unreadable, match="a symlink, not a regular file"):
        files.read_bytes(tmp_path / "zero", beneath=tmp_path)
    (tmp_path / "real").write_text("{}")
    (tmp_path / "link").symlink_to("real")
    assert files.read_json(tmp_path / "link", beneath=None) == {}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown to another owner)")
def test_a_record_panther_did_not_write_is_refused(tmp_path: Path) -> None:
    record = tmp_path / "record.json"
    record.write_text("{}")
    os.chown(record, 1000, 1000)
    with pytest.raises(files.Unreadable, match="owned by uid 1000, not by root"):
        files.read_json(record, beneath=tmp_path)
    assert files.read_json(record, beneath=None) == {}  # a file the user names may be theirs
    os.chown(record, 0, 0)
    os.chmod(record, 0o666)
    with pytest.raises(files.Unreadable, match="writable by everyone"):
        files.read_json(record, beneath=tmp_path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('{"a": ' * 100000 + "1" + "}" * 100000, "nested too deeply"),
        ('{"time": 1e400}', "1e400 is not a finite number"),
        ('{"time": -1e400}', "-1e400 is not a finite number"),
        ('{"n": ' + "9" * 5000 + "}", "an integer of 5000 digits"),
        ('{"n": NaN}', "NaN is not a JSON number"),
        ('{"n": Infinity}', "Infinity is not a JSON number"),
        ('{"n": -Infinity}', "-Infinity is not a JSON number"),
        ('{"name": "\\ud800"}', "lone surrogate"),
        ('{"\\udcff": 1}', "lone surrogate"),
        ("{", "not JSON: Expecting property name enclosed in double quotes at line 1"),
    ],
)
def test_bad_json_is_one_line_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "record.json"
    path.write_text(text)
    with pytest.raises(files.BadRecord) as raised:
        files.read_json(path, beneath=tmp_path, what="the pin file")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"the pin file {path} is not valid: ")
    assert says in message
    assert raised.value.exit_code == ExitCode.USAGE


def test_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "record.json"
    path.write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(files.BadRecord, match=r"not valid: not UTF-8 \(byte 10\)"):
        files.read_json(path, beneath=None)
    assert files.parse_json('{"a": 1.5, "b": [' + "1" * 40 + "]}") == {
        "a": 1.5,
        "b": [int("1" * 40)],
    }


def test_a_killed_write_of_a_hidden_record_leaves_a_name_starting_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`.pantheros-pins.json.<hex>.tmp`: the old-roots listing knows it for the pins' own."""

    def killed(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    real_unlink = os.unlink
    monkeypatch.setattr(os, "unlink", lambda *a, **k: None)  # as if killed before cleaning up
    with pytest.raises(KeyboardInterrupt):
        files.write_json(tmp_path / ".pantheros-pins.json", {}, beneath=tmp_path)
    monkeypatch.setattr(os, "unlink", real_unlink)
    [left] = tmp_path.iterdir()
    assert left.name.startswith(".pantheros-pins.json.")
    assert left.name.endswith(".tmp")
