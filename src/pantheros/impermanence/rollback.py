"""The boot-time rollback: archive the current root, start from a fresh one.

Runs in the initrd before the root is mounted, with the standard library and btrfs-progs only.
The filesystem always has a root subvolume: the fresh root is made beside the old one and the
two are swapped with renameat2(RENAME_EXCHANGE). Each step re-reads the on-disk state, so a run
interrupted anywhere is finished by the next one, and a root that is already fresh is left alone.

  create   snapshot the blank (or create an empty subvolume) as <root>.pantheros-new
  exchange swap <root> and <root>.pantheros-new atomically
  archive  rename <root>.pantheros-new (now the previous root) into the old-roots location
  readonly make the archived root read-only
  commit   commit: the exchange and the archive reach the disk together or not at all, and
           either way the disk holds a state the next run recognises and finishes
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pantheros import btrfs, process
from pantheros.errors import PantherError
from pantheros.impermanence import retention
from pantheros.impermanence.oldroots import Mounted, OldRoot, OldRoots, archive_name
from pantheros.manifest import Manifest
from pantheros.manifest.models import Design

log = logging.getLogger(__name__)

NEW_SUFFIX = ".pantheros-new"
STEPS = ("create", "exchange", "archive", "readonly", "commit")
# Testing only: SIGKILL this process right after the named step (crash-injection tests).
KILL_AFTER_ENV = "PANTHER_ROLLBACK_KILL_AFTER"
RECORD_DIR = ".pantheros"
RECORD_FILE = "rollback.json"


class RollbackError(PantherError):
    """No fresh root could be made; the current root is still in place."""


@dataclass
class Outcome:
    result: str  # fresh | already-fresh | would-roll-back | dirty
    root_id: int | None = None
    archived: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


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


def write_record(path: Path, manifest: Manifest, outcome: Outcome) -> None:
    data = {
        "boot_id": boot_id(),
        "time": time.time(),
        "policy": manifest.impermanence.fail_policy.value,
        "design": manifest.impermanence.design.value,
        **asdict(outcome),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(top: Path) -> Iterator[None]:
    """One rollback or gc at a time per filesystem."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class Rollback:
    def __init__(
        self, top: Path, manifest: Manifest, *, dry_run: bool = False, now: float | None = None
    ) -> None:
        self.top = top
        self.manifest = manifest
        self.dry_run = dry_run
        self.now = time.time() if now is None else now
        st = manifest.storage
        self.root = top / st.root.name
        self.new = self.root.with_name(self.root.name + NEW_SUFFIX)
        self.blank = top / st.blank_snapshot
        self.old = OldRoots(top, st)
        self.design = manifest.impermanence.design
        self.outcome = Outcome(result="fresh")
        self._kill_after = os.environ.get(KILL_AFTER_ENV)

    # Small pieces

    def _step(self, name: str, text: str, action: Callable[[], None]) -> None:
        self.outcome.actions.append(text)
        if self.dry_run:
            return
        log.debug("rollback step %s: %s", name, text)
        action()
        if self._kill_after == name:
            os.kill(os.getpid(), signal.SIGKILL)

    def _blank_info(self) -> btrfs.SubvolumeInfo | None:
        if self.design is not Design.BLANK_SNAPSHOT:
            return None
        if not btrfs.is_subvolume(self.blank):
            raise RollbackError(f"the blank snapshot {self.blank.name} is missing")
        return btrfs.subvolume_info(self.blank)

    def is_fresh(self, path: Path) -> bool:
        """Made from the blank (or empty) and not modified since: nothing to erase."""
        info = btrfs.subvolume_info(path)
        if info.generation != info.otransid:
            return False
        if self.design is Design.BLANK_SNAPSHOT:
            blank = self._blank_info()
            return blank is not None and info.parent_uuid == blank.uuid
        # An empty btrfs directory has size 0; stat, unlike listing, never touches atime.
        return info.parent_uuid is None and os.stat(path).st_size == 0

    def _kind(self, path: Path) -> str:
        """'subvolume', 'missing', or raise: never act on something that is not a subvolume."""
        if btrfs.is_subvolume(path):
            return "subvolume"
        if not os.path.lexists(path):
            return "missing"
        raise RollbackError(f"{path.name} exists but is not a subvolume; refusing to touch it")

    def _create(self, dest: Path) -> None:
        """Make a fresh root at dest; on ENOSPC prune old roots and try again."""
        while True:
            try:
                if self.design is Design.BLANK_SNAPSHOT:
                    btrfs.snapshot(self.blank, dest)
                else:
                    btrfs.create_subvolume(dest)
                return
            except btrfs.NoSpace:
                if not self._free_one_root():
                    raise RollbackError(
                        "no space left to create a fresh root, and no old root may be pruned"
                    ) from None

    def _free_one_root(self) -> bool:
        """Delete the oldest old root that retention allows to go; wait until its space is back."""
        roots, _ = self.old.scan()
        protected = self.manifest.impermanence.retention.keep_min
        deletable = [r for r in roots[: max(0, len(roots) - protected)] if not r.pinned]
        if not deletable:
            return False
        victim = deletable[0]
        self.outcome.notes.append(f"no space: pruned old root {victim.name}")
        self.outcome.pruned += self.old.delete(victim)
        btrfs.sync(self.top)
        process.run(["btrfs", "subvolume", "sync", str(self.top)], check=True)
        return True

    def _archive(self, source: Path, info: btrfs.SubvolumeInfo) -> None:
        """Move a previous root (described by info) into the old-roots location."""
        name = archive_name(info)
        dest = self.old.location / name

        def move() -> None:
            nonlocal dest
            self.old.ensure()
            try:
                btrfs.renameat2(source, dest, btrfs.RENAME_NOREPLACE)
            except btrfs.BtrfsError as exc:
                if exc.errno != errno.EEXIST:  # the name is taken only if otransid repeats
                    raise
                dest = dest.with_name(f"{name}-{info.id}")
                btrfs.renameat2(source, dest, btrfs.RENAME_NOREPLACE)
            self.outcome.archived.append(dest.name)

        self._step(
            "archive", f"archive {source.name} as {self.manifest.storage.old_roots}/{name}", move
        )
        self._step(
            "readonly",
            f"make {self.manifest.storage.old_roots}/{name} read-only",
            lambda: btrfs.set_readonly(dest, True),
        )
        self._step("commit", "commit (btrfs sync)", lambda: btrfs.sync(self.top))

    def _seal_old_roots(self) -> None:
        """Old roots are read-only; one that is not was archived by an interrupted run."""
        roots, _ = self.old.scan()
        for root in roots:
            if not root.info.readonly:
                self.outcome.notes.append(f"made {root.name} read-only (an interrupted run)")
                btrfs.set_readonly(root.path, True)

    def _fresh_source(self) -> str:
        if self.design is Design.BLANK_SNAPSHOT:
            return f"snapshot {self.blank.name}"
        return "create an empty subvolume"

    # The procedure

    def run(self) -> Outcome:
        with locked(self.top):
            self._run()
        if self.dry_run and self.outcome.result == "fresh":
            self.outcome.result = "would-roll-back"
        if btrfs.is_subvolume(self.root):
            self.outcome.root_id = btrfs.subvolume_info(self.root).id
        return self.outcome

    def _run(self) -> None:
        self._blank_info()  # a missing blank is an error before anything changes
        if not self.dry_run:
            # Writes not yet committed do not show in the root's generation: commit first, so
            # a root changed a moment ago is never mistaken for a fresh one.
            btrfs.sync(self.top)
            self._seal_old_roots()
        root, new = self._kind(self.root), self._kind(self.new)
        if new == "subvolume":
            if root == "subvolume" and self.is_fresh(self.root) and not self.is_fresh(self.new):
                # Interrupted after the exchange: the previous root waits beside the fresh one.
                self.outcome.notes.append("finishing an interrupted rollback")
                self._archive(self.new, btrfs.subvolume_info(self.new))
                return
            if root == "subvolume" and self.is_fresh(self.new) and not self.is_fresh(self.root):
                # Interrupted before the exchange: the fresh root is ready; use it.
                self.outcome.notes.append("reusing the fresh root of an interrupted rollback")
                self._swap()
                return
            if root == "missing" and self.is_fresh(self.new):
                self._step(
                    "exchange",
                    f"rename {self.new.name} to {self.root.name}",
                    lambda: btrfs.renameat2(self.new, self.root, btrfs.RENAME_NOREPLACE),
                )
                self._step("commit", "commit (btrfs sync)", lambda: btrfs.sync(self.top))
                return
            # Anything else beside the root is kept as an old root, never deleted.
            self.outcome.notes.append(f"{self.new.name} was left over: archived, not deleted")
            self._archive(self.new, btrfs.subvolume_info(self.new))
        if root == "missing":
            self.outcome.notes.append(f"there was no {self.root.name} subvolume: creating it")
            self._step(
                "create",
                f"{self._fresh_source()} as {self.root.name}",
                lambda: self._create(self.root),
            )
            self._step("commit", "commit (btrfs sync)", lambda: btrfs.sync(self.top))
            return
        if self.is_fresh(self.root):
            self.outcome.result = "already-fresh"
            return
        self._step(
            "create", f"{self._fresh_source()} as {self.new.name}", lambda: self._create(self.new)
        )
        self._swap()

    def _swap(self) -> None:
        previous = btrfs.subvolume_info(self.root)
        self._step(
            "exchange",
            f"exchange {self.root.name} and {self.new.name} (RENAME_EXCHANGE)",
            lambda: btrfs.renameat2(self.root, self.new, btrfs.RENAME_EXCHANGE),
        )
        self._archive(self.new, previous)


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
        plan = _keep_mounted(plan, old, by_name)
        deleted: list[str] = []
        if not dry_run:
            for candidate in plan.deletions:
                try:
                    deleted += old.delete(by_name[candidate.name])
                except Mounted as exc:  # mounted since the plan was made
                    plan.notes.append(str(exc))
            if deleted:
                btrfs.sync(top)
    return plan, deleted


def _keep_mounted(
    plan: retention.Plan, old: OldRoots, by_name: dict[str, OldRoot]
) -> retention.Plan:
    """Keep every root the policy would delete but that is mounted (`roots mount`, a bind)."""
    decisions = []
    for decision in plan.decisions:
        where = None if decision.keep else old.mounted_at(by_name[decision.root.name])
        if where is not None:
            decision = retention.Decision(decision.root, True, f"mounted at {where}")
        decisions.append(decision)
    return retention.Plan(decisions, plan.notes)
