"""The boot step's test variant: the shipped script with kill and hang hooks injected.

What ships has no test hooks. Tests that need a crash or a power cut at a step run this
variant, made from the shipped file: a block inserted just before the script's main part
wraps its `step` function (and the `archived` report line, which ends the archive step) so that
the step named in PANTHER_ROLLBACK_KILL_AFTER kills the script, and the one in
PANTHER_ROLLBACK_HANG_AFTER hangs it (saying so on stderr and /dev/kmsg) for a power cut from
outside. The helper beside it, which runs the usual boot itself (D155), is compiled from the
shipped source with PANTHEROS_TEST_HOOKS: the same hooks after its exchange and its archive.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from pantheros.impermanence import bootstep

KILL_AFTER_ENV = "PANTHER_ROLLBACK_KILL_AFTER"
HANG_AFTER_ENV = "PANTHER_ROLLBACK_HANG_AFTER"
STEPS = ("create", "exchange", "archive", "writable", "commit")
# The steps of a boot without a prepared root (the first boot, or one after a stale or changed
# prepared root), of a boot that uses the root stage 2 prepared (D150, D154: no commit), and of
# one that uses a read-only prepared root (as stage 2 made them before D154).
SLOW_STEPS = ("create", "exchange", "archive")
FAST_STEPS = ("exchange", "archive")
READONLY_STEPS = ("exchange", "archive", "writable")
NEW_SUFFIX = ".pantheros-new"

HOOKS = r"""
# --- the test variant's hooks (tests/bootstep_variant.py; never in what ships) ---
after_step() {
  ((dry_run)) && return 0
  if [[ "${PANTHER_ROLLBACK_KILL_AFTER-}" == "$1" ]]; then
    kill -KILL $$
  fi
  if [[ "${PANTHER_ROLLBACK_HANG_AFTER-}" == "$1" ]]; then
    say "hanging after $1"
    { printf 'pantheros-rollback: hanging after %s\n' "$1" >/dev/kmsg; } 2>/dev/null
    while :; do sleep 3600; done
  fi
}
eval "shipped_$(declare -f step)"
step() { shipped_step "$@"; after_step "$1"; }
eval "shipped_$(declare -f add)"
add() {
  shipped_add "$@"
  [[ "$1" != archived ]] || after_step archive
}
# --- end of the hooks ---
"""
# The line where the script's main part begins: the hooks go just before it.
ANCHOR = "\nresult=fresh\nrun\n"


def hooked(script: str) -> str:
    """The shipped script's text with the hooks in."""
    if script.count(ANCHOR) != 1:
        raise AssertionError("the boot step's main part moved: update tests/bootstep_variant.py")
    return script.replace(ANCHOR, "\n" + HOOKS + ANCHOR)


@cache
def directory() -> Path:
    """A directory with the test variant and the helper, side by side (removed at exit)."""
    shipped = bootstep.artifact_dir()
    where = Path(tempfile.mkdtemp(prefix="pantheros-bootstep-variant-"))
    atexit.register(shutil.rmtree, where, True)
    (where / bootstep.SCRIPT).write_text(hooked((shipped / bootstep.SCRIPT).read_text()))
    # The helper runs the usual boot itself (D155): its variant has the same hooks.
    source = bootstep.source_dir() / bootstep.HELPER_SOURCE
    bootstep.compile_helper(source, where / bootstep.HELPER, "PANTHEROS_TEST_HOOKS")
    for name in (bootstep.SCRIPT, bootstep.HELPER):
        os.chmod(where / name, 0o700)
    return where


def env(*, kill_after: str | None = None, hang_after: str | None = None) -> dict[str, str]:
    """The environment that makes panther run the variant, with the hook asked for."""
    found = {bootstep.DIR_ENV: str(directory())}
    if kill_after is not None:
        found[KILL_AFTER_ENV] = kill_after
    if hang_after is not None:
        found[HANG_AFTER_ENV] = hang_after
    return found


def entry() -> list[str]:
    """The variant's entry, as bootstep.argv's first two words."""
    return [str(directory() / bootstep.HELPER), bootstep.ENTRY]
