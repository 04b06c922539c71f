"""How persist fails: every error a user can meet is a PantherError, one line long."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pantheros.errors import PantherError


class VerifyFailed(PantherError):
    """The copy differs from the source (the line names the first difference)."""


@contextlib.contextmanager
def one_line(action: str) -> Iterator[None]:
    """The filesystem refusing a step (a full disk, a file where a directory must be, an entry
    that vanished meanwhile) ends the command with one line naming the action and the path.

    What was done stays done: the journal lets the next run of the same command finish it.
    """
    try:
        yield
    except OSError as exc:
        named = isinstance(exc.filename, str | bytes)  # not a descriptor's number
        name = os.fsdecode(exc.filename) if named else ""
        shown = f": {name if name.isprintable() else repr(name)}" if name else ""
        raise PantherError(f"{action}: {exc.strerror or exc}{shown}") from None
