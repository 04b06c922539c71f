"""Which old root `restore --from` means: latest, previous, an age, a name (pure, no root)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from pantheros import btrfs
from pantheros.errors import UsageError
from pantheros.impermanence.oldroots import OldRoot, age_text, parse_age, pick

NOW = 1_800_000_000.0


def root(name: str, otransid: int, age: float) -> OldRoot:
    info = btrfs.SubvolumeInfo(
        id=256 + otransid,
        name=name,
        parent_id=5,
        dirid=256,
        generation=otransid + 2,
        flags=btrfs.ROOT_SUBVOL_RDONLY,
        uuid=uuid.uuid4(),
        parent_uuid=None,
        received_uuid=None,
        ctransid=otransid,
        otransid=otransid,
        ctime=NOW - age,
        otime=NOW - age,
    )
    return OldRoot(name=name, path=Path("/old_roots") / name, info=info, pinned=False)


# Oldest first, as OldRoots.scan returns them: 3 days, 5 hours and 10 minutes old.
ROOTS = [root("r-3d", 10, 3 * 86400), root("r-5h", 20, 5 * 3600), root("r-10m", 30, 600)]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("latest", "r-10m"),
        ("previous", "r-5h"),
        ("r-3d", "r-3d"),  # a full name
        ("10m", "r-10m"),  # exactly that old counts
        ("11m", "r-5h"),  # the newest root at least that old
        ("5h", "r-5h"),
        ("1d", "r-3d"),
        ("3d", "r-3d"),
        ("0s", "r-10m"),
    ],
)
def test_words_pick_the_root_they_name(word: str, expected: str) -> None:
    assert pick(ROOTS, word, NOW).name == expected


def test_a_name_wins_over_a_word() -> None:
    named = [*ROOTS[:2], root("latest", 5, 4 * 86400)]  # the oldest root happens to be "latest"
    assert pick(sorted(named, key=lambda r: r.info.otransid), "latest", NOW).name == "latest"


@pytest.mark.parametrize(
    ("roots", "word", "says"),
    [
        (ROOTS, "4d", "no old root is 4d old or older: old roots, newest first: r-10m (10m old)"),
        (ROOTS, "bogus", "give latest, previous, an age (30m, 2h, 3d) or a name"),
        (ROOTS, "2x", "no old root '2x'"),
        (ROOTS[:1], "previous", "there is no previous old root: old roots, newest first: r-3d"),
        ([], "latest", "there is no latest old root: there are no old roots yet"),
    ],
)
def test_what_matches_nothing_lists_what_exists(roots: list[OldRoot], word: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        pick(roots, word, NOW)
    message = str(caught.value)
    assert says in message
    assert "\n" not in message
    for existing in roots:
        assert existing.name in message


def test_a_long_history_is_cut_short() -> None:
    many = [root(f"r{n:02}", n, (40 - n) * 3600) for n in range(1, 40)]
    with pytest.raises(UsageError, match=r"r39 .*r35 \(5h old\) and 34 older \(panther roots"):
        pick(many, "bogus", NOW)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("2h", 7200), ("3d", 259200), ("1w", 604800)],
)
def test_ages_read_back_what_roots_list_prints(text: str, seconds: int) -> None:
    assert parse_age(text) == seconds
    # roots list shows the largest whole unit: reading it back is never more than the age.
    shown = parse_age(age_text(seconds + 59))
    assert shown is not None
    assert shown <= seconds + 59


# Digits of other scripts (fullwidth, Arabic-Indic) are not what `roots list` prints.
@pytest.mark.parametrize(
    "word", ["2", "h", "-2h", "2.5h", "2H", "2 h", "2hours", "latest", "\uff12h", "\u0662h", "2h\n"]
)
def test_not_ages(word: str) -> None:
    assert parse_age(word) is None
