"""The `panther` command's entry point: what starts before the command line is loaded.

`panther audit` of this machine spends most of its time in one file walk that needs nothing the
command line knows, so the walk starts here, first, and runs while the rest loads; the audit
takes it over when it walks exactly that (pantheros.audit.walkstart, which loads nothing but
os for it: the walker starts about 12 ms after the interpreter; D156, D158). Everything
else goes straight to pantheros.cli.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing is not loaded for this
if TYPE_CHECKING:
    from collections.abc import Sequence


def audits_this_machine(words: Sequence[str]) -> bool:
    """Whether the command line is `panther audit` of the running machine (no --root, no
    --lab; nor only its help)."""
    return words[:1] == ["audit"] and not any(
        word.startswith(("--root", "--lab", "-h", "--help")) for word in words[1:]
    )


def main() -> int:
    if not audits_this_machine(sys.argv[1:]):
        from pantheros.cli import main as run

        return run()
    from pantheros.audit import walkstart

    walkstart.ahead()
    from pantheros.cli import main as run

    return _exit(run())


def _exit(code: int) -> int:
    """End the audit without the interpreter's teardown of its modules (12 ms, after the
    report is out): what that exit would do that matters is done here, in its order: the
    atexit functions, then stdout and stderr flushed (a failed flush: 120, as Python's). The
    audit leaves no file open to the teardown (its report is printed, or written and closed)
    and no thread running; a thread still running gets the ordinary exit."""
    import atexit
    import os
    import threading

    if threading.active_count() == 1:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                if not stream.closed:  # stderr, closed when the reader of stdout went away
                    stream.flush()
            except OSError:
                code = 120
        os._exit(code)
    return code
