"""The boot step as panther runs it: the very script and helper the initrd runs.

`data/boot/pantheros-rollback` (bash) with `data/boot/pantheros-btrfs` (C) is the whole boot step;
NixOS builds both into the `pantheros-bootstep` package and runs them in the systemd initrd, as
`pantheros-btrfs rollback ARGS`: the helper runs the usual boot itself and execs the script, with
the same arguments, for anything else (D155). `panther rollback` and `panther lab reboot` prepare
the arguments from the manifest, run the same command, and read the `key=value` report it prints, so
every rollback test exercises what boots. The helper is also panther's one way to read the old-roots
location's pin file and to delete an old root (pantheros.impermanence.oldroots). The Nix package's
wrapper points PANTHER_BOOTSTEP_DIR at the built pair; elsewhere the helper is compiled once from
the shipped source into a cache keyed by its hash (pantheros.native). What is run as root is
checked before every run: owned by root (or by the user running panther) and writable by nobody
else, up to /.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from pantheros import native, process
from pantheros.errors import PantherError, Refused, ToolMissing
from pantheros.manifest import Manifest
from pantheros.storage import keyvalue

SCRIPT = "pantheros-rollback"
HELPER = "pantheros-btrfs"
HELPER_SOURCE = "pantheros-btrfs.c"
# The step's entry: the helper's command that runs the usual boot and the script otherwise.
ENTRY = "rollback"
DIR_ENV = "PANTHER_BOOTSTEP_DIR"
# Where the initrd's step leaves its report; /run survives the switch to the real root.
BOOT_REPORT = Path("/run/pantheros/rollback.report")
# On the kernel command line it skips the step: the unit's ConditionKernelCommandLine, which
# systemd.unit(5) matches as the word alone or as the left-hand side of an assignment.
NO_ROLLBACK_PARAMETER = "pantheros.norollback"
EXIT_USAGE = 2
RESULTS = ("fresh", "already-fresh", "would-roll-back", "dirty")
# The results of `--prepare`, stage 2's part: the fresh root of the next boot.
PREPARE_RESULTS = ("prepared", "already-prepared", "unprepared")


@dataclass
class Outcome:
    result: str  # fresh | already-fresh | would-roll-back | dirty | skipped
    root_id: int | None = None
    archived: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def parse_report(data: bytes | str, results: Sequence[str] = RESULTS) -> Outcome:
    """The script's report as an Outcome, read with the record format's rule (one value per
    line, unescaped to bytes, names as surrogateescape str). A report this script cannot have
    written (a malformed line, no result or two, a result not among `results`) is refused;
    unknown keys are ignored."""
    raw = data.encode("ascii", "surrogateescape") if isinstance(data, str) else data
    try:
        pairs = keyvalue.parse(raw)
    except keyvalue.RecordError as exc:
        raise PantherError(f"the boot step's report is not valid: {exc}") from None
    outcome = Outcome(result="")
    lists = {
        "archived": outcome.archived,
        "pruned": outcome.pruned,
        "action": outcome.actions,
        "note": outcome.notes,
    }
    found = [value for key, value in pairs if key == "result"]
    for key, value in pairs:
        if key in lists:
            lists[key].append(value)
        elif key == "error":
            outcome.error = value
        elif key == "root_id" and value.isascii() and value.isdigit():
            outcome.root_id = int(value)
    if len(found) != 1 or found[0] not in results:
        shown = ", ".join(keyvalue.escape(r) for r in found) or "none"
        raise PantherError(f"the boot step's report has no single valid result (found: {shown})")
    outcome.result = found[0]
    return outcome


def rollback_skipped(cmdline: str) -> bool:
    """Whether the kernel command line skips the step, as the unit's condition reads it."""
    words = (word.strip('"') for word in cmdline.split())
    return any(
        word == NO_ROLLBACK_PARAMETER or word.startswith(NO_ROLLBACK_PARAMETER + "=")
        for word in words
    )


def boot_outcome(report: bytes | None, where: Path, cmdline: str) -> Outcome:
    """What happened in this boot's initrd, from the step's report (None: there was none)."""
    if report is not None:
        try:
            return parse_report(report)
        except PantherError as exc:
            return Outcome(result="dirty", error=f"{where}: {exc}")
    if rollback_skipped(cmdline):
        return Outcome(
            result="skipped",
            notes=[f"{NO_ROLLBACK_PARAMETER} is on the kernel command line: no rollback"],
        )
    return Outcome(result="dirty", error=f"no report at {where}: the boot step did not run")


def source_dir() -> Path:
    """Where the shipped script and the helper's source are."""
    return Path(str(resources.files("pantheros") / "data" / "boot"))


def _checked(directory: Path) -> Path:
    """The directory resolved, as checked (native.checked): what is run is named by it."""
    real, why = native.checked(directory, SCRIPT, HELPER)
    if why is not None:
        raise Refused(
            f"will not run the boot step from {directory}: {why} (remove it, or set "
            "PANTHER_CACHE_DIR to a directory only root can write)"
        )
    return Path(real)


def artifact_dir() -> Path:
    """A directory holding the script and the compiled helper, side by side, checked safe."""
    override = os.environ.get(DIR_ENV)
    if override:
        found = Path(override)
        for name in (SCRIPT, HELPER):
            if not os.access(found / name, os.X_OK):
                raise ToolMissing(f"{DIR_ENV}={override} has no executable {name}")
        return _checked(found)
    source = source_dir()
    built = Path(native.cache_root(), f"bootstep-{_digest()}")
    return _checked(native.build_once(built, lambda staging: _build(source, staging), HELPER))


@cache
def _digest() -> str:
    """The cache key: a hash of the shipped script and the helper's source (read once)."""
    return native.digest(source_dir() / SCRIPT, source_dir() / HELPER_SOURCE)


def compile_helper(source: Path, output: Path, *defines: str) -> None:
    """Compile the helper's source to output, as nix/bootstep.nix does (defines: the tests'
    variant only)."""
    flags = [f"-D{name}" for name in defines]
    native.compile_c(source, output, *flags, why="the boot step's helper")


def _build(source: Path, staging: Path) -> None:
    """The script and the compiled helper, side by side in staging."""
    compile_helper(source / HELPER_SOURCE, staging / HELPER)
    shutil.copyfile(source / SCRIPT, staging / SCRIPT)
    os.chmod(staging / SCRIPT, 0o700)


def helper(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the helper; its output is the record format's escaped text (ASCII)."""
    return process.run([str(artifact_dir() / HELPER), *map(str, args)], check=False)


def options(manifest: Manifest) -> list[str]:
    """The script's options for this manifest: what the NixOS unit renders after --device
    (tests/nix checks the two agree for every example host)."""
    storage, policy = manifest.storage, manifest.impermanence
    return [
        "--root",
        storage.root.name,
        "--blank",
        storage.blank_snapshot,
        "--old-roots",
        storage.old_roots,
        "--design",
        policy.design.value,
        "--keep-min",
        str(policy.retention.keep_min),
        "--fail-policy",
        policy.fail_policy.value,
    ]


def argv(
    manifest: Manifest,
    *,
    top: Path | None = None,
    device: str | None = None,
    report: Path | None = None,
    dry_run: bool = False,
    prepare: bool = False,
) -> list[str]:
    """The step's command line for this manifest: the helper's `rollback`, which runs the
    usual boot itself and the script for anything else (D155), as the initrd runs it."""
    where = ["--top", str(top)] if top is not None else ["--device", str(device)]
    args = [str(artifact_dir() / HELPER), ENTRY, *where, *options(manifest)]
    if report is not None:
        args += ["--report", str(report)]
    if dry_run:
        args.append("--dry-run")
    if prepare:
        args.append("--prepare")
    return args


def run(
    manifest: Manifest,
    *,
    top: Path | None = None,
    device: str | None = None,
    report: Path | None = None,
    dry_run: bool = False,
) -> tuple[Outcome, int]:
    """Run the boot step; its messages go to our stderr, its report comes back parsed."""
    args = argv(manifest, top=top, device=device, report=report, dry_run=dry_run)
    proc = _run(args)
    return parse_report(proc.stdout), proc.returncode


def prepare(manifest: Manifest, *, top: Path) -> Outcome:
    """Stage 2's part of the step (`--prepare`), on a mounted top level: make every old root
    read-only, and the fresh root of the next boot (a snapshot of the blank beside the root), so
    that boot costs no snapshot and no commit (D154). Its result is one of PREPARE_RESULTS."""
    return parse_report(_run(argv(manifest, top=top, prepare=True)).stdout, PREPARE_RESULTS)


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the script (its report is its stdout); PantherError when it was killed or refused
    its arguments."""
    proc = process.run(args, check=False, pass_stderr=True, errors="surrogateescape")
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise PantherError(f"the boot step was killed by {name}; the next run finishes it")
    if proc.returncode == EXIT_USAGE:
        shown = " ".join(keyvalue.escape(a) for a in args[1:])
        raise PantherError(f"the boot step refused its arguments: {shown}")
    return proc


def helper_lines(result: subprocess.CompletedProcess[str]) -> Sequence[str]:
    return [line for line in result.stdout.split("\n") if line]
