"""The blank's identity: which subvolume is the blank, recorded when the disk is laid out.

`.pantheros-blank` at the btrfs top level (beside the subvolumes, on no mount of the running
system) holds key=value lines (pantheros.storage.keyvalue): the blank's name, UUID, creation
transaction (otransid) and id, when it was recorded and why. The boot step reads it and refuses
any other subvolume under the blank's name (D80); `panther disk format` and `panther lab up`
write it, and only `panther blank bless` changes it afterwards.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from pantheros import btrfs
from pantheros.errors import PantherError
from pantheros.fsutil import replace_file
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
    path = top / RECORD
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordProblem(f"the blank's identity record {RECORD}: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise RecordProblem(f"the blank's identity record {RECORD} is not a regular file")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise RecordProblem(f"the blank's identity record {RECORD} is larger than {MAX_BYTES} B")
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
    replace_file(top / RECORD, content)
    btrfs.sync(top)


def record_blank(top: Path, name: str, why: str) -> None:
    """Record the subvolume at top/name as the blank."""
    write(top, BlankIdentity.of(name, btrfs.subvolume_info(top / name), why))
