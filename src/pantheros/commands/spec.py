"""`panther spec`: the spec tool (`panther_spec`, also `panther-spec`) under panther's name.

Its actions are declared by `panther_spec.cli.add_commands` and read their own namespace; here
its errors become panther's, so each ends in the same `panther: error:` line and exit code.
"""

from __future__ import annotations

import argparse

from panther_spec.cli import run
from panther_spec.errors import SpecError
from pantheros.errors import ExitCode, PantherError


def cmd_spec(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except SpecError as exc:
        raise PantherError(str(exc), exit_code=ExitCode(exc.exit_code)) from None
