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


ELSEWHERE = ("--root", "--lab", "--help")  # the audit's options that make it no walk of /


def audits_this_machine(words: Sequence[str]) -> bool:
    """Whether the command line is `panther audit` of the running machine (no --root, no
    --lab, nor an abbreviation argparse takes for one; nor only its help)."""
    if words[:1] != ["audit"]:
        return False
    for word in words[1:]:
        name = word.partition("=")[0]
        if word.startswith("-h") or (
            name.startswith("--") and any(option.startswith(name) for option in ELSEWHERE)
        ):
            return False
    return True


def main() -> int:
    audit = audits_this_machine(sys.argv[1:])
    if audit:
        from pantheros.audit import walkstart

        walkstart.ahead()
    # A SIGCHLD inherited as ignored lets the kernel reap every child unseen: each command's
    # status would be lost (subprocess then calls it 0). Reset before any child can end.
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    from pantheros.cli import main as run

    return _exit(run()) if audit else run()


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
                # None: closed when panther started; closed: stderr, when stdout's reader left
                if stream is not None and not stream.closed:
                    stream.flush()
            except OSError:
                code = 120
        os._exit(code)
    return code
