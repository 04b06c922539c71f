"""`panther fleet status`: per host, what an impermanent machine's owner checks before a deploy
or a reboot. Read from the host's own `panther status`, `diff` and `audit` `--json` outputs (their
documented keys only) and from /run/booted-system and /run/current-system."""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode
from pantheros.fleet import ask, fanout
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import SYSTEM_STEPS, Answer, Failure, Step

STEPS = (
    *SYSTEM_STEPS,
    Step("status", ("status", "--json")),
    Step("diff", ("diff", "--json")),
    Step("audit", ("audit", "--json")),
)
# Which host is worst: one that could not be checked, then one that failed a check.
RANK = {ExitCode.OK: 0, ExitCode.FAILURE: 1, ExitCode.TOOL: 2}


@dataclass(frozen=True)
class System:
    booted: str | None  # /run/booted-system
    current: str | None  # /run/current-system: what was activated last
    profile: str | None  # /nix/var/nix/profiles/system: what the next boot starts
    generation: int | None  # of that profile
    reboot_pending: bool | None  # booted and current differ: a deploy waits for a reboot


@dataclass(frozen=True)
class Rollback:
    result: str | None
    time: float | None


@dataclass(frozen=True)
class NextBoot:
    """What the next boot would erase (`panther diff`)."""

    trusted: bool
    changes: int
    bytes: int
    summary: dict[str, int]
    hidden: int


@dataclass(frozen=True)
class Audit:
    level: str | None
    score: int | None
    coverage: dict[str, Any] | None
    failed: dict[str, int]  # failing checks by severity


@dataclass
class HostStatus:
    host: Host
    reachable: bool
    error: str | None  # why the host could not be asked
    error_kind: str | None
    exit_code: int
    elapsed: float
    hostname: str | None = None
    panther: str | None = None
    system: System | None = None
    root: dict[str, Any] | None = None  # `state` and `why`, from panther status
    last_rollback: Rollback | None = None
    blank: dict[str, Any] | None = None  # panther status's `blank`, as it says it
    next_boot: NextBoot | None = None
    audit: Audit | None = None
    problems: list[str] = field(default_factory=list)  # steps that ran and failed

    def as_json(self) -> dict[str, Any]:
        """In the order of the dataclass: the host, whether it answered, then what it said."""
        out: dict[str, Any] = self.host.as_json()
        for item in fields(self)[1:]:
            value = getattr(self, item.name)
            if is_dataclass(value) and not isinstance(value, type):
                value = asdict(value)
            out[item.name] = round(value, 3) if item.name == "elapsed" else value
        return out


def failed(host: Host, failure: Failure, elapsed: float = 0.0) -> HostStatus:
    return HostStatus(host, False, failure.reason, failure.kind, ExitCode.TOOL, elapsed)


def outcome(row: HostStatus) -> tuple[str, str]:
    if row.error_kind in (ask.INTERRUPTED.kind, ask.NOT_STARTED.kind):
        return fanout.INTERRUPTED, row.error or ""
    if row.error is not None:
        return fanout.FAILED, row.error
    if row.problems:
        return fanout.FAILED, row.problems[0]
    return fanout.DONE, _summary(row)


def _summary(row: HostStatus) -> str:
    parts = []
    if row.root:
        parts.append(f"root {row.root.get('state')}")
    if row.next_boot:
        parts.append(f"{row.next_boot.changes} to erase")
    if row.blank and row.blank.get("trusted") is False:
        parts.append("BLANK NOT TRUSTED")
    return ", ".join(parts)


def collect(reply: ask.Reply) -> HostStatus:
    host = reply.host
    frames = reply.frames
    row = HostStatus(
        host,
        reachable=frames.started,
        error=reply.failure.reason if reply.failure else None,
        error_kind=reply.failure.kind if reply.failure else None,
        exit_code=ExitCode.OK,
        elapsed=reply.elapsed,
        panther=frames.panther,
    )
    row.hostname = _text(reply.answer("hostname"))
    booted, current = _text(reply.answer("booted")), _text(reply.answer("current"))
    profile = _text(reply.answer("profile"))
    generation = re.fullmatch(r"system-(\d+)-link", profile or "")
    if frames.started:
        row.system = System(
            booted=booted,
            current=current,
            profile=profile,
            generation=int(generation.group(1)) if generation else None,
            reboot_pending=booted != current if booted and current else None,
        )
    answer = reply.answer("status")
    doc = _document(answer, (0, 1), "status", host, row.problems)
    if doc is not None:
        root = _dict(doc.get("root"))
        row.root = {"state": root.get("state"), "why": root.get("why")}
        row.blank = doc["blank"] if isinstance(doc.get("blank"), dict) else None
        last = doc.get("last_rollback")
        if isinstance(last, dict):
            when = last.get("time")
            row.last_rollback = Rollback(
                result=_str(last.get("result")),
                time=float(when) if isinstance(when, int | float) else None,
            )
    doc = _document(reply.answer("diff"), (0, 1), "diff", host, row.problems)
    if doc is not None:
        row.next_boot = _next_boot(doc)
    doc = _document(reply.answer("audit"), (0, 1, 7), "audit", host, row.problems)
    if doc is not None:
        row.audit = _audit(doc)
    if row.error is not None or row.problems:
        row.exit_code = ExitCode.TOOL
    elif (row.blank and row.blank.get("trusted") is False) or (
        row.next_boot and not row.next_boot.trusted
    ):
        row.exit_code = ExitCode.FAILURE
    return row


def _text(answer: Answer | None) -> str | None:
    if answer is None or answer.returncode != 0:
        return None
    text = answer.stdout.decode("utf-8", "replace").strip()
    return text or None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _document(
    answer: Answer | None, codes: tuple[int, ...], step: str, host: Host, problems: list[str]
) -> dict[str, Any] | None:
    """The JSON document a step printed, when it ran and exited as that command does."""
    if answer is None:
        return None
    if answer.returncode not in codes:
        problems.append(ask.problem(step, answer, host))
        return None
    try:
        doc = json.loads(answer.stdout)
    except (json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"panther {step}: its --json output is not JSON")
        return None
    if not isinstance(doc, dict):
        problems.append(f"panther {step}: its --json output is not a JSON object")
        return None
    return doc


def _next_boot(doc: dict[str, Any]) -> NextBoot:
    counts = {str(k): v for k, v in _dict(doc.get("summary")).items() if isinstance(v, int)}
    changes = doc["changes"] if isinstance(doc.get("changes"), list) else []
    size = sum(
        c["size"]
        for c in changes
        if isinstance(c, dict) and isinstance(c.get("size"), int) and c.get("kind") != "deleted"
    )
    hidden = doc.get("hidden")
    return NextBoot(
        trusted=doc.get("trusted") is True,
        changes=sum(counts.values()),
        bytes=size,
        summary=counts,
        hidden=hidden if isinstance(hidden, int) else 0,
    )


def _audit(doc: dict[str, Any]) -> Audit:
    failed: dict[str, int] = {"high": 0, "medium": 0, "low": 0}
    for finding in doc.get("findings") or []:
        if isinstance(finding, dict) and finding.get("status") == "fail":
            severity = str(finding.get("severity"))
            failed[severity] = failed.get(severity, 0) + 1
    score = doc.get("score")
    coverage = doc.get("coverage")
    return Audit(
        level=_str(doc.get("level")),
        score=score if isinstance(score, int) else None,
        coverage=coverage if isinstance(coverage, dict) else None,
        failed=failed,
    )


def exit_code(rows: list[HostStatus]) -> int:
    codes = [ExitCode(row.exit_code) for row in rows]
    return int(max(codes, key=lambda c: RANK[c], default=ExitCode.OK))


# The table


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _ago(when: float | None, now: float) -> str:
    if when is None:
        return ""
    seconds = max(0, int(now - when))
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds // length}{unit} ago"
    return f"{seconds}s ago"


HEADER = ("HOST", "BOOTED", "GEN", "ROOT", "LAST ROLLBACK", "BLANK", "NEXT BOOT ERASES", "AUDIT")


def _cells(row: HostStatus, now: float) -> tuple[list[str], str]:
    """The row's cells, and its colour."""
    system = row.system
    booted = "-"
    if system and system.reboot_pending is not None:
        booted = "older" if system.reboot_pending else "current"
    gen = str(system.generation) if system and system.generation is not None else "-"
    root = str((row.root or {}).get("state") or "-")
    last = "-"
    if row.last_rollback:
        last = f"{row.last_rollback.result or '?'} {_ago(row.last_rollback.time, now)}".strip()
    blank = "-"
    if row.blank is not None:
        blank = "ok" if row.blank.get("trusted") is True else "NOT TRUSTED"
    erases = "-"
    if row.next_boot:
        nb = row.next_boot
        count = f"{nb.changes} change{'' if nb.changes == 1 else 's'}"
        erases = "nothing" if nb.changes == 0 else f"{count}, {human(nb.bytes)}"
        if not nb.trusted:
            erases += " (untrusted)"
    audit = "-"
    if row.audit and row.audit.score is not None:
        cov = row.audit.coverage or {}
        audit = f"{row.audit.score} ({cov.get('evaluated', '?')}/{cov.get('applicable', '?')})"
    color = {ExitCode.OK: "green", ExitCode.FAILURE: "red"}.get(ExitCode(row.exit_code), "yellow")
    return [row.host.name, booted, gen, root, last, blank, erases, audit], color


def table(rows: list[HostStatus], stream: Any) -> list[str]:
    now = time.time()
    cells = []
    for row in rows:
        if row.error is not None:
            cells.append(([row.host.name, f"error: {row.error}"], "red"))
        else:
            cells.append(_cells(row, now))
    widths = [
        max([len(HEADER[i])] + [len(c[i]) for c, _ in cells if len(c) > 2])
        for i in range(len(HEADER))
    ]
    widths[0] = max([widths[0]] + [len(c[0]) for c, _ in cells])

    def line(values: list[str]) -> str:
        padded = [v.ljust(widths[i]) for i, v in enumerate(values[:-1])]
        return "  ".join([*padded, values[-1]]).rstrip()

    lines = [ui.paint(line(list(HEADER)), "bold", stream)]
    for values, color in cells:
        text = ui.printable(line(values))
        if len(values) == 2:  # an error row: the reason spans the rest
            text = ui.printable(f"{values[0].ljust(widths[0])}  {values[1]}")
        lines.append(ui.paint(text, color, stream) if color != "green" else text)
    notes = [(row.host.name, p) for row in rows for p in row.problems]
    if notes:
        lines.append("")
        lines += [ui.printable(f"{name}: {p}") for name, p in notes]
    return lines
