"""persist fails in one line: the action, the reason, and a path that cannot break the line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pantheros.errors import PantherError
from pantheros.state.persist.failures import one_line


def test_a_filesystem_error_names_the_action_and_the_path(tmp_path: Path) -> None:
    with pytest.raises(PantherError) as raised, one_line("persist add /x"):
        (tmp_path / "absent" / "dir").mkdir()
    assert str(raised.value) == f"persist add /x: No such file or directory: {tmp_path}/absent/dir"


def test_a_name_with_a_newline_is_quoted_on_the_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "a\nb" / "c"
    with pytest.raises(PantherError) as raised, one_line("persist remove /y"):
        missing.mkdir()
    assert str(raised.value) == f"persist remove /y: No such file or directory: {str(missing)!r}"
    assert "\n" not in str(raised.value)


def test_a_descriptor_is_not_shown_as_a_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    fd = os.open(tmp_path / "file", os.O_RDONLY)
    try:
        with pytest.raises(PantherError) as raised, one_line("persist list"):
            os.scandir(fd)
    finally:
        os.close(fd)
    assert str(raised.value) == "persist list: Not a directory"


def test_other_errors_pass_unchanged() -> None:
    with pytest.raises(KeyError), one_line("persist list"):
        raise KeyError("a bug, not the filesystem")
