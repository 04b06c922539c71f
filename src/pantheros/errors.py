"""Typed errors. The command line turns each into one clear line and an exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of `panther`, documented in docs/cli.md."""

    OK = 0
    FAILURE = 1  # the command ran and found or caused a failure (e.g. audit findings)
    USAGE = 2  # bad input: arguments, manifest, target
    TOOL = 3  # an external tool is missing or failed
    PERMISSION = 4  # not root
    REFUSED = 5  # refused to do something unsafe without an explicit flag
    BOOT_DIRTY = 6  # rollback could not make a fresh root and the policy booted the old one
    INCONCLUSIVE = 7  # audit: nothing failed, but too little could be evaluated to judge


class PantherError(Exception):
    """An error the user can act on; `str()` is the one line shown."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(PantherError):
    exit_code = ExitCode.USAGE


class ManifestError(UsageError):
    """A manifest that does not match the schema: carries the JSON path and the reason."""

    def __init__(self, source: str, path: str, reason: str) -> None:
        super().__init__(f"{source}: {path}: {reason}")
        self.source = source
        self.path = path
        self.reason = reason


class ToolMissing(PantherError):
    exit_code = ExitCode.TOOL


class CommandFailed(PantherError):
    """An external command exited non-zero."""

    exit_code = ExitCode.TOOL

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()]
        detail = (errors or lines or [f"exit status {returncode}"])[0]
        super().__init__(f"{argv[0]} failed: {detail}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class NotRoot(PantherError):
    exit_code = ExitCode.PERMISSION


class Refused(PantherError):
    exit_code = ExitCode.REFUSED
