"""The job runner inside the install guest (tests/install/guest.py): runs the steps, writes what
it saw as JSON.

It runs as `python3 -I guest_job.py STEPS RESULT` with the standard library and, from
/job/site, panther's own package (its btrfs ioctls read the subvolumes). Steps, in order; the
first that fails ends the job (its output is kept):

  {"do": "run", "name": N, "argv": [...], "env": {...}, "stdin": TEXT}
      run a command (a disko script is ["bash", PATH]); records exit code and output
  {"do": "disk", "name": N, "disk": DEV, "btrfs": DEV}
      what is on the disk: the partition table, each partition's signature, the LUKS2 header,
      and the btrfs file system on DEV (its top level mounted read-only, then unmounted)
  {"do": "mounts", "name": N, "under": DIR}
      every mount at or below DIR: where, what (which partition or mapping), type, options
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, "/job/site")

from pantheros import btrfs

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "HOME": "/root"}


def sh(*argv: str, check: bool = True) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=ENV, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def blkid(node: str) -> dict[str, str]:
    out = sh("blkid", "--probe", "--output", "export", node, check=False)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def tree(base: Path) -> list[dict[str, Any]]:
    """Every entry below base (not crossing into other subvolumes' contents): path, kind,
    mode, owner."""
    entries = []
    for directory, dirs, files in os.walk(base):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(directory, name)
            st = path.lstat()
            kind = (
                "directory"
                if stat.S_ISDIR(st.st_mode)
                else "symlink"
                if stat.S_ISLNK(st.st_mode)
                else "file"
            )
            entry: dict[str, Any] = {
                "path": str(path.relative_to(base)),
                "kind": kind,
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "uid": st.st_uid,
                "gid": st.st_gid,
            }
            if kind == "directory" and btrfs.is_subvolume(path):
                entry["kind"] = "subvolume"
                dirs.remove(name) if name in dirs else None
            elif kind == "file":
                entry["size"] = st.st_size
            entries.append(entry)
    return entries


def super_block(node: str) -> dict[str, str]:
    wanted = ("csum_type", "nodesize", "sectorsize", "incompat_flags", "compat_ro_flags", "label")
    found = {}
    for line in sh("btrfs", "inspect-internal", "dump-super", node).splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in wanted:
            found[parts[0]] = parts[1].strip()
    return found


def look_at_btrfs(node: str) -> dict[str, Any]:
    top = Path("/tmp/top")
    top.mkdir(exist_ok=True)
    sh("mount", "-t", "btrfs", "-o", "ro,noatime,subvolid=5", node, str(top))
    try:
        subvolumes: list[dict[str, Any]] = []
        for ref in sorted(btrfs.list_subvolumes(top), key=lambda r: r.path):
            info = btrfs.subvolume_info(top / ref.path)
            subvolumes.append(
                {
                    "path": ref.path,
                    "readonly": info.readonly,
                    "id": info.id,
                    "uuid": str(info.uuid),
                    "parent_uuid": str(info.parent_uuid) if info.parent_uuid else None,
                    "otransid": info.otransid,
                    "ctransid": info.ctransid,
                    "generation": info.generation,
                }
            )
        trees = {ref["path"]: tree(top / ref["path"]) for ref in subvolumes}
        record = top / ".pantheros-blank"
        return {
            "super": super_block(node),
            "top": tree_top(top),
            "subvolumes": subvolumes,
            "trees": trees,
            "blank_record": record.read_text() if record.is_file() else None,
        }
    finally:
        sh("umount", str(top))


def tree_top(top: Path) -> list[dict[str, Any]]:
    found = []
    for name in sorted(os.listdir(top)):
        path = top / name
        st = path.lstat()
        kind = (
            "subvolume"
            if btrfs.is_subvolume(path)
            else ("directory" if stat.S_ISDIR(st.st_mode) else "file")
        )
        found.append({"name": name, "kind": kind, "mode": oct(stat.S_IMODE(st.st_mode))})
    return found


def luks_header(node: str) -> dict[str, Any]:
    meta = json.loads(sh("cryptsetup", "luksDump", "--dump-json-metadata", node))
    label = ""
    for line in sh("cryptsetup", "luksDump", node).splitlines():
        if line.startswith("Label:"):
            label = line.split(":", 1)[1].strip()
    return {
        "label": label,
        "flags": sorted(meta.get("config", {}).get("flags", [])),
        "segments": [
            {
                "type": s["type"],
                "encryption": s.get("encryption"),
                "sector_size": s.get("sector_size"),
            }
            for s in meta["segments"].values()
        ],
        "keyslots": sorted(
            (k["type"], k.get("kdf", {}).get("type", ""), k.get("area", {}).get("encryption", ""))
            for k in meta["keyslots"].values()
        ),
    }


def look_at_disk(disk: str, btrfs_node: str) -> dict[str, Any]:
    disk = os.path.realpath(disk)
    rows = sh(
        "partx",
        "--noheadings",
        "--pairs",
        "--output",
        "NR,START,SECTORS,TYPE,NAME,UUID,FLAGS,SCHEME",
        disk,
    )
    partitions = []
    for row in rows.splitlines():
        part = dict(re.findall(r'(\w+)="([^"]*)"', row))
        node = f"{disk}{part['NR']}"
        signature = blkid(node)
        entry: dict[str, Any] = {
            "node": node,
            "start": int(part["START"]),
            "size": int(part["SECTORS"]),
            "type": part["TYPE"],
            "uuid": part["UUID"],
            "name": part["NAME"],
            "attrs": part["FLAGS"],
            "scheme": part["SCHEME"],
            "signature": signature,
        }
        if signature.get("TYPE") == "crypto_LUKS":
            entry["luks"] = luks_header(node)
        partitions.append(entry)
    table = blkid(disk)
    return {
        "table": {"label": table.get("PTTYPE"), "id": table.get("PTUUID")},
        "partitions": partitions,
        "btrfs_signature": blkid(btrfs_node),
        "btrfs": look_at_btrfs(btrfs_node),
    }


def mounts_under(under: str) -> list[dict[str, Any]]:
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.rstrip("\n").split(" - ", 1)
            fields = left.split(" ")
            point = fields[4]
            if point != under and not point.startswith(under.rstrip("/") + "/"):
                continue
            fstype, source, super_options = right.split(" ", 2)
            found.append(
                {
                    "target": point,
                    "root": fields[3],
                    "options": fields[5],
                    "fstype": fstype,
                    "source": source,
                    "super": super_options,
                }
            )
    return found


def main() -> int:
    steps = json.loads(Path(sys.argv[1]).read_text())
    results: list[dict[str, Any]] = []
    failed = None
    for step in steps:
        name = step["name"]
        print(f"guest-job: {name}", flush=True)
        try:
            if step["do"] == "run":
                env = {**ENV, **step.get("env", {})}
                proc = subprocess.run(
                    step["argv"],
                    input=step.get("stdin", ""),
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                results.append(
                    {
                        "name": name,
                        "returncode": proc.returncode,
                        "stdout": proc.stdout[-20000:],
                        "stderr": proc.stderr[-20000:],
                    }
                )
                if proc.returncode != 0 and not step.get("may_fail"):
                    failed = f"{name}: exit {proc.returncode}"
                    print(proc.stdout[-4000:], proc.stderr[-8000:], sep="\n", flush=True)
            elif step["do"] == "disk":
                results.append({"name": name, "disk": look_at_disk(step["disk"], step["btrfs"])})
            elif step["do"] == "mounts":
                results.append({"name": name, "mounts": mounts_under(step["under"])})
            else:
                raise ValueError(f"unknown step {step['do']!r}")
        except Exception as exc:  # what went wrong in the guest is the test's to report
            failed = f"{name}: {type(exc).__name__}: {exc}"
            results.append({"name": name, "error": failed})
        if failed:
            break
    Path(sys.argv[2]).write_text(json.dumps({"steps": results, "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
