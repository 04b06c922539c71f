"""One record format for what the boot step writes and panther reads: `key=value` lines.

The boot step's report, the C helper's output and the blank's identity record are all in it. A
value is printable ASCII: a backslash is doubled and every other byte outside 0x20-0x7e is
written `\\xHH` (lowercase), so one line is one record whatever a value holds. The writers (the
bash script's `esc`, the helper's `put_escaped`, `escape` here) and the reader (`parse`) apply
this one rule; lines are split on `\\n` alone. A value is bytes on the disk and becomes a str
with surrogateescape, so a name that is not UTF-8 is kept exactly (os.fsencode gives its bytes
back) and is printed escaped (ui.printable).
"""

from __future__ import annotations

import re

from pantheros.errors import PantherError

_KEY = re.compile(rb"[a-z][a-z0-9_]*")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_ESCAPE = re.compile(rb"\\(\\|x([0-9a-f]{2})|)")


class RecordError(PantherError):
    """A record that this format's writers cannot have written."""


def escape(value: str | bytes) -> str:
    """value in the record's escaped form (a str is encoded with surrogateescape first)."""
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    out = []
    for byte in data:
        if byte == 0x5C:
            out.append("\\\\")
        elif 0x20 <= byte <= 0x7E:
            out.append(chr(byte))
        else:
            out.append(f"\\x{byte:02x}")
    return "".join(out)


def unescape_bytes(text: str | bytes) -> bytes:
    """The bytes an escaped value stands for; RecordError when it is not in escaped form."""
    data = text.encode("ascii", "surrogateescape") if isinstance(text, str) else text
    if not _PRINTABLE.fullmatch(data):
        raise RecordError(f"not printable ASCII: {escape(data)[:200]}")

    def one(found: re.Match[bytes]) -> bytes:
        if found.group(1) == b"\\":
            return b"\\"
        if found.group(2) is not None:
            byte = int(found.group(2), 16)
            if 0x20 <= byte <= 0x7E:
                # The writers escape only what they must: one spelling for each value, so a
                # reader comparing the text as written (the boot step) agrees with this one.
                raise RecordError(f"a printable byte written as an escape: {escape(data)[:200]}")
            return bytes([byte])
        raise RecordError(f"a backslash that escapes nothing: {escape(data)[:200]}")

    return _ESCAPE.sub(one, data)


def unescape(text: str | bytes) -> str:
    """The value an escaped text stands for, as a str (surrogateescape for bytes not UTF-8)."""
    return unescape_bytes(text).decode("utf-8", "surrogateescape")


def parse(data: bytes) -> list[tuple[str, str]]:
    """The (key, value) pairs of a record, in order; RecordError on any line a writer of this
    format cannot have written (an empty last line is the final newline)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    pairs = []
    for number, line in enumerate(lines, 1):
        key, sep, value = line.partition(b"=")
        if not sep or not _KEY.fullmatch(key):
            raise RecordError(f"line {number} is not key=value: {escape(line)[:200]}")
        try:
            pairs.append((key.decode("ascii"), unescape(value)))
        except RecordError as exc:
            raise RecordError(f"line {number}: {exc}") from None
    return pairs


def render(pairs: list[tuple[str, str | bytes]]) -> bytes:
    """The record of pairs: one `key=escaped value` line each."""
    out = []
    for key, value in pairs:
        if not _KEY.fullmatch(key.encode("ascii", "replace")):
            raise ValueError(f"not a record key: {key!r}")
        out.append(f"{key}={escape(value)}\n")
    return "".join(out).encode("ascii")
