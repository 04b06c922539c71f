"""Exit codes and typed errors of `panther-spec` (and of `panther spec`, which runs it)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The codes OpenSpec's CLI uses, and 2 for bad input as `panther` has it (docs/cli.md)."""

    OK = 0
    FAILURE = 1  # invalid items, a failed archive or diff, an untested scenario with --strict
    USAGE = 2  # bad input: arguments, an unknown change or spec, an unconfirmed archive


class SpecError(Exception):
    """An error the user can act on; `str()` is the one line shown."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SpecError):
    exit_code = ExitCode.USAGE


# The status codes (OpenSpec's names) of the errors that are bad input: an item that does not
# exist, a name that is no name, a missing confirmation. Without --json they exit 2, as every bad
# input to panther does (docs/cli.md); every other error exits 1. With --json, a spec command
# prints OpenSpec's status and exits 1 for every error, as the OpenSpec CLI does.
BAD_INPUT = frozenset(
    {
        "no_openspec_root",
        "unknown_item",
        "ambiguous_item",
        "nothing_to_validate",
        "unknown_change",
        "change_not_found",
        "archive_change_name_required",
        "archive_change_name_invalid",
        "archive_change_symlink",
        "archive_change_not_found",
        "archive_change_is_namespace_folder",
        "archive_confirmation_required",
        "archive_tasks_incomplete",
    }
)
