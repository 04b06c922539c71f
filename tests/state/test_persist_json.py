"""`persist add` and `persist remove` report their result as JSON, and stdout holds only it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import panther

pytestmark = pytest.mark.root


def test_add_and_remove_say_what_they_did(lab: Path) -> None:
    live = lab / "mnt" / "var" / "lib" / "app"
    live.mkdir(parents=True)
    (live / "db").write_text("data")
    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    [entry] = json.loads(proc.stdout)
    assert entry["path"] == "/var/lib/app"
    assert (entry["kind"], entry["mode"]) == ("directory", "0755")
    assert entry["recorded_in"] == str(lab / "persistence.json")
    assert entry["nix"] is None
    recorded = json.loads((lab / "persistence.json").read_text())
    assert [d["directory"] for d in recorded["directories"]] == ["/var/lib/app"]

    proc = panther("persist", "remove", "/var/lib/app", "--lab", str(lab), "--json")
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["path"] == "/var/lib/app"
    assert outcome["copy_kept"] is True
    assert Path(outcome["copy"]).is_dir()
    assert (live / "db").read_text() == "data"

    proc = panther("persist", "add", "/var/lib/app", "--lab", str(lab), "--merge")
    assert proc.returncode == 0, proc.stderr
    proc = panther("persist", "remove", "/var/lib/app", "--lab", str(lab), "--json", "--purge")
    assert proc.returncode == 0, proc.stderr
    outcome = json.loads(proc.stdout)
    assert outcome["copy_kept"] is False
    assert not Path(outcome["copy"]).exists()
