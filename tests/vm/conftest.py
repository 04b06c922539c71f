"""Fixtures of the VM tests: a lab directory per test, driven through the real command line, and
everything it starts (QEMU, swtpm, loop devices, mounts) ended afterwards, also on failure.

The lab's OS, kernel and initramfs are built once and cached in $PANTHER_BOOT_CACHE (default
~/.cache/pantheros/boot): the first test that boots pays for them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from pantheros.lab import qemu
from tests.helpers import ROOT_REASON, cleanup_under
from tests.vm.labvm import FAILED, LabVM, end_vm


def _vm_reason() -> str | None:
    if ROOT_REASON:
        return ROOT_REASON
    tools = ("qemu-system-x86_64", "swtpm", "mmdebstrap", "dracut", "mcopy", "ssh", "cc")
    for tool in tools:
        if shutil.which(tool) is None:
            return f"needs {tool} (scripts/setup --tests installs it)"
    for path in (qemu.OVMF_CODE, Path("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")):
        if not path.exists():
            return f"needs {path} (scripts/setup --tests installs it)"
    if not list(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        return "needs Debian's cloud kernel (linux-image-cloud-amd64; scripts/setup --tests)"
    return None


VM_REASON = _vm_reason()


@pytest.hookimpl(trylast=True)  # after tests/conftest.py's skip of root tests without root
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skipped, saying why, where the tools (or root) are missing; in CI (`CI` set, as CI
    runners set it) that is an error instead (_vm_tools_required): no skip there."""
    here = Path(__file__).parent
    for item in items:
        if not (item.path.is_relative_to(here) and item.get_closest_marker("vm") and VM_REASON):
            continue
        if os.environ.get("CI"):
            item.own_markers = [m for m in item.own_markers if m.name != "skip"]
        else:
            item.add_marker(pytest.mark.skip(reason=VM_REASON))


@pytest.fixture(scope="session", autouse=True)
def _vm_tools_required() -> None:
    """Set up before the labs (a session fixture comes first): in CI, a VM test that cannot
    run is an error."""
    if VM_REASON and os.environ.get("CI"):
        pytest.fail(f"CI runs the VM tests, but they cannot run here: {VM_REASON}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call":
        item.stash[FAILED] = report.failed
    return report


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LabVM]:
    """A lab directory of its own (its state directory too), driven by the command line."""
    directory = tmp_path / "lab"
    env = {
        "PANTHER_STATE_DIR": str(tmp_path / "state"),
        "PANTHER_LAB_DIR": str(directory),
    }
    machine = LabVM(directory, env)
    try:
        yield machine
    finally:
        failed = request.node.stash.get(FAILED, False)
        if failed:
            machine.print_logs()
        end_vm(directory)
        cleanup_under(tmp_path)
        for image in (directory / "disk.img", directory / "disk.img.new"):
            image.unlink(missing_ok=True)
