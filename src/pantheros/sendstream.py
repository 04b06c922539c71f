"""A reader of btrfs send streams (versions 1 to 3), as `btrfs send` writes them.

Each command is a 10-byte header (length, command, crc32c) and TLV attributes. Paths are kept
as bytes: btrfs names need not be UTF-8. Only what a diff needs is decoded; unknown commands and
attributes are skipped, so a newer stream version does not break the reader.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import IO

from pantheros.errors import PantherError

MAGIC = b"btrfs-stream\0"
_HEADER = struct.Struct("<IHI")
_TLV = struct.Struct("<HH")


class Cmd(IntEnum):
    SUBVOL = 1
    SNAPSHOT = 2
    MKFILE = 3
    MKDIR = 4
    MKNOD = 5
    MKFIFO = 6
    MKSOCK = 7
    SYMLINK = 8
    RENAME = 9
    LINK = 10
    UNLINK = 11
    RMDIR = 12
    SET_XATTR = 13
    REMOVE_XATTR = 14
    WRITE = 15
    CLONE = 16
    TRUNCATE = 17
    CHMOD = 18
    CHOWN = 19
    UTIMES = 20
    END = 21
    UPDATE_EXTENT = 22
    FALLOCATE = 23
    FILEATTR = 24
    ENCODED_WRITE = 25
    ENABLE_VERITY = 26


class Attr(IntEnum):
    UUID = 1
    CTRANSID = 2
    INO = 3
    SIZE = 4
    MODE = 5
    UID = 6
    GID = 7
    RDEV = 8
    CTIME = 9
    MTIME = 10
    ATIME = 11
    OTIME = 12
    XATTR_NAME = 13
    XATTR_DATA = 14
    PATH = 15
    PATH_TO = 16
    PATH_LINK = 17
    FILE_OFFSET = 18
    DATA = 19


class StreamError(PantherError):
    """The send stream is not what btrfs writes: one line for the user, not a traceback."""


@dataclass
class Command:
    cmd: int
    attrs: dict[int, bytes] = field(default_factory=dict)

    def path(self, attr: int = Attr.PATH) -> bytes:
        return self.attrs.get(attr, b"")


def read(stream: IO[bytes]) -> Iterator[Command]:
    """Yield the commands of one send stream (a concatenation of streams is read in full)."""
    head = stream.read(len(MAGIC) + 4)
    if len(head) < len(MAGIC) + 4 or head[: len(MAGIC)] != MAGIC:
        raise StreamError("not a btrfs send stream")
    version = int.from_bytes(head[len(MAGIC) :], "little")
    if version < 1 or version > 3:
        raise StreamError(f"unsupported send stream version {version}")
    while True:
        header = stream.read(_HEADER.size)
        if not header:
            return
        if len(header) < _HEADER.size:
            raise StreamError("truncated command header")
        length, cmd, _crc = _HEADER.unpack(header)
        body = stream.read(length)
        if len(body) < length:
            raise StreamError("truncated command")
        command = Command(cmd)
        pos = 0
        while pos + _TLV.size <= length:
            tlv_type, tlv_len = _TLV.unpack_from(body, pos)
            pos += _TLV.size
            if version >= 2 and tlv_type == Attr.DATA:
                # From version 2 the data attribute runs to the end of the command.
                command.attrs[tlv_type] = body[pos - 2 :]
                break
            command.attrs[tlv_type] = body[pos : pos + tlv_len]
            pos += tlv_len
        if cmd == Cmd.END:
            # A stream may be followed by another (send of several snapshots).
            nxt = stream.read(len(MAGIC) + 4)
            if not nxt:
                return
            if nxt[: len(MAGIC)] != MAGIC:
                raise StreamError("garbage after the end of the stream")
            continue
        yield command
