"""Output conventions: results on stdout, messages on stderr, NO_COLOR honoured."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_COLORS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def use_color(stream: Any = sys.stderr) -> bool:
    # no-color.org: NO_COLOR disables colour when it is set to a non-empty value.
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(text: str, color: str, stream: Any = sys.stdout) -> str:
    if not use_color(stream):
        return text
    return f"\033[{_COLORS[color]}m{text}\033[0m"


def printable(text: str) -> str:
    """text fit for a terminal and for a line of a listing: a name read from a tree may hold a
    newline (it would forge a line of its own), an escape sequence, or a byte that is not UTF-8
    (surrogateescape; a UTF-8 stdout refuses to encode it). Each is written as an escape."""
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    if 0xDC80 <= ord(char) <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


# Messages are one line each: a name in one (read from a disk, a record, a path the user gave)
# is escaped by printable, so it can neither split the line nor send the terminal an escape.


def info(message: str) -> None:
    print(printable(message), file=sys.stderr)


def warn(message: str) -> None:
    print(paint(f"warning: {printable(message)}", "yellow", sys.stderr), file=sys.stderr)


def error(message: str) -> None:
    """The one line a failed command ends with."""
    print(paint(f"panther: error: {printable(message)}", "red", sys.stderr), file=sys.stderr)


def result(text: str = "") -> None:
    print(text)


def emit_json(data: Any) -> None:
    # One write: json.dump would issue one per token, which costs seconds on large reports.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def progress(message: str) -> None:
    """A step of long work, shown on stderr so stdout stays clean for results."""
    print(paint(f"==> {printable(message)}", "bold", sys.stderr), file=sys.stderr)
