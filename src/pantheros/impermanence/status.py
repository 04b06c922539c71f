"""`panther status`: is the root fresh this boot, which old roots exist, how did the rollback go."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pantheros import btrfs
from pantheros.impermanence import blank
from pantheros.impermanence.oldroots import OldRoots
from pantheros.impermanence.rollback import RECORD_DIR, RECORD_FILE, boot_id
from pantheros.machine import Machine


def last_record(machine: Machine) -> dict[str, Any] | None:
    persist = machine.manifest.persist
    assert persist is not None
    path = machine.host_path(persist.mountpoint) / RECORD_DIR / RECORD_FILE
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def collect(machine: Machine) -> dict[str, Any]:
    record = last_record(machine)
    root_info = btrfs.subvolume_info(machine.root)
    this_boot = record is not None and record.get("boot_id") == boot_id()
    if record is None:
        state = "unknown"
        why = "no rollback has been recorded on this machine"
    elif record["result"] == "dirty":
        state = "dirty"
        why = f"the last rollback failed: {record.get('error')}; the previous root was booted"
    elif this_boot or machine.lab is not None:
        state = "fresh"
        why = f"rolled back {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['time']))}"
    else:
        state = "dirty"
        why = "no rollback ran this boot"
    with machine.top_level(readonly=True) as top:
        roots, strays = OldRoots(Path(top), machine.manifest.storage).scan()
    return {
        "machine": machine.name,
        "host": machine.manifest.host,
        "root": {
            "state": state,
            "why": why,
            "subvolume_id": root_info.id,
            "created": root_info.created.isoformat(),
            "modified_since_creation": not blank.unchanged(root_info),
        },
        "old_roots": {
            "count": len(roots),
            "pinned": sum(1 for r in roots if r.pinned),
            "newest": roots[-1].name if roots else None,
            "oldest": roots[0].name if roots else None,
            "strays": [s.name for s in strays],
        },
        "last_rollback": record,
    }
