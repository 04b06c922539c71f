"""`panther fleet audit`: each host's own `panther audit`, one row per host, and one SARIF log
with a run per host, each under its own category (`automationDetails.id` =
`pantheros-audit/<host>/`) so that code-scanning services keep the hosts apart. A host that could
not be audited is a run too: no results, and an invocation that failed with the reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pantheros import __version__, ui
from pantheros.errors import ExitCode
from pantheros.fleet import ask, fanout
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import SYSTEM_STEPS, Failure, Step

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://github.com/pantheros/pantheros#prove-the-hardening-panther-audit"
# The worst host decides the exit code: could not be audited, then failed, then too little
# evidence (ExitCode.INCONCLUSIVE), then passed.
RANK = {ExitCode.OK: 0, ExitCode.INCONCLUSIVE: 1, ExitCode.FAILURE: 2, ExitCode.TOOL: 3}
RESULT = {ExitCode.OK: "pass", ExitCode.FAILURE: "fail", ExitCode.INCONCLUSIVE: "inconclusive"}
SEVERITY = {"error": "high", "warning": "medium", "note": "low"}


def steps(sarif: bool, fail_on: str, level: str | None) -> tuple[Step, ...]:
    argv = ["audit", "--sarif" if sarif else "--json", "--fail-on", fail_on]
    if level is not None:
        argv += ["--level", level]
    return (SYSTEM_STEPS[0], Step("audit", tuple(argv)))


def category(name: str) -> str:
    return f"pantheros-audit/{name}/"


@dataclass
class HostAudit:
    host: Host
    reachable: bool
    error: str | None
    error_kind: str | None
    exit_code: int
    elapsed: float
    result: str  # pass, fail, inconclusive, error
    hostname: str | None = None
    level: str | None = None
    score: int | None = None
    coverage: dict[str, Any] | None = None
    failed: dict[str, int] | None = None  # failing checks by severity
    report: dict[str, Any] | None = None  # the host's `panther audit --json`, or its SARIF run

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.host.name,
            **self.host.as_json(),
            "reachable": self.reachable,
            "error": self.error,
            "error_kind": self.error_kind,
            "exit_code": self.exit_code,
            "elapsed": round(self.elapsed, 3),
            "result": self.result,
            "hostname": self.hostname,
            "level": self.level,
            "score": self.score,
            "coverage": self.coverage,
            "failed": self.failed,
            "report": self.report,
        }


def failed(
    host: Host, failure: Failure, elapsed: float = 0.0, reachable: bool = False
) -> HostAudit:
    return HostAudit(
        host, reachable, failure.reason, failure.kind, ExitCode.TOOL, elapsed, result="error"
    )


def outcome(row: HostAudit) -> tuple[str, str]:
    if row.error_kind in (ask.INTERRUPTED.kind, ask.NOT_STARTED.kind):
        return fanout.INTERRUPTED, row.error or ""
    if row.error is not None:
        return fanout.FAILED, row.error
    return fanout.DONE, f"{row.result}, score {row.score}"


def collect(reply: ask.Reply, sarif: bool) -> HostAudit:
    host = reply.host
    if reply.failure is not None:
        return failed(host, reply.failure, reply.elapsed, reply.frames.started)
    answer = reply.answer("audit")
    hostname = reply.answer("hostname")
    if answer is None:
        return failed(host, Failure("output", "panther audit gave no answer"), reply.elapsed, True)
    if answer.returncode not in RESULT:
        failure = Failure("panther", ask.problem("audit", answer, host))
        return failed(host, failure, reply.elapsed, True)
    try:
        doc = json.loads(answer.stdout)
        summary, report, counts = _sarif(doc) if sarif else _json(doc)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        form = "SARIF" if sarif else "JSON"
        reason = f"panther audit: its {form} is not what it documents ({exc})"
        return failed(host, Failure("output", reason), reply.elapsed, True)
    code = ExitCode(answer.returncode)
    score = summary.get("score")
    coverage = summary.get("coverage")
    level = summary.get("level")
    return HostAudit(
        host,
        True,
        None,
        None,
        int(code),
        reply.elapsed,
        RESULT[code],
        hostname=hostname.stdout.decode("utf-8", "replace").strip()
        if hostname and hostname.returncode == 0
        else None,
        level=level if isinstance(level, str) else None,
        score=score if isinstance(score, int) else None,
        coverage=coverage if isinstance(coverage, dict) else None,
        failed=counts,
        report=report,
    )


def _json(doc: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ValueError("no findings")
    counts = {"high": 0, "medium": 0, "low": 0}
    for finding in doc["findings"]:
        if finding.get("status") == "fail":
            counts[str(finding["severity"])] = counts.get(str(finding["severity"]), 0) + 1
    return doc, doc, counts


def _sarif(doc: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, int]]:
    runs = doc.get("runs") if isinstance(doc, dict) else None
    if not isinstance(runs, list) or len(runs) != 1 or not isinstance(runs[0], dict):
        raise ValueError("not one SARIF run")
    run = runs[0]
    # It goes into the merged log as it is: what the schema needs of a run must be there.
    driver = run.get("tool", {}).get("driver", {}) if isinstance(run.get("tool"), dict) else {}
    if not isinstance(driver.get("name"), str) or not isinstance(run.get("results", []), list):
        raise ValueError("a run without tool.driver.name or results")
    counts = {"high": 0, "medium": 0, "low": 0}
    for result in run.get("results") or []:
        if result.get("kind") == "fail" and not result.get("suppressions"):
            severity = SEVERITY.get(str(result.get("level")), "low")
            counts[severity] += 1
    properties = run.get("properties")
    return properties if isinstance(properties, dict) else {}, run, counts


def exit_code(rows: list[HostAudit]) -> int:
    codes = [ExitCode(row.exit_code) for row in rows]
    return int(max(codes, key=lambda c: RANK[c], default=ExitCode.OK))


def merged_sarif(rows: list[HostAudit]) -> dict[str, Any]:
    """One SARIF log, one run per host, in the inventory's order."""
    runs = []
    for row in rows:
        details = {
            "id": category(row.host.name),
            "description": {"text": f"panther audit of {row.host.name} ({row.host.address})"},
        }
        host = {"name": row.host.name, **row.host.as_json(), "hostname": row.hostname}
        if row.report is not None:
            run = dict(row.report)
            run["automationDetails"] = details
            run["properties"] = {**(run.get("properties") or {}), "host": host}
        else:
            run = {
                "tool": {
                    "driver": {
                        "name": "panther-audit",
                        "version": __version__,
                        "informationUri": INFORMATION_URI,
                    }
                },
                "automationDetails": details,
                "invocations": [
                    {
                        "executionSuccessful": False,
                        "toolExecutionNotifications": [
                            {
                                "level": "error",
                                "message": {"text": row.error or "not audited"},
                                "descriptor": {"id": row.error_kind or "error"},
                            }
                        ],
                    }
                ],
                "results": [],
                "properties": {"host": host, "error": row.error, "error_kind": row.error_kind},
            }
        runs.append(run)
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": runs}


HEADER = ("HOST", "RESULT", "SCORE", "COVERAGE", "FAILED (high/medium/low)")


def table(rows: list[HostAudit], stream: Any) -> list[str]:
    cells: list[tuple[list[str], str]] = []
    for row in rows:
        if row.error is not None:
            cells.append(([row.host.name, f"error: {row.error}"], "red"))
            continue
        cov = row.coverage or {}
        counts = row.failed or {}
        color = {"pass": "green", "fail": "red"}.get(row.result, "yellow")
        cells.append(
            (
                [
                    row.host.name,
                    row.result,
                    "-" if row.score is None else str(row.score),
                    f"{cov.get('evaluated', '?')}/{cov.get('applicable', '?')}",
                    "/".join(str(counts.get(s, 0)) for s in ("high", "medium", "low")),
                ],
                color,
            )
        )
    widths = [
        max([len(HEADER[i])] + [len(c[i]) for c, _ in cells if len(c) > 2])
        for i in range(len(HEADER))
    ]
    widths[0] = max([widths[0]] + [len(c[0]) for c, _ in cells])
    header = "  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)).rstrip()
    lines = [ui.paint(header, "bold", stream)]
    for values, color in cells:
        if len(values) == 2:
            text = f"{values[0].ljust(widths[0])}  {values[1]}"
        else:
            text = "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()
        text = ui.printable(text)
        lines.append(text if color == "green" else ui.paint(text, color, stream))
    return lines
