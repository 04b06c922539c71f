"""Fixtures of the fleet tests: real sshd servers on loopback, and labs for them to report on.

Everything started here is ended here, also when a test fails: servers (and every process of
their namespaces), the hanging listener, the labs (unmounted, detached, purged).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet import sshlab
from tests.helpers import ROOT_REASON, cleanup_under

SKIP = sshlab.reason_to_skip() or ROOT_REASON


@pytest.fixture(autouse=True)
def _no_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client uses the test's key only, never a key of whoever runs the tests."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


@pytest.fixture
def ssh(tmp_path: Path) -> Iterator[sshlab.SshLab]:
    if SKIP:
        pytest.skip(SKIP)
    lab = sshlab.SshLab(tmp_path / "ssh")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("fleet")
    try:
        yield base
    finally:
        if ROOT_REASON is None:
            cleanup_under(base)


def labs_under(base: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    if SKIP:
        pytest.skip(SKIP)
    labs = sshlab.make_labs(base / "labs", names)
    try:
        yield labs
    finally:
        sshlab.remove_labs(list(labs.values()))


def environment() -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1"}
