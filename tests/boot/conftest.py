"""Fixtures of the boot tests: one initramfs per fail policy, one prepared disk copied per test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.boot import initrd, vm
from tests.helpers import ROOT_REASON, cleanup_under


def _boot_reason() -> str | None:
    if ROOT_REASON:
        return ROOT_REASON
    for tool in ("qemu-system-x86_64", "dracut", "cc", "zstd"):
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup --tests installs it)"
    if not vm.BUSYBOX.exists():
        return f"needs {vm.BUSYBOX} (busybox-static; scripts/setup --tests installs it)"
    if initrd.kernel() is None:
        return "needs a kernel with its modules in /boot (linux-image-cloud-amd64)"
    return None


BOOT_REASON = _boot_reason()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("boot") and BOOT_REASON:
            item.add_marker(pytest.mark.skip(reason=BOOT_REASON))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call":
        item.stash[FAILED] = report.failed
    return report


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def boot_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's images and panther state; every loop and mount there is removed."""
    base = tmp_path_factory.mktemp("boot")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PANTHER_STATE_DIR", str(base / "state"))
        try:
            yield base
        finally:
            cleanup_under(base)
            for image in base.glob("*/disk.img"):
                image.unlink()


@pytest.fixture(scope="session")
def initramfs() -> Callable[[str, bool], tuple[Path, Path]]:
    """(policy, hooks) -> (initramfs, vmlinuz), built once per set of inputs (cached across
    runs); hooks: the step is the test variant with the hang hook."""
    built: dict[tuple[str, bool], tuple[Path, Path]] = {}

    def get(policy: str, hooks: bool) -> tuple[Path, Path]:
        if (policy, hooks) not in built:
            built[policy, hooks] = initrd.cached(initrd.Overlay(policy, hooks=hooks))
        return built[policy, hooks]

    return get


@pytest.fixture(scope="session")
def base_disk(boot_dir: Path) -> Path:
    """The prepared disk, made once per session; each test boots a sparse copy."""
    directory = boot_dir / "base"
    vm.prepare(directory)
    return directory


@pytest.fixture
def machine(
    request: pytest.FixtureRequest,
    boot_dir: Path,
    base_disk: Path,
    initramfs: Callable[[str, bool], tuple[Path, Path]],
    tmp_path: Path,
) -> Iterator[vm.Machine]:
    directory = tmp_path / "disk"
    vm.clone(base_disk, directory)
    logs = tmp_path / "serial"
    logs.mkdir()
    m = vm.Machine(directory=directory, logs=logs, initramfs=initramfs)
    try:
        yield m
    finally:
        cleanup_under(tmp_path)
        m.image.unlink()
        if request.node.stash.get(FAILED, False):
            for log in sorted(logs.glob("serial-*.log"), key=os.path.getmtime):
                print(f"===== {log.name}\n{log.read_text(errors='replace')}")
