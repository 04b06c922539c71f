"""`panther persist`: move live state into persistent storage without losing anything.

add PATH: copy (reflinks where possible, keeping owner, group, mode, timestamps, ACLs, xattrs
and hardlinks) to a staging name in the persistent subvolume, verify the copy against the
source, rename it into place, record the entry, bind-mount it over the live path, and only then
empty the ephemeral original (through the btrfs top level, underneath the mount). A journal in
<persist>/.pantheros/journal records the step reached, so a run killed at any point is finished
by the next one, and until the original is emptied it is untouched.

One module per concern: `location` (where a path is, and what is refused), `hostfile` (the
entries recorded for NixOS), `journal`, `copying` (copy and verify), `mounting` (the bind
mounts, `apply`), `adding`, `removing`, and `reports` (list and stray).
"""

from pantheros.state.persist.adding import add
from pantheros.state.persist.hostfile import declared_paths, host_file_for, nix_lines
from pantheros.state.persist.journal import KILL_AFTER_ENV, STEPS
from pantheros.state.persist.location import Where, locate
from pantheros.state.persist.mounting import apply, is_bind_mounted
from pantheros.state.persist.removing import remove
from pantheros.state.persist.reports import EntryState, states, strays

__all__ = [
    "KILL_AFTER_ENV",
    "STEPS",
    "EntryState",
    "Where",
    "add",
    "apply",
    "declared_paths",
    "host_file_for",
    "is_bind_mounted",
    "locate",
    "nix_lines",
    "remove",
    "states",
    "strays",
]
