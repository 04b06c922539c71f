"""The journal of one add: the step reached, so a run killed at any point is finished by the next.

It is kept among panther's own records in persistent storage (`Where.journal_file`), written
durably at every step, and deleted when the add is done.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

from pantheros.errors import UsageError
from pantheros.files import read_json, remove_file, write_json
from pantheros.fsutil import is_staging_dir, remove_path
from pantheros.state.persist.location import Where

KILL_AFTER_ENV = "PANTHER_PERSIST_KILL_AFTER"  # testing only: SIGKILL after the named step
STEPS = ("started", "staged", "verified", "placed", "recorded", "mounted", "emptied")


@dataclass
class Journal:
    where: Where
    step: str
    boot: str  # the root subvolume's UUID when the add started: a new one means a reboot
    merge: bool  # the copy existed before the add (--merge): the copy is the truth
    staging: Path | None = None  # a staging directory in use, removed if the run is killed

    @classmethod
    def load(cls, where: Where) -> Journal | None:
        # Among panther's records in persistent storage, reached without a symlink.
        data = read_json(where.journal_file, beneath=where.persist_root, what="the journal")
        if data is None:
            return None
        if (
            not isinstance(data, dict)
            or data.get("path") != where.path
            or data.get("step") not in STEPS
            or not isinstance(data.get("boot"), str)
            or not isinstance(data.get("merge"), bool)
            or not isinstance(data.get("staging"), str | None)
        ):
            raise UsageError(f"{where.journal_file} is not a journal of {where.path}: move it away")
        staging = None if data["staging"] is None else Path(data["staging"])
        return cls(where, data["step"], data["boot"], data["merge"], staging)

    @classmethod
    def start(cls, where: Where, boot: str, *, merge: bool) -> Journal:
        journal = cls(where, "started", boot, merge)
        journal.advance("started")
        return journal

    def save(self) -> None:
        data = {
            "path": self.where.path,
            "step": self.step,
            "boot": self.boot,
            "merge": self.merge,
            "staging": None if self.staging is None else str(self.staging),
        }
        write_json(self.where.journal_file, data, beneath=self.where.persist_root)

    def advance(self, step: str) -> None:
        self.step = step
        self.save()
        if os.environ.get(KILL_AFTER_ENV) == step:
            os.kill(os.getpid(), signal.SIGKILL)

    def reached(self, step: str) -> bool:
        return STEPS.index(self.step) >= STEPS.index(step)

    def use_staging(self, staging: Path) -> None:
        """Record a staging directory before anything is put in it."""
        self.staging = staging
        self.save()

    def discard_staging(self) -> None:
        """Remove the staging directory a killed run recorded (only one of ours, by its name)."""
        if self.staging is None:
            return
        if not is_staging_dir(self.staging, self.where.copy):
            raise UsageError(
                f"{self.where.journal_file} names a staging directory that is not ours: "
                f"{self.staging}"
            )
        remove_path(self.staging)
        self.staging = None
        self.save()

    def clear(self) -> None:
        """The add is done (or undone): its staging directory and the journal go."""
        self.discard_staging()
        remove_file(self.where.journal_file, beneath=self.where.persist_root)
