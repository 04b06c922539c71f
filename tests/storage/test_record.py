"""The mount record: typed, saved and loaded whole, checked before any of it is trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pantheros.storage.record import (
    FORMAT_VERSION,
    MountKind,
    MountRecord,
    RecordedMount,
    RecordError,
    record_file,
)
from tests.helpers import one_line_error, panther


def a_record(root: Path) -> MountRecord:
    return MountRecord(
        directory=str(root),
        target="/images/disk.img",
        manifest="/images/manifest.json",
        loop="/dev/loop7",
        luks="cryptroot",
        mounts=[
            RecordedMount(str(root), MountKind.SUBVOLUME, "root"),
            RecordedMount(f"{root}/boot", MountKind.ESP, None),
            RecordedMount(f"{root}/var/lib/app", MountKind.BIND, "/var/lib/app"),
        ],
    )


def test_a_record_round_trips(workdir: Path) -> None:
    root = workdir / "mnt"
    record = a_record(root)
    record.save()
    assert json.loads(record_file(root).read_text())["version"] == FORMAT_VERSION
    assert MountRecord.load(root) == record
    record.forget()
    assert MountRecord.load(root) is None


def test_a_record_of_the_previous_version_is_read_and_saved_in_todays_format(
    workdir: Path,
) -> None:
    root = workdir / "mnt"
    old = {
        "directory": str(root),
        "target": "/images/disk.img",
        "manifest": "/images/manifest.json",
        "loop": "/dev/loop7",
        "luks": "cryptroot",
        "mounts": [
            {"path": str(root), "what": "root"},
            {"path": f"{root}/boot", "what": "esp"},
            {"path": f"{root}/var/lib/app", "what": "bind:/var/lib/app"},
        ],
    }
    record_file(root).parent.mkdir(parents=True)
    record_file(root).write_text(json.dumps(old))
    loaded = MountRecord.load(root)
    assert loaded == a_record(root)
    assert loaded is not None
    assert record_file(root).read_text() == json.dumps(old), "loading alone changes nothing"
    loaded.save()
    assert json.loads(record_file(root).read_text()) == a_record(root).as_json()


def corrupt(root: Path, change: str) -> str:
    """The text of a record of root with one thing wrong."""
    good = a_record(root).as_json()
    mounts = good["mounts"]
    match change:
        case "not json":
            return '{"directory": '
        case "a list":
            return "[]"
        case "future version":
            good["version"] = FORMAT_VERSION + 1
        case "another directory":
            good["directory"] = "/elsewhere"
        case "extra key":
            good["extra"] = 1
        case "not a loop device":
            good["loop"] = "/dev/sda"
        case "mapping with a slash":
            good["luks"] = "../sda"
        case "mount outside":
            mounts[0]["path"] = "/etc"
        case "mount beside":
            mounts[0]["path"] = f"{root}-other"
        case "mount climbing out":
            mounts[0]["path"] = f"{root}/../etc"
        case "unknown kind":
            mounts[0]["kind"] = "nfs"
        case "esp of something":
            mounts[1]["of"] = "/dev/sda1"
        case "relative bind":
            mounts[2]["of"] = "var/lib/app"
        case "old format bind":
            good.pop("version")
            good["mounts"] = [{"path": f"{root}/x", "what": "bind:x"}]
        case "one path twice":
            # `lab status` would never call such a lab up, and `lab up` never repair it.
            mounts.append({**mounts[0], "kind": "bind", "of": "/srv"})
        case "NUL in a path":
            mounts[2]["path"] = f"{root}/var/lib/app\0x"
        case "version as a float":
            good["version"] = float(FORMAT_VERSION)
        case "old and new keys":
            good.pop("version")
            good["mounts"] = [{"path": f"{root}/x", "what": "x", "kind": "subvolume"}]
    return json.dumps(good)


CHANGES = [
    "not json",
    "a list",
    "future version",
    "another directory",
    "extra key",
    "not a loop device",
    "mapping with a slash",
    "mount outside",
    "mount beside",
    "mount climbing out",
    "unknown kind",
    "esp of something",
    "relative bind",
    "old format bind",
    "old and new keys",
    "one path twice",
    "NUL in a path",
    "version as a float",
]


@pytest.mark.parametrize("change", CHANGES)
def test_a_corrupt_record_is_refused_in_one_line_and_kept(workdir: Path, change: str) -> None:
    root = workdir / "mnt"
    path = record_file(root)
    path.parent.mkdir(parents=True)
    text = corrupt(root, change)
    path.write_text(text)
    with pytest.raises(RecordError) as raised:
        MountRecord.load(root)
    message = str(raised.value)
    assert "\n" not in message
    assert str(path) in message
    assert "not valid" in message
    assert path.read_text() == text, "a record panther did not write is left for the user"


def test_lab_status_refuses_a_corrupt_record_in_one_line(workdir: Path) -> None:
    lab = workdir / "lab"
    (lab / "mnt").mkdir(parents=True)
    path = record_file(lab / "mnt")
    path.parent.mkdir(parents=True)
    path.write_text(corrupt(lab / "mnt", "unknown kind"))
    line = one_line_error(panther("lab", "status", str(lab)))
    assert str(path) in line
    assert "'nfs' is not a valid MountKind" in line


def test_binds_are_added_once_and_dropped_alone(workdir: Path) -> None:
    root = workdir / "mnt"
    record = a_record(root)
    record.add_bind(f"{root}/var/lib/app", "/var/lib/other")  # already recorded: kept as was
    record.add_bind(root / "etc/ssh", "/etc/ssh")
    record.drop_bind(root)  # the root subvolume is not a bind mount: kept
    record.drop_bind(f"{root}/var/lib/app")
    expected = [
        RecordedMount(str(root), MountKind.SUBVOLUME, "root"),
        RecordedMount(f"{root}/boot", MountKind.ESP, None),
        RecordedMount(f"{root}/etc/ssh", MountKind.BIND, "/etc/ssh"),
    ]
    assert record.mounts == expected
    assert MountRecord.load(root) == record, "every change is saved"
