"""disko's own scripts, made from an example host's declaration, lay out the disk that
`panther disk format` lays out from the same manifest; run again, they change nothing.

The host is evaluated with nix-community/disko's module (PANTHEROS_DISKO), so `_create`,
`_mount`, `_unmount`, `_formatMount` and `_disko` are disko's own, made by its types from the
`disko.devices` that pantheros.storage wrote. They run in the install guest
(tests/install/guest.py: udev for /dev/disk/by-partlabel, device-mapper for LUKS) on a disk
named by its /dev/disk/by-id path, with the real sgdisk, partprobe, mkfs.vfat, mkfs.btrfs,
btrfs and cryptsetup. In the same guest, `panther disk format` lays out a second disk from the
host's manifest. The two are compared: partitions (start, size, type, name), signatures and
labels, the LUKS2 header, the btrfs super block, subvolumes (read-only, which is a snapshot of
which), every file of the root, the blank and /persist (kind, mode, owner), the top level, and
the mounts (`_mount` against `panther disk mount`: where, which subvolume, options). What a
format makes anew each time (UUIDs, ids, transaction numbers) is left out of that comparison,
and kept in the comparison of a run with its rerun.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ROOT_REASON
from tests.install import guest, nixeval

TARGET = guest.Disk(Path("target.img"), "pantheros-target")
REFERENCE = guest.Disk(Path("reference.img"), "pantheros-reference")
DISK_MIB = 1536
KEY = b"correct horse battery staple"
PANTHER_WRAPPER = '#!/bin/bash\nexport PYTHONPATH=/job/site\nexec {python} -m pantheros "$@"\n'

_reason = nixeval.disko_reason() or guest.reason() or ROOT_REASON
pytestmark = [
    pytest.mark.boot,
    pytest.mark.skipif(_reason is not None, reason=_reason or ""),
]


def _declaration(host: str) -> dict[str, Any]:
    return {
        "host": host,
        "text": nixeval.example_host(
            host, f'pantheros.storage.device = lib.mkForce "{TARGET.by_id}";'
        ),
    }


def _job(evaluated: dict[str, Any], manifest_json: str, luks: bool) -> guest.Job:
    scripts = evaluated["diskoScripts"]
    files: dict[str, tuple[int, bytes]] = {}
    for name in ("_create", "_mount", "_unmount", "_formatMount", "_disko"):
        files[f"/job/{name.lstrip('_')}.sh"] = (0o755, scripts[name].encode())
    files["/job/manifest.json"] = (0o644, manifest_json.encode())
    files["/job/disk.key"] = (0o600, KEY)
    # The stand-in evaluation names panther and disk-deactivate by store paths; the guest
    # has them there: this checkout's panther, and disko's own disk-deactivate.
    panther = re.search(r"(/nix/store/[^/\s'\"]+)/bin/panther", scripts["_create"])
    assert panther, "the create script runs panther disk finish"
    files[panther.group(0)] = (0o755, PANTHER_WRAPPER.format(python=guest.PYTHON).encode())
    deactivate = re.search(
        r"(/nix/store/[^/\s]+-disk-deactivate)/disk-deactivate", scripts["_disko"]
    )
    assert deactivate, "the _disko script runs disko's disk-deactivate"
    trees = {deactivate.group(1): Path(str(nixeval.DISKO), "disk-deactivate")}

    reference = REFERENCE.by_id
    main_part = f"{REFERENCE.by_id}-part2"
    target_btrfs = "/dev/mapper/cryptroot" if luks else "/dev/disk/by-partlabel/pantheros"
    key_args = ["--key-file", "/tmp/pantheros-disk.key"] if luks else []
    steps: list[dict[str, Any]] = [
        {
            "do": "run",
            "name": "key",
            "argv": ["install", "-m", "0600", "/job/disk.key", "/tmp/pantheros-disk.key"],
        },
        {"do": "run", "name": "create", "argv": ["bash", "/job/create.sh"]},
        {"do": "disk", "name": "created", "disk": TARGET.by_id, "btrfs": target_btrfs},
        {"do": "run", "name": "create again", "argv": ["bash", "/job/create.sh"]},
        {"do": "disk", "name": "created again", "disk": TARGET.by_id, "btrfs": target_btrfs},
        {"do": "run", "name": "mount", "argv": ["bash", "/job/mount.sh"]},
        {"do": "mounts", "name": "mounted", "under": "/mnt"},
        {"do": "run", "name": "mount again", "argv": ["bash", "/job/mount.sh"]},
        {"do": "mounts", "name": "mounted again", "under": "/mnt"},
        {"do": "run", "name": "format and mount", "argv": ["bash", "/job/formatMount.sh"]},
        {"do": "mounts", "name": "format-mounted", "under": "/mnt"},
        {"do": "run", "name": "unmount", "argv": ["bash", "/job/unmount.sh"]},
        {"do": "mounts", "name": "unmounted", "under": "/mnt"},
        {"do": "run", "name": "disko", "argv": ["bash", "/job/disko.sh"]},
        {"do": "mounts", "name": "disko mounted", "under": "/mnt"},
        {"do": "run", "name": "disko unmount", "argv": ["bash", "/job/unmount.sh"]},
        # unmount.sh closed the LUKS mapping: open it again to look (disko's mount.sh would
        # mount the tree as well).
        *(
            [
                {
                    "do": "run",
                    "name": "open target",
                    "argv": [
                        "cryptsetup",
                        "open",
                        "--key-file",
                        "/tmp/pantheros-disk.key",
                        f"{TARGET.by_id}-part2",
                        "cryptroot",
                    ],
                }
            ]
            if luks
            else []
        ),
        {"do": "disk", "name": "disko laid out", "disk": TARGET.by_id, "btrfs": target_btrfs},
        *(
            [{"do": "run", "name": "close target", "argv": ["cryptsetup", "close", "cryptroot"]}]
            if luks
            else []
        ),
        # The same manifest, laid out by panther on the other disk.
        {
            "do": "run",
            "name": "panther disk format",
            "argv": [
                guest.PYTHON,
                "-m",
                "pantheros",
                "disk",
                "format",
                "--manifest",
                "/job/manifest.json",
                *key_args,
                reference,
            ],
            "env": {"PYTHONPATH": "/job/site"},
        },
        {
            "do": "run",
            "name": "panther disk mount",
            "argv": [
                guest.PYTHON,
                "-m",
                "pantheros",
                "disk",
                "mount",
                "--manifest",
                "/job/manifest.json",
                *key_args,
                reference,
                "/ref",
            ],
            "env": {"PYTHONPATH": "/job/site"},
        },
        {"do": "mounts", "name": "panther mounted", "under": "/ref"},
        {
            "do": "run",
            "name": "panther disk unmount",
            "argv": [guest.PYTHON, "-m", "pantheros", "disk", "unmount", "/ref"],
            "env": {"PYTHONPATH": "/job/site"},
        },
    ]
    if luks:
        steps.append(
            {
                "do": "run",
                "name": "open reference",
                "argv": [
                    "cryptsetup",
                    "open",
                    "--key-file",
                    "/tmp/pantheros-disk.key",
                    main_part,
                    "cryptroot",
                ],
            }
        )
    steps.append(
        {
            "do": "disk",
            "name": "panther laid out",
            "disk": reference,
            "btrfs": "/dev/mapper/cryptroot" if luks else main_part,
        }
    )
    if luks:
        steps.append(
            {"do": "run", "name": "close reference", "argv": ["cryptsetup", "close", "cryptroot"]}
        )
    return guest.Job(steps=steps, files=files, trees=trees)


def _failure(result: dict[str, Any]) -> str:
    last = result["steps"][-1] if result["steps"] else {}
    output = (
        last.get("error") or f"{last.get('stdout', '')[-3000:]}\n{last.get('stderr', '')[-6000:]}"
    )
    return f"{result['failed']}\n{output}"


def _by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["name"]: step for step in result["steps"]}


# What a format makes anew each time; compared only between a run and its rerun.
FRESH_SIGNATURE = {"UUID", "UUID_SUB", "PARTUUID", "PART_ENTRY_UUID", "PART_ENTRY_DISK", "DEVNAME"}


def _same_disk(state: dict[str, Any]) -> dict[str, Any]:
    """state without what differs between two formats of one layout."""
    partitions = [
        {
            "start": p["start"],
            "size": p["size"],
            "type": p["type"],
            "name": p["name"],
            "attrs": p["attrs"],
            "signature": {k: v for k, v in p["signature"].items() if k not in FRESH_SIGNATURE},
            "luks": p.get("luks"),
        }
        for p in state["partitions"]
    ]
    fs = state["btrfs"]
    by_uuid = {s["uuid"]: s["path"] for s in fs["subvolumes"]}
    subvolumes = [
        {
            "path": s["path"],
            "readonly": s["readonly"],
            "snapshot_of": by_uuid.get(s["parent_uuid"] or "", s["parent_uuid"]),
            # The blank is trusted only while unchanged since it was made (D42).
            "unchanged": s["ctransid"] <= s["otransid"],
        }
        for s in fs["subvolumes"]
    ]
    return {
        "table": {k: v for k, v in state["table"].items() if k != "id"},
        "partitions": partitions,
        "btrfs_signature": {
            k: v for k, v in state["btrfs_signature"].items() if k not in FRESH_SIGNATURE
        },
        "super": fs["super"],
        "top": fs["top"],
        "subvolumes": subvolumes,
        "trees": fs["trees"],
        "blank_record": _record(fs),
    }


def _record(fs: dict[str, Any]) -> dict[str, Any] | None:
    """The blank's identity record (when panther writes one): its name, and whether it names
    the blank subvolume that is there."""
    text = fs["blank_record"]
    if text is None:
        return None
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    blank = next((s for s in fs["subvolumes"] if s["path"] == fields.get("name")), None)
    return {
        "name": fields.get("name"),
        "names_the_blank": blank is not None
        and (fields.get("uuid"), fields.get("otransid")) == (blank["uuid"], str(blank["otransid"])),
    }


def _mounts(
    mounts: list[dict[str, Any]], under: str, sources: dict[str, str]
) -> list[dict[str, Any]]:
    return sorted(
        (
            {
                "target": m["target"].removeprefix(under) or "/",
                "root": m["root"],
                "fstype": m["fstype"],
                # A mapping as /dev/mapper/NAME or /dev/dm-N: the same device.
                "source": "the LUKS mapping"
                if m["source"].startswith(("/dev/mapper/", "/dev/dm-"))
                else sources.get(m["source"], m["source"]),
                "options": m["options"],
                "super": re.sub(r"subvolid=\d+,", "", m["super"]),
            }
            for m in mounts
        ),
        key=lambda m: m["target"],
    )


@pytest.mark.parametrize(("host", "luks"), [("server", False), ("workstation", True)])
def test_disko_scripts_lay_out_the_disk_panther_disk_format_lays_out(
    host: str, luks: bool, tmp_path: Path
) -> None:
    declaration = _declaration(host)
    evaluated = nixeval.evaluate(tmp_path, declaration["text"])
    assert evaluated["failedAssertions"] == []
    manifest = evaluated["manifest"]
    assert manifest["storage"]["device"] == TARGET.by_id
    job = _job(evaluated, json.dumps(manifest), luks)
    disks = []
    for disk in (TARGET, REFERENCE):
        image = tmp_path / disk.image
        with open(image, "wb") as f:
            f.truncate(DISK_MIB * 1024 * 1024)
        disks.append(guest.Disk(image, disk.serial))
    work = tmp_path / "guest"
    work.mkdir()
    try:
        result = guest.run(job, disks, work)
    finally:
        for disk in disks:
            os.unlink(disk.image)
    # Kept beside the test's other files, for a look after a failure.
    (work / "result.json").write_text(json.dumps(result, indent=1))
    steps = _by_name(result)
    assert result["failed"] is None, _failure(result)

    created = steps["created"]["disk"]
    # Run again, disko's scripts and the hook change nothing: not a partition or its GUID, a
    # file system, a subvolume, a mode, the blank or its record.
    assert steps["created again"]["disk"] == created
    assert steps["mounted again"]["mounts"] == steps["mounted"]["mounts"]
    assert steps["format-mounted"]["mounts"] == steps["mounted"]["mounts"]
    assert steps["unmounted"]["mounts"] == []

    # The layout itself, after disko's unmount, wipe, format, mount and unmount (_disko): what
    # the host declares. Mounting with compress=zstd marks the super block (its incompat
    # flags), so the state before any mount differs there only.
    layout = _same_disk(steps["disko laid out"]["disk"])
    before_mount = _same_disk(created)
    assert {k: v for k, v in before_mount.items() if k != "super"} == {
        k: v for k, v in layout.items() if k != "super"
    }
    names = [p["name"] for p in layout["partitions"]]
    assert names == ["PANTHER-ESP", "pantheros"]
    assert layout["partitions"][0]["signature"]["LABEL"] == "PANTHER-ESP"
    subvolumes = {s["path"]: s for s in layout["subvolumes"]}
    blank = subvolumes["root-blank"]
    assert blank == {
        "path": "root-blank",
        "readonly": True,
        "snapshot_of": "root",
        "unchanged": True,
    }
    assert {e["name"]: e["kind"] for e in layout["top"]}["old_roots"] == "directory"
    persist = {e["path"]: e for e in layout["trees"]["persist"]}
    for entry in manifest["first_boot"]["directories"]:
        made = persist[entry["path"].removeprefix("/persist/")]
        assert (made["kind"], made["mode"], made["uid"], made["gid"]) == (
            "directory",
            oct(int(entry["mode"], 8)),
            entry["uid"],
            entry["gid"],
        )
    root_dirs = {e["path"] for e in layout["trees"]["root"]}
    mount_points = {
        m.lstrip("/")
        for m in [s["mountpoint"] for s in manifest["storage"]["subvolumes"]] + ["/boot"]
        if m != "/"
    }
    assert mount_points <= root_dirs
    assert layout["trees"]["root-blank"] == layout["trees"]["root"]
    if luks:
        header = layout["partitions"][1]["luks"]
        assert header["label"] == "pantheros-luks"
        assert header["flags"] == ["allow-discards"]

    # panther disk format, from the same manifest, makes the same disk.
    reference = _same_disk(steps["panther laid out"]["disk"])
    assert reference == layout

    # And both mount it the same way.
    target_parts = {p["node"]: f"partition {i + 1}" for i, p in enumerate(created["partitions"])}
    reference_parts = {
        p["node"]: f"partition {i + 1}"
        for i, p in enumerate(steps["panther laid out"]["disk"]["partitions"])
    }
    disko_mounts = _mounts(steps["mounted"]["mounts"], "/mnt", target_parts)
    panther_mounts = _mounts(steps["panther mounted"]["mounts"], "/ref", reference_parts)
    assert disko_mounts == panther_mounts
    assert {m["target"] for m in disko_mounts} == {
        s["mountpoint"] for s in manifest["storage"]["subvolumes"]
    } | {"/boot"}
