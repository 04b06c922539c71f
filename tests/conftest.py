"""Fixtures: real loop devices and btrfs, always cleaned up, also when a test fails."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros.storage import layout
from tests.helpers import ROOT_REASON, Pfs, attach_partitioned, cleanup_under, panther


def pytest_configure(config: pytest.Config) -> None:
    """Tests send SIGINT to the commands they start, as a Ctrl-C. A shell without job control
    starts its background jobs with SIGINT ignored, and an ignored signal stays ignored across
    exec: the command would never see the Ctrl-C. A handler is not inherited, so the commands
    started from here get SIGINT's default again, as from a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("root") and ROOT_REASON:
            item.add_marker(pytest.mark.skip(reason=ROOT_REASON))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private directory; panther's state lives in it; all mounts and loops there are removed."""
    state = tmp_path / "state"
    monkeypatch.setenv("PANTHER_STATE_DIR", str(state))
    try:
        yield tmp_path
    finally:
        if ROOT_REASON is None:
            cleanup_under(tmp_path)


@pytest.fixture
def image(workdir: Path) -> Callable[..., Path]:
    """Factory: a sparse image file of the given size in MiB."""

    def make(size_mib: int = 512, name: str = "disk.img") -> Path:
        path = workdir / name
        with open(path, "wb") as f:
            f.truncate(size_mib * 1024 * 1024)
        return path

    return make


@pytest.fixture
def pfs(workdir: Path) -> Pfs:
    """Removed with everything else under workdir by the workdir fixture."""
    manifest_path = workdir / "manifest.json"
    manifest_path.write_text(manifests.bundled_path("lab").read_text())
    image = workdir / "disk.img"
    with open(image, "wb") as f:
        f.truncate(512 * 1024 * 1024)
    layout.format_disk(manifests.load(manifest_path), str(image), yes_wipe=False, secret=None)
    device = attach_partitioned(image)
    top = workdir / "top"
    top.mkdir()
    # commit=300: no background commits, so a copied image shows only what was synced.
    subprocess.run(
        ["mount", "-o", "subvolid=5,noatime,commit=300", f"{device}p2", str(top)], check=True
    )
    # persist and home hold data that must survive every rollback byte for byte.
    (top / "persist" / "etc").mkdir(parents=True)
    (top / "persist" / "etc" / "machine-id").write_text("0123456789abcdef\n")
    (top / "home" / "alice").mkdir()
    (top / "home" / "alice" / "notes.txt").write_text("keep me")
    return Pfs(image=image, device=device, top=top, manifest_path=manifest_path)


@pytest.fixture
def run_rollback(pfs: Pfs) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The real `panther rollback` on the test's mounted top level."""

    def run(*extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return panther(
            "rollback", "--manifest", str(pfs.manifest_path), "--top", str(pfs.top), *extra, env=env
        )

    return run


@pytest.fixture
def lab(workdir: Path) -> Path:
    """A 1 GiB lab machine, up; removed with everything else under workdir."""
    directory = workdir / "lab"
    proc = panther("lab", "up", str(directory), "--size", "1G")
    assert proc.returncode == 0, proc.stderr
    return directory


@pytest.fixture
def bare_lab(workdir: Path) -> Path:
    """A lab whose manifest declares no persistent path: nothing is bind-mounted into its root,
    so a boot leaves the root exactly as the rollback made it (a real boot, and the bundled
    lab's, write the bind mounts' mount points into it)."""
    manifest = json.loads(manifests.bundled_path("lab").read_text())
    manifest["persistence"] = []
    path = workdir / "bare.json"
    path.write_text(json.dumps(manifest))
    directory = workdir / "lab"
    proc = panther("lab", "up", str(directory), "--size", "1G", "--manifest", str(path))
    assert proc.returncode == 0, proc.stderr
    return directory
