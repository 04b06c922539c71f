"""Which old roots to keep: a pure function of the roots, the policy and the clock.

Order comes from btrfs (otransid: the transaction that created the root, monotonic and immune
to clocks); age comes from btrfs creation time (otime). Directory mtimes are never consulted.
The rules, in order of precedence:

1. the `keep_min` newest roots are always kept;
2. pinned roots are always kept;
3. if the clock looks wrong (earlier than the newest root, or more than CLOCK_AHEAD_LIMIT past
   it), age-based deletion is skipped and the plan says so;
4. roots older than `max_age_days` are deleted;
5. roots beyond the `max_count` newest are deleted;
6. while free space is below `min_free_percent`, the oldest remaining roots are deleted (one at
   a time when their size is unknown, so a caller measures again before deleting more).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pantheros.manifest.models import Retention

DAY = 86400.0
CLOCK_BEHIND_TOLERANCE = 600.0  # otime and the clock may differ a little across a reboot
CLOCK_AHEAD_LIMIT = 365 * DAY  # a machine unused for a year is rarer than a broken RTC


@dataclass(frozen=True)
class Candidate:
    """An old root as retention sees it."""

    name: str
    otransid: int
    otime: float
    pinned: bool = False
    exclusive_bytes: int | None = None


@dataclass(frozen=True)
class Decision:
    root: Candidate
    keep: bool
    reason: str


@dataclass(frozen=True)
class Plan:
    decisions: list[Decision]
    notes: list[str] = field(default_factory=list)

    @property
    def deletions(self) -> list[Candidate]:
        return [d.root for d in self.decisions if not d.keep]


def clock_problem(newest_otime: float | None, now: float) -> str | None:
    """Why the clock cannot be trusted for age decisions, or None when it can."""
    if newest_otime is None:
        return None
    if now < newest_otime - CLOCK_BEHIND_TOLERANCE:
        return "the clock is earlier than the newest old root was created"
    if now > newest_otime + CLOCK_AHEAD_LIMIT:
        return "the clock is more than a year past the newest old root"
    return None


def _age_days(seconds: float) -> str:
    return f"{seconds / DAY:.1f} days"


def plan(
    roots: Sequence[Candidate],
    policy: Retention,
    now: float,
    *,
    free_percent: float | None = None,
    total_bytes: int | None = None,
) -> Plan:
    """Decide keep or delete for every root, with the reason; newest first."""
    ordered = sorted(roots, key=lambda r: r.otransid, reverse=True)
    notes: list[str] = []
    problem = clock_problem(ordered[0].otime if ordered else None, now)
    if problem and policy.max_age_days is not None:
        notes.append(f"age-based pruning skipped: {problem}")
    verdict: dict[str, tuple[bool, str]] = {}
    for index, root in enumerate(ordered):
        age = now - root.otime
        if index < policy.keep_min:
            verdict[root.name] = (True, f"among the {policy.keep_min} newest (keep_min)")
        elif root.pinned:
            verdict[root.name] = (True, "pinned")
        elif policy.max_age_days is not None and not problem and age > policy.max_age_days * DAY:
            reason = f"older than {policy.max_age_days} days ({_age_days(age)})"
            verdict[root.name] = (False, reason)
        elif policy.max_count is not None and index >= policy.max_count:
            verdict[root.name] = (False, f"beyond the {policy.max_count} newest (max_count)")
        else:
            verdict[root.name] = (True, "within the retention policy")

    if (
        policy.min_free_percent is not None
        and free_percent is not None
        and free_percent < policy.min_free_percent
    ):
        _free_space(ordered, policy, verdict, free_percent, total_bytes, notes)

    return Plan([Decision(r, *verdict[r.name]) for r in ordered], notes)


def _free_space(
    ordered: Sequence[Candidate],
    policy: Retention,
    verdict: dict[str, tuple[bool, str]],
    free_percent: float,
    total_bytes: int | None,
    notes: list[str],
) -> None:
    """Delete the oldest deletable roots until the free-space floor would be met."""
    assert policy.min_free_percent is not None
    free = free_percent
    for index in range(len(ordered) - 1, -1, -1):
        root = ordered[index]
        keep, _ = verdict[root.name]
        if not keep:
            free += _percent(root.exclusive_bytes, total_bytes)
            continue
        if index < policy.keep_min or root.pinned:
            continue
        if free >= policy.min_free_percent:
            break
        verdict[root.name] = (False, f"free space {free_percent:.0f}% < {policy.min_free_percent}%")
        gained = _percent(root.exclusive_bytes, total_bytes)
        if gained == 0.0:
            notes.append("root sizes unknown (quotas off): one root freed for space; run gc again")
            break
        free += gained


def _percent(size: int | None, total: int | None) -> float:
    if not size or not total:
        return 0.0
    return 100.0 * size / total
