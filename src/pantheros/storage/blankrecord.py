"""The blank's identity: which subvolume is the blank, recorded when the disk is laid out.

`.pantheros-blank` at the btrfs top level (beside the subvolumes, on no mount of the running
system) holds key=value lines (pantheros.storage.keyvalue): the blank's name, UUID, creation
transaction (otransid) and id, when it was recorded and why. The boot step reads it and refuses
any other subvolume under the blank's name (D80); `panther disk format` and `panther lab up`
write it, and only `panther blank bless` changes it afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs, files
from pantheros.errors import PantherError, Refused
from pantheros.storage import keyvalue

RECORD = ".pantheros-blank"
MAX_BYTES = 4096  # what the boot step reads of it


@dataclass(frozen=True)
class BlankIdentity:
    name: str
    uuid: str
    otransid: int
    id: int
    recorded: float  # Unix seconds
    why: str

    @classmethod
    def of(cls, name: str, info: btrfs.SubvolumeInfo, why: str) -> BlankIdentity:
        return cls(name, str(info.uuid), info.otransid, info.id, time.time(), why)

    def matches(self, name: str, info: btrfs.SubvolumeInfo) -> bool:
        """The very subvolume recorded (what the boot step compares: name, UUID, otransid)."""
        return (self.name, self.uuid, self.otransid) == (name, str(info.uuid), info.otransid)


class RecordProblem(PantherError):
    """The record is there but is not one panther wrote."""


def read(top: Path) -> BlankIdentity | None:
    """The record under the top level, or None when there is none; RecordProblem when what is
    there is not a regular file of at most MAX_BYTES in the record format."""
    shown = f"{RECORD} (btrfs top level)"
    try:
        data = files.read_bytes(
            top / RECORD,
            beneath=top,
            what="the blank's identity record",
            known_as=shown,
            limit=MAX_BYTES,
        )
    except files.Unreadable as exc:
        raise RecordProblem(f"the blank's identity record {RECORD}: {exc.reason}") from None
    if data is None:
        return None
    try:
        fields = dict(keyvalue.parse(data))
        return BlankIdentity(
            name=fields["name"],
            uuid=fields["uuid"],
            otransid=int(fields["otransid"]),
            id=int(fields["id"]),
            recorded=float(fields.get("recorded", "0")),
            why=fields.get("why", ""),
        )
    except (PantherError, KeyError, ValueError) as exc:
        raise RecordProblem(f"the blank's identity record {RECORD} is not valid: {exc}") from None


def write(top: Path, identity: BlankIdentity) -> None:
    """Replace the record (atomic and durable: fsync, rename, then a btrfs commit)."""
    content = keyvalue.render(
        [
            ("name", identity.name),
            ("uuid", identity.uuid),
            ("otransid", str(identity.otransid)),
            ("id", str(identity.id)),
            ("recorded", f"{identity.recorded:.0f}"),
            ("why", identity.why),
        ]
    )
    files.replace_file(top / RECORD, content, beneath=top, known_as=f"{RECORD} (btrfs top level)")
    btrfs.sync(top)


def record_blank(top: Path, name: str, why: str) -> None:
    """Record the subvolume at top/name as the blank, when no record is there yet.

    A record of this very blank is kept as it is (a layout run again, disko's hook run twice,
    changes nothing); a record of another blank is not overwritten: that is what `panther blank
    bless` is for, after the user has seen what changed."""
    info = btrfs.subvolume_info(top / name)
    found = read(top)
    if found is not None and found.matches(name, info):
        return
    if found is not None:
        raise Refused(
            f"{RECORD} records another blank ({found.name}, uuid {found.uuid}) than "
            f"{name} (uuid {info.uuid}): check it, then `panther blank bless`"
        )
    write(top, BlankIdentity.of(name, info, why))
