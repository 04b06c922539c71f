"""Around the boot step: its record, the filesystem lock it shares with gc, and pruning.

The boot step itself is `data/boot/pantheros-rollback` (see pantheros.impermanence.bootstep):
shell and a small C helper, run in the initrd. What needs Python happens in stage 2 or on
demand: the record that `panther status`, the audit and the login message read, and retention
(`gc`), which never runs on the boot path.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from pantheros import btrfs, ui
from pantheros.files import write_json
from pantheros.impermanence import retention
from pantheros.impermanence.bootstep import Outcome
from pantheros.impermanence.oldroots import OldRoots
from pantheros.manifest import Manifest
from pantheros.manifest.models import RECORD_DIR

RECORD_FILE = "rollback.json"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def record_path(top: Path, manifest: Manifest) -> Path:
    """Where the last result is kept: the persist subvolume, seen by the running system."""
    persist = manifest.persist
    assert persist is not None, "validated manifests have a persist subvolume"
    return top / persist.name / RECORD_DIR / RECORD_FILE


def record_name(manifest: Manifest) -> str:
    """The record as the machine sees it, for messages: the top level's mount is private."""
    persist = manifest.persist
    assert persist is not None, "validated manifests have a persist subvolume"
    return f"{persist.mountpoint.rstrip('/')}/{RECORD_DIR}/{RECORD_FILE}"


def write_record(top: Path, manifest: Manifest, outcome: Outcome) -> None:
    """Keep the outcome in the persist subvolume, reached from the top level without a symlink
    (one planted in persist would put the record on the host, and a planted file be read back)."""
    data = {
        "boot_id": boot_id(),
        "time": time.time(),
        "policy": manifest.impermanence.fail_policy.value,
        "design": manifest.impermanence.design.value,
        **asdict(outcome),
    }
    write_json(record_path(top, manifest), data, beneath=top, known_as=record_name(manifest))


@contextlib.contextmanager
def locked(top: Path) -> Iterator[None]:
    """One rollback or gc at a time per filesystem."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def gc(
    top: Path, manifest: Manifest, *, dry_run: bool, now: float | None = None
) -> tuple[retention.Plan, list[str]]:
    """Apply the retention policy to the old roots; returns the plan and what was deleted."""
    old = OldRoots(top, manifest.storage)
    with locked(top):
        roots, _ = old.scan()
        by_name = {r.name: r for r in roots}
        stats = os.statvfs(top)
        total = stats.f_blocks * stats.f_frsize
        free = 100.0 * stats.f_bavail / stats.f_blocks if stats.f_blocks else None
        plan = retention.plan(
            [r.candidate() for r in roots],
            manifest.impermanence.retention,
            time.time() if now is None else now,
            free_percent=free,
            total_bytes=total,
        )
        if plan.deletions:
            plan = _keep_mounted(plan, old.mounted(roots))
        deleted: list[str] = []
        if not dry_run and plan.deletions:
            # The helper checks each again just before it deletes it: one mounted (or pinned)
            # since the plan was made is kept and said.
            deleted, kept = old.delete([by_name[c.name] for c in plan.deletions])
            plan.notes.extend(kept)
            if deleted:
                btrfs.sync(top)
    return plan, deleted


def _keep_mounted(plan: retention.Plan, mounted: dict[str, str]) -> retention.Plan:
    """Keep every root the policy would delete but that is mounted (`roots mount`, a bind), in
    any mount namespace."""
    decisions = []
    for decision in plan.decisions:
        where = None if decision.keep else mounted.get(decision.root.name)
        if where is not None:
            decision = retention.Decision(decision.root, True, f"mounted at {ui.printable(where)}")
        decisions.append(decision)
    return retention.Plan(decisions, plan.notes)
