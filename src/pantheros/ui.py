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


def info(message: str) -> None:
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(paint(f"warning: {message}", "yellow", sys.stderr), file=sys.stderr)


def result(text: str = "") -> None:
    print(text)


def emit_json(data: Any) -> None:
    # One write: json.dump would issue one per token, which costs seconds on large reports.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def progress(message: str) -> None:
    """A step of long work, shown on stderr so stdout stays clean for results."""
    print(paint(f"==> {message}", "bold", sys.stderr), file=sys.stderr)
