"""`panther disk plan` for every bundled manifest, text and JSON, against golden files.

A plan needs no root and changes nothing, so these run anywhere. The target is a sparse image
file; paths that differ per checkout are replaced by placeholders before comparing. After a
deliberate change to the plan, regenerate with `PANTHER_UPDATE_GOLDEN=1 pytest
tests/storage/test_plan_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from tests.helpers import REPO, one_line_error, panther

GOLDEN = Path(__file__).parent / "golden"


def normalised(text: str, target: Path) -> str:
    # The target first: a temporary directory may lie beside the checkout, sharing its prefix.
    return text.replace(str(target), "<target>").replace(f"{REPO}/", "<repo>/")


@pytest.mark.parametrize("name", manifests.bundled_names())
@pytest.mark.parametrize("form", ["text", "json"])
def test_plan_matches_its_golden_file(tmp_path: Path, name: str, form: str) -> None:
    target = tmp_path / "disk.img"
    with open(target, "wb") as f:
        f.truncate(16 * 1024**3)
    extra = ["--json"] if form == "json" else []
    proc = panther("disk", "plan", "--manifest", name, str(target), *extra)
    assert proc.returncode == 0, proc.stderr
    got = normalised(proc.stdout, target)
    golden = GOLDEN / f"plan-{name}.{'json' if form == 'json' else 'txt'}"
    if os.environ.get("PANTHER_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert golden.exists(), f"no golden file {golden.name}: run with PANTHER_UPDATE_GOLDEN=1"
    assert got == golden.read_text()
    assert target.stat().st_blocks == 0, "a plan writes nothing"


@pytest.mark.parametrize("key", [["--key-file", "/root/luks.key"], ["--passphrase-stdin"]])
def test_a_key_for_a_layout_without_luks_is_refused(tmp_path: Path, key: list[str]) -> None:
    target = tmp_path / "disk.img"
    target.write_bytes(b"")
    for command in (["plan"], ["format", "--yes-wipe"]):
        proc = panther("disk", *command, "--manifest", "server", str(target), *key, input="pw\n")
        assert "has no LUKS" in one_line_error(proc)
        assert proc.returncode == 2
    assert target.stat().st_size == 0
