"""`panther blank bless`: show how the blank differs from its record, and record it on --yes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, Refused, UsageError
from pantheros.impermanence import blank
from pantheros.impermanence.blank import Examination
from pantheros.machine import Machine
from pantheros.storage.blankrecord import BlankIdentity

SHOWN = 50  # content lines in text; --json has them all
WHY = "blessed by panther blank bless"


def _identity(found: BlankIdentity | None) -> dict[str, Any] | None:
    if found is None:
        return None
    return {
        "name": found.name,
        "uuid": found.uuid,
        "otransid": found.otransid,
        "id": found.id,
        "recorded": found.recorded,
        "why": found.why,
    }


def _as_json(seen: Examination, recorded: bool) -> dict[str, Any]:
    return {
        "name": seen.name,
        "current": _identity(seen.current),
        "record": _identity(seen.recorded),
        "record_problem": seen.record_problem,
        "refusal": seen.refusal,
        "differences": seen.differences,
        "recorded_now_at": seen.recorded_now_at,
        "content_against": seen.content_against,
        "content": [
            {"change": mark, "path": os.fsdecode(path), "detail": detail}
            for mark, path, detail in seen.content
        ],
        "recorded": recorded,
    }


def _show(seen: Examination) -> None:
    current, recorded = seen.current, seen.recorded
    if recorded is not None:
        ui.result(
            f"recorded  {ui.printable(recorded.name)}: uuid {recorded.uuid}, id {recorded.id}, "
            f"made at transid {recorded.otransid} ({ui.printable(recorded.why)})"
        )
    else:
        ui.result(f"recorded  {ui.printable(seen.record_problem or 'nothing yet')}")
    if current is not None:
        ui.result(
            f"blank     {ui.printable(current.name)}: uuid {current.uuid}, id {current.id}, "
            f"made at transid {current.otransid}"
        )
    for difference in seen.differences:
        ui.result(f"  differs: {difference}")
    if seen.matches:
        return
    if current is not None:
        ui.result(f"content compared with {ui.printable(seen.content_against)}:")
        for mark, path, detail in seen.content[:SHOWN]:
            shown = ui.printable(os.fsdecode(path))
            ui.result(f"  {mark} {shown}" + (f"  ({detail})" if detail else ""))
        if not seen.content:
            ui.result("  no difference")
        elif len(seen.content) > SHOWN:
            ui.result(f"  ... and {len(seen.content) - SHOWN} more (--json lists them all)")


@dataclass(frozen=True)
class Bless:
    yes: bool
    json: bool
    no_wait: bool


def cmd_blank_bless(machine: Machine, args: Bless) -> int:
    recorded = False
    with machine.lock(wait=not args.no_wait), machine.top_level() as top:
        seen = blank.examine(top, machine.manifest, WHY)
        if not args.json:
            _show(seen)
        if seen.refusal is None and not seen.matches and args.yes:
            blank.bless(top, seen)
            recorded = True
    if args.json:
        ui.emit_json(_as_json(seen, recorded))
    if seen.refusal is not None:
        raise Refused(f"this blank cannot be recorded: {seen.refusal}")
    if seen.matches:
        ui.info("the blank is the one recorded: nothing to do")
        return ExitCode.OK
    if not recorded:
        # A confirmation missing is bad input, as for `spec archive` (docs/cli.md).
        raise UsageError(
            "nothing recorded: give --yes to make this the blank every boot starts from"
        )
    ui.info(f"recorded {ui.printable(seen.name)} as the blank every boot starts from")
    return ExitCode.OK
