"""Output conventions: results on stdout, messages on stderr, NO_COLOR honoured."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_COLORS = {"red": "31", "green": "32", "yellow": "33", "bold": "1", "dim": "2"}


def paint(text: str, color: str, stream: Any = sys.stdout) -> str:
    # no-color.org: NO_COLOR disables colour when it is set to a non-empty value.
    isatty = getattr(stream, "isatty", None)
    if os.environ.get("NO_COLOR") or not (isatty and isatty()):
        return text
    return f"\033[{_COLORS[color]}m{text}\033[0m"


def info(message: str) -> None:
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    print(paint(f"warning: {message}", "yellow", sys.stderr), file=sys.stderr)


def result(text: str = "") -> None:
    print(text)


def emit_json(data: Any) -> None:
    # One write: json.dump would issue one per token.
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def progress(message: str) -> None:
    print(paint(f"==> {message}", "bold", sys.stderr), file=sys.stderr)
