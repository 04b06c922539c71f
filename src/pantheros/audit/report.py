"""Audit outputs: a readable report with a score, JSON, and SARIF 2.1.0."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pantheros import __version__, ui
from pantheros.audit.checks import SEVERITIES, Finding, Status

WEIGHT = {"low": 1, "medium": 2, "high": 3}
SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error"}


def score(findings: list[Finding]) -> int:
    """Passed (and waived) weight over all decided weight, 0-100."""
    decided = [f for f in findings if f.status is not Status.SKIPPED]
    total = sum(WEIGHT[f.severity] for f in decided)
    good = sum(WEIGHT[f.severity] for f in decided if f.status is not Status.FAIL)
    return round(100 * good / total) if total else 100


def failing(findings: list[Finding], fail_on: str) -> list[Finding]:
    floor = SEVERITIES.index(fail_on)
    return [
        f for f in findings if f.status is Status.FAIL and SEVERITIES.index(f.severity) >= floor
    ]


def as_dict(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id,
        "area": f.area,
        "title": f.title,
        "severity": f.severity,
        "status": f.status.value,
        "expected": f.expected,
        "actual": f.actual,
        "reason": f.reason,
        "drift": f.drift,
        "fix": {"nixos": f.nixos_fix, "other": f.plain_fix},
        "anchors": f.anchors,
    }


def as_json(findings: list[Finding], context: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.status.value] += 1
    return {
        **context,
        "score": score(findings),
        "summary": dict(counts),
        "findings": [as_dict(f) for f in findings],
    }


def as_sarif(findings: list[Finding], context: dict[str, Any]) -> dict[str, Any]:
    rules = []
    results = []
    for index, f in enumerate(findings):
        rules.append(
            {
                "id": f.id,
                "name": f.id.replace(".", "_"),
                "shortDescription": {"text": f.title},
                "help": {"text": f"NixOS: {f.nixos_fix}\nOther systems: {f.plain_fix}"},
                "defaultConfiguration": {"level": SARIF_LEVEL[f.severity]},
                "properties": {"area": f.area, "anchors": f.anchors, "tags": [f.area, "security"]},
            }
        )
        kind = {
            Status.PASS: "pass",
            Status.FAIL: "fail",
            Status.WAIVED: "fail",
            Status.SKIPPED: "notApplicable",
        }[f.status]
        result: dict[str, Any] = {
            "ruleId": f.id,
            "ruleIndex": index,
            "kind": kind,
            "level": SARIF_LEVEL[f.severity] if kind == "fail" else "none",
            "message": {"text": _message(f)},
            "properties": {"expected": f.expected, "actual": f.actual, "drift": f.drift},
        }
        if f.location:
            result["locations"] = [
                {"physicalLocation": {"artifactLocation": {"uri": "file://" + f.location}}}
            ]
        if f.status is Status.WAIVED:
            result["suppressions"] = [{"kind": "external", "justification": f.reason}]
        results.append(result)
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "panther-audit",
                        "version": __version__,
                        "informationUri": "https://github.com/pantheros/pantheros",
                        "rules": rules,
                    }
                },
                "results": results,
                "properties": {**context, "score": score(findings)},
            }
        ],
    }


def _message(f: Finding) -> str:
    text = f"{f.title}: {f.status.value}"
    if f.expected:
        text += f" (expected {f.expected}, found {f.actual or 'nothing'})"
    if f.reason:
        text += f"; {f.reason}"
    if f.drift:
        text += f"; drift: {f.drift}"
    return text


MARK = {
    Status.PASS: ("ok  ", "green"),
    Status.FAIL: ("FAIL", "red"),
    Status.WAIVED: ("waiv", "yellow"),
    Status.SKIPPED: ("skip", "dim"),
}


def text(findings: list[Finding], context: dict[str, Any], verbose: bool) -> list[str]:
    lines = [f"panther audit: {context['target']} at level {context['level']}"]
    areas: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        areas[f.area].append(f)
    for area, members in areas.items():
        passed = sum(1 for f in members if f.status is Status.PASS)
        lines.append(ui.paint(f"\n{area} ({passed}/{len(members)} pass)", "bold"))
        for f in members:
            if f.status is Status.PASS and not verbose:
                continue
            mark, colour = MARK[f.status]
            detail = (
                f"expected {f.expected}, found {f.actual or 'nothing'}" if f.expected else f.actual
            )
            line = f"  {ui.paint(mark, colour)} {f.id}: {f.title}"
            if f.status is not Status.PASS:
                line += f" [{f.severity}]"
            lines.append(line)
            if f.status is Status.FAIL:
                lines.append(f"       {detail}" + (f"; {f.reason}" if f.reason else ""))
                if f.drift:
                    lines.append(f"       drift: {f.drift}")
                lines.append(f"       fix (NixOS): {f.nixos_fix}")
                lines.append(f"       fix (other): {f.plain_fix}")
            elif f.reason:
                lines.append(f"       {f.reason}")
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    lines.append(
        f"\nscore {score(findings)}/100: {counts[Status.PASS]} pass, {counts[Status.FAIL]} fail, "
        f"{counts[Status.WAIVED]} waived, {counts[Status.SKIPPED]} skipped"
    )
    return lines
