"""Retention as a pure function: every rule, the clock guards, and random policies."""

from __future__ import annotations

import random
from collections.abc import Collection

import pytest

from pantheros.impermanence.retention import DAY, Candidate, Plan, plan
from pantheros.manifest.models import Retention

NOW = 2_000_000_000.0


def roots(ages_days: list[float], pinned: Collection[int] = frozenset()) -> list[Candidate]:
    """Roots created ages_days ago, oldest first, with increasing otransid."""
    ordered = sorted(ages_days, reverse=True)
    return [
        Candidate(name=f"r{i}", otransid=100 + i, otime=NOW - age * DAY, pinned=i in pinned)
        for i, age in enumerate(ordered)
    ]


def deleted(result: Plan) -> list[str]:
    return [c.name for c in result.deletions]


def test_keep_min_newest_are_kept_whatever_their_age() -> None:
    result = plan(roots([400, 300, 200, 100]), Retention(keep_min=3, max_age_days=30), NOW)
    assert deleted(result) == ["r0"]
    reasons = {d.root.name: d.reason for d in result.decisions}
    assert reasons["r1"] == "among the 3 newest (keep_min)"
    assert reasons["r0"].startswith("older than 30 days (400.0 days)")


def test_age_comes_from_otime_and_order_from_otransid() -> None:
    # The newest by otransid has a wildly old otime (a root created with a wrong clock).
    shuffled = [
        Candidate("a", otransid=1, otime=NOW - 1 * DAY),
        Candidate("b", otransid=2, otime=NOW - 2 * DAY),
        Candidate("c", otransid=3, otime=NOW - 90 * DAY),
    ]
    result = plan(shuffled, Retention(keep_min=1, max_age_days=30), NOW)
    assert [d.root.name for d in result.decisions] == ["c", "b", "a"]
    assert deleted(result) == []  # c is the newest: kept by keep_min despite its otime


def test_pinned_roots_are_never_pruned() -> None:
    result = plan(
        roots([500, 400, 10, 5], pinned={0}),
        Retention(keep_min=1, max_age_days=30, max_count=1),
        NOW,
    )
    decisions = {d.root.name: d for d in result.decisions}
    assert decisions["r0"].keep
    assert decisions["r0"].reason == "pinned"
    assert sorted(deleted(result)) == ["r1", "r2"]


def test_max_count() -> None:
    result = plan(roots([5, 4, 3, 2, 1]), Retention(keep_min=2, max_count=3), NOW)
    assert deleted(result) == ["r1", "r0"]
    assert all("max_count" in d.reason for d in result.decisions if not d.keep)


@pytest.mark.parametrize("skew_years", [10, -10])
def test_a_clock_far_off_skips_age_pruning(skew_years: int) -> None:
    now = NOW + skew_years * 365 * DAY
    candidates = roots([100, 90, 80, 70])
    result = plan(candidates, Retention(keep_min=1, max_age_days=30), now)
    assert deleted(result) == []
    assert len(result.notes) == 1
    assert result.notes[0].startswith("age-based pruning skipped")


def test_a_wrong_clock_still_applies_count_limits() -> None:
    result = plan(
        roots([5, 4, 3, 2]), Retention(keep_min=1, max_age_days=1, max_count=2), NOW - 3650 * DAY
    )
    assert deleted(result) == ["r1", "r0"]


def test_free_space_with_known_sizes_deletes_oldest_until_enough() -> None:
    candidates = [
        Candidate(f"r{i}", otransid=i, otime=NOW - (10 - i) * DAY, exclusive_bytes=10 * 2**30)
        for i in range(5)
    ]
    result = plan(
        candidates,
        Retention(keep_min=2, min_free_percent=20),
        NOW,
        free_percent=5.0,
        total_bytes=100 * 2**30,
    )
    # each root frees 10%: two oldest are enough to reach 20% from 5%
    assert deleted(result) == ["r1", "r0"]


def test_free_space_with_unknown_sizes_deletes_one_and_says_so() -> None:
    result = plan(
        roots([9, 8, 7, 6]),
        Retention(keep_min=1, min_free_percent=20),
        NOW,
        free_percent=3.0,
        total_bytes=2**40,
    )
    assert deleted(result) == ["r0"]
    assert any("sizes unknown" in note for note in result.notes)


def test_random_policies_never_break_the_floor_or_pins() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        count = rng.randint(0, 30)
        pinned = {i for i in range(count) if rng.random() < 0.1}
        candidates = roots([rng.uniform(0, 400) for _ in range(count)], pinned)
        policy = Retention(
            keep_min=rng.randint(1, 6),
            max_age_days=rng.choice([None, 1, 7, 30, 365]),
            max_count=rng.choice([None, 1, 5, 20]),
            min_free_percent=rng.choice([None, 10, 50]),
        )
        now = NOW + rng.choice([0, 0, 0, 20 * 365 * DAY, -20 * 365 * DAY])
        result = plan(candidates, policy, now, free_percent=rng.uniform(0, 100), total_bytes=2**40)
        newest_first = sorted(candidates, key=lambda c: c.otransid, reverse=True)
        floor = {c.name for c in newest_first[: policy.keep_min]}
        gone = set(deleted(result))
        assert not gone & floor
        assert not gone & {c.name for c in candidates if c.pinned}
        assert len(result.decisions) == count
        if (
            now != NOW
            and candidates
            and policy.max_count is None
            and policy.min_free_percent is None
        ):
            assert not gone  # only age could delete, and the clock is not trusted
