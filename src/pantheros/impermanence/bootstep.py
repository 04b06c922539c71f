"""The boot step as panther runs it: the very script and helper the initrd runs.

`data/boot/pantheros-rollback` (bash) with `data/boot/pantheros-btrfs` (C) is the whole boot
step; NixOS builds both into the `pantheros-bootstep` package and runs them in the systemd
initrd. `panther rollback` and `panther lab reboot` prepare the script's arguments from the
manifest, run the same files, and read the `key=value` report it prints, so every rollback test
exercises what boots. The Nix package's wrapper points PANTHER_BOOTSTEP_DIR at the built pair;
elsewhere the helper is compiled once from the shipped source into a cache keyed by its hash.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pantheros import process
from pantheros.errors import PantherError, ToolMissing
from pantheros.manifest import Manifest

SCRIPT = "pantheros-rollback"
HELPER = "pantheros-btrfs"
HELPER_SOURCE = "pantheros-btrfs.c"
DIR_ENV = "PANTHER_BOOTSTEP_DIR"
# Testing only: the script SIGKILLs itself right after the named step (crash injection).
KILL_AFTER_ENV = "PANTHER_ROLLBACK_KILL_AFTER"
STEPS = ("create", "exchange", "archive", "readonly", "commit")
NEW_SUFFIX = ".pantheros-new"
# Where the initrd's step leaves its report; /run survives the switch to the real root.
BOOT_REPORT = Path("/run/pantheros/rollback.report")
EXIT_USAGE = 2


@dataclass
class Outcome:
    result: str  # fresh | already-fresh | would-roll-back | dirty | skipped
    root_id: int | None = None
    archived: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


def parse_report(text: str) -> Outcome:
    """The script's `key=value` lines as an Outcome; unknown keys are ignored."""
    outcome = Outcome(result="")
    lists = {
        "archived": outcome.archived,
        "pruned": outcome.pruned,
        "action": outcome.actions,
        "note": outcome.notes,
    }
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key in lists:
            lists[key].append(value)
        elif key == "result":
            outcome.result = value
        elif key == "error":
            outcome.error = value
        elif key == "root_id" and value.isdigit():
            outcome.root_id = int(value)
    if outcome.result not in ("fresh", "already-fresh", "would-roll-back", "dirty"):
        raise PantherError(f"the boot step's report has no valid result: {text.strip()[:200]!r}")
    return outcome


def _cache_root() -> Path:
    override = os.environ.get("PANTHER_CACHE_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/pantheros")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pantheros"


def _source() -> Path:
    return Path(str(resources.files("pantheros") / "data" / "boot"))


def artifact_dir() -> Path:
    """A directory holding the script and the compiled helper, side by side."""
    override = os.environ.get(DIR_ENV)
    if override:
        found = Path(override)
        for name in (SCRIPT, HELPER):
            if not os.access(found / name, os.X_OK):
                raise ToolMissing(f"{DIR_ENV}={override} has no executable {name}")
        return found
    source = _source()
    script = (source / SCRIPT).read_bytes()
    c_source = (source / HELPER_SOURCE).read_bytes()
    digest = hashlib.sha256(script + b"\0" + c_source).hexdigest()[:16]
    built = _cache_root() / f"bootstep-{digest}"
    if (built / HELPER).is_file() and (built / SCRIPT).is_file():
        return built
    return _build(source, built)


def _build(source: Path, dest: Path) -> Path:
    """Compile the helper and place both files at dest, atomically (a concurrent build wins)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ToolMissing("required tool not found: cc, to build the boot step's helper (gcc)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        process.run(
            [compiler, "-O2", "-Wall", "-o", str(staging / HELPER), str(source / HELPER_SOURCE)],
            check=True,
        )
        shutil.copyfile(source / SCRIPT, staging / SCRIPT)
        os.chmod(staging / SCRIPT, 0o700)  # mkdtemp made the directory 0700: the owner's alone
        try:
            os.rename(staging, dest)
        except OSError:
            if not (dest / HELPER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def argv(
    manifest: Manifest,
    *,
    top: Path | None = None,
    device: str | None = None,
    report: Path | None = None,
    dry_run: bool = False,
) -> list[str]:
    """The script's command line for this manifest (what the NixOS unit renders, too)."""
    storage, policy = manifest.storage, manifest.impermanence
    where = ["--top", str(top)] if top is not None else ["--device", str(device)]
    args = [
        str(artifact_dir() / SCRIPT),
        *where,
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
    if report is not None:
        args += ["--report", str(report)]
    if dry_run:
        args.append("--dry-run")
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
    proc = process.run(args, check=False, pass_stderr=True)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise PantherError(f"the boot step was killed by {name}; the next run finishes it")
    if proc.returncode == EXIT_USAGE:
        raise PantherError(f"the boot step refused its arguments: {' '.join(args[1:])}")
    return parse_report(proc.stdout), proc.returncode
