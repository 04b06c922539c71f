"""A LUKS mapping is used or closed only when it sits on our disk.

The name comes from the manifest, and the host may use the same name for its own volume. This
kernel has no device-mapper, so the kernel's answers (the mapping's dm-N node, the holders of a
partition, the devices stacked on a disk) are given here as a device-mapper kernel gives them,
and the test checks what panther does with them: use, refuse, close or leave alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros import process
from pantheros.errors import Refused
from pantheros.storage import blockdev, layout, luks


@pytest.fixture
def mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """An open mapping `vault` whose node is dm-7, as udev links /dev/mapper/NAME to ../dm-N."""
    (tmp_path / "dev" / "mapper").mkdir(parents=True)
    (tmp_path / "dev" / "dm-7").touch()
    (tmp_path / "dev" / "mapper" / "vault").symlink_to("../dm-7")
    monkeypatch.setattr(luks, "mapper_path", lambda name: str(tmp_path / "dev" / "mapper" / name))
    ran: list[list[str]] = []
    monkeypatch.setattr(process, "run", lambda argv, **_: ran.append(argv))
    return ran


def test_an_open_mapping_on_another_device_is_refused_not_reused(
    mapping: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blockdev, "holders", lambda dev: ["dm-3"])
    with pytest.raises(Refused, match="not on /dev/loop9p2"):
        luks.open_mapping("/dev/loop9p2", "vault", None, False)
    assert mapping == []


def test_an_open_mapping_on_our_partition_is_reused(
    mapping: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blockdev, "holders", lambda dev: ["dm-7"])
    luks.open_mapping("/dev/loop9p2", "vault", None, False)
    assert mapping == []  # nothing to open: it is ours already


def test_close_leaves_a_mapping_that_is_not_on_our_disk(
    mapping: list[list[str]], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(blockdev, "stack", lambda disk: {"/dev/loop9", "/dev/loop9p2", "/dev/dm-3"})
    luks.close_mapping("vault", "/dev/loop9")
    assert mapping == []
    assert "left open" in capsys.readouterr().err


def test_close_closes_the_mapping_stacked_on_our_disk(
    mapping: list[list[str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ours = {"/dev/loop9", "/dev/loop9p2", str(tmp_path / "dev" / "dm-7")}
    monkeypatch.setattr(blockdev, "stack", lambda disk: ours)
    luks.close_mapping("vault", "/dev/loop9")
    assert mapping == [["cryptsetup", "close", "vault"]]


def test_format_refuses_a_layout_whose_mapping_name_is_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = manifests.bundled("workstation")
    assert manifest.storage.luks is not None
    image = tmp_path / "disk.img"
    image.write_bytes(b"")
    key = tmp_path / "key"
    key.write_text("secret")
    monkeypatch.setattr(layout, "device_mapper_available", lambda: True)
    monkeypatch.setattr(layout, "is_open", lambda name: name == manifest.storage.luks.name)
    with pytest.raises(Refused, match="already open"):
        layout.preflight(manifest, str(image), secret=luks.Secret(key_file=str(key)))
    assert image.stat().st_size == 0
