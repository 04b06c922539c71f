"""Random sequences of persist add/remove, writes, reboots, gc and SIGKILLs against a model.

The model is what a user is owed: every file written into a persisted path is there, in the
live tree and in the persistent copy, after every step; files in paths that are not persisted
are there until the next reboot and gone after it; the lab always has all of its mounts.
PANTHER_STATEFUL_EXAMPLES raises the number of random sequences (the default keeps CI near a
minute); PANTHER_STATEFUL_STEPS their length.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from pantheros.lab.lab import Lab
from pantheros.state.persist import KILL_AFTER_ENV, STEPS
from tests.helpers import cleanup_under, panther

pytestmark = pytest.mark.root

PATHS = ("/var/lib/a", "/var/lib/b", "/srv/c")
NAMES = ("x", "y")


def files_in(directory: Path) -> dict[str, str]:
    if not directory.is_dir():
        return {}
    return {p.name: p.read_bytes().decode() for p in directory.iterdir() if p.is_file()}


class PersistModel(RuleBasedStateMachine):
    base: Path  # set by the test: a private directory for this run's labs
    made = 0

    def __init__(self) -> None:
        super().__init__()
        self.persisted: dict[str, dict[str, str]] = {}
        self.ephemeral: dict[str, dict[str, str]] = {}
        self.left_copies: dict[str, dict[str, str]] = {}  # removed without --purge
        self.pending: str | None = None  # an add killed part-way, not yet run again
        self.writes = 0

    @initialize()
    def lab_up(self) -> None:
        PersistModel.made += 1
        self.lab = self.base / f"lab{PersistModel.made}"
        proc = panther("lab", "up", str(self.lab), "--size", "1G")
        assert proc.returncode == 0, proc.stderr
        for path in PATHS:  # data to move from the first step on
            self.write(path, NAMES[0], "initial")

    def teardown(self) -> None:
        if hasattr(self, "lab"):
            cleanup_under(self.lab)

    def live(self, path: str) -> Path:
        return self.lab / "mnt" / path.lstrip("/")

    def copy(self, path: str) -> Path:
        return self.lab / "mnt" / "persist" / path.lstrip("/")

    def run(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        proc = panther(*args, "--lab", str(self.lab), env=env)
        return proc.returncode, proc.stderr

    @rule(path=st.sampled_from(PATHS), name=st.sampled_from(NAMES), text=st.text(max_size=8))
    def write(self, path: str, name: str, text: str) -> None:
        live = self.live(path)
        live.mkdir(parents=True, exist_ok=True)
        self.writes += 1
        text = f"{text}#{self.writes}"  # every write differs from what was there
        (live / name).write_bytes(text.encode())  # bytes: no newline translation
        model = self.persisted if path in self.persisted else self.ephemeral
        model.setdefault(path, {})[name] = text

    @precondition(lambda self: self.pending is not None)
    @rule(name=st.sampled_from(NAMES), text=st.text(max_size=8))
    def write_after_the_kill(self, name: str, text: str) -> None:
        assert self.pending is not None
        self.write(self.pending, name, text)

    @precondition(lambda self: self.pending is None)
    @rule(path=st.sampled_from(PATHS), merge=st.booleans())
    def add(self, path: str, merge: bool) -> None:
        code, err = self.run("persist", "add", path, *(["--merge"] if merge else []))
        if path in self.persisted:
            assert code == 2, err  # already persistent: bad input (docs/cli.md)
        elif path not in self.ephemeral:
            assert code == 2, err
        elif path in self.left_copies and not merge:
            assert code == 5, err
        else:
            assert code == 0, err
            kept = self.left_copies.pop(path, {})
            self.persisted[path] = {**self.ephemeral.pop(path), **kept}

    def killable(self) -> list[str]:
        """Paths a plain add would move: live data, not persisted, no copy left behind."""
        return [p for p in self.ephemeral if p not in self.persisted and p not in self.left_copies]

    @precondition(lambda self: self.pending is None and self.killable())
    @rule(data=st.data(), step=st.sampled_from(STEPS))
    def add_killed(self, data: st.DataObject, step: str) -> None:
        path = data.draw(st.sampled_from(sorted(self.killable())))
        code, err = self.run("persist", "add", path, env={KILL_AFTER_ENV: step})
        assert code == -9, err
        self.pending = path

    @precondition(lambda self: self.pending is not None)
    @rule()
    def add_again(self) -> None:
        path = self.pending
        assert path is not None
        code, err = self.run("persist", "add", path)
        assert code == 0, err
        self.persisted[path] = self.ephemeral.pop(path)
        self.pending = None

    @precondition(lambda self: self.pending is None)
    @rule(path=st.sampled_from(PATHS), purge=st.booleans())
    def remove(self, path: str, purge: bool) -> None:
        code, err = self.run("persist", "remove", path, *(["--purge"] if purge else []))
        if path in self.persisted:
            assert code == 0, err
            data = self.persisted.pop(path)
            self.ephemeral[path] = dict(data)
            if not purge:
                self.left_copies[path] = dict(data)
        elif path in self.left_copies:
            assert code == 0, err
            # Live data of its own is kept; an absent live path gets the left copy back.
            self.ephemeral.setdefault(path, dict(self.left_copies[path]))
            if purge:
                del self.left_copies[path]
        else:
            assert code == 2, err

    @precondition(lambda self: self.pending is None)
    @rule()
    def reboot(self) -> None:
        proc = panther("lab", "reboot", str(self.lab))
        assert proc.returncode == 0, proc.stderr
        self.ephemeral.clear()

    @precondition(lambda self: self.pending is None)
    @rule()
    def gc(self) -> None:
        code, err = self.run("roots", "gc")
        assert code == 0, err

    @invariant()
    def nothing_persisted_is_lost(self) -> None:
        if not hasattr(self, "lab"):
            return
        assert Lab(self.lab).is_up(), "the lab lost a mount"
        for path, data in self.persisted.items():
            assert files_in(self.live(path)) == data, path
            assert files_in(self.copy(path)) == data, path
        for path, data in self.ephemeral.items():
            assert files_in(self.live(path)) == data, path
        for path, data in self.left_copies.items():
            assert files_in(self.copy(path)) == data, path


def test_random_sequences_lose_nothing(workdir: Path) -> None:
    PersistModel.base = workdir
    run_state_machine_as_test(
        PersistModel,
        settings=settings(
            max_examples=int(os.environ.get("PANTHER_STATEFUL_EXAMPLES", "6")),
            stateful_step_count=int(os.environ.get("PANTHER_STATEFUL_STEPS", "12")),
            deadline=None,
            database=None,
            # Each step runs real commands on a real lab: shrinking would take many minutes.
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            suppress_health_check=list(HealthCheck),
        ),
    )
