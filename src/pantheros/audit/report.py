"""Audit outputs: a readable report with a score and its coverage, JSON, SARIF 2.1.0, and the
NixOS snippet of every fix.

The score counts only checks that were evaluated; coverage says how many of the checks that
apply here that is. When fewer than half could be evaluated the audit has too little evidence to
judge, says so, and exits with its own code (ExitCode.INCONCLUSIVE) unless something failed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pantheros import __version__, ui
from pantheros.audit import fixes
from pantheros.audit.checks import SEVERITIES, Finding, Status

WEIGHT = {"low": 1, "medium": 2, "high": 3}
SARIF_LEVEL = {"low": "note", "medium": "warning", "high": "error"}
README = "https://github.com/pantheros/pantheros#prove-the-hardening-panther-audit"
ANCHOR_URLS = {
    "lynis": "https://cisofy.com/lynis/controls/{}/",
    "kspp": "https://kspp.github.io/Recommended_Settings",
    "khc": "https://github.com/a13xp0p0v/kernel-hardening-checker",
    "stig": "https://public.cyber.mil/stigs/",
    "cis": "https://www.cisecurity.org/benchmark/distribution_independent_linux",
    "pantheros": README,
}
ANCHOR_NAMES = {
    "kspp": "KSPP",
    "khc": "kernel-hardening-checker",
    "lynis": "Lynis",
    "stig": "STIG",
    "cis": "CIS",
    "pantheros": "PantherOS",
}


def score(findings: list[Finding]) -> int:
    """Passed (and waived) weight over all evaluated weight, 0-100."""
    decided = [f for f in findings if f.evaluated]
    total = sum(WEIGHT[f.severity] for f in decided)
    good = sum(WEIGHT[f.severity] for f in decided if f.status is not Status.FAIL)
    return round(100 * good / total) if total else 0


@dataclass(frozen=True)
class Coverage:
    evaluated: int
    applicable: int
    unevaluated: int  # applicable but skipped: no evidence
    not_applicable: int

    @property
    def enough(self) -> bool:
        """At least half of what applies was evaluated (and something was)."""
        return self.evaluated > 0 and 2 * self.evaluated >= self.applicable

    def as_dict(self) -> dict[str, Any]:
        return {
            "evaluated": self.evaluated,
            "applicable": self.applicable,
            "unevaluated": self.unevaluated,
            "not_applicable": self.not_applicable,
            "enough": self.enough,
        }


def coverage(findings: list[Finding]) -> Coverage:
    evaluated = sum(1 for f in findings if f.evaluated)
    unevaluated = sum(1 for f in findings if not f.evaluated and f.applicable)
    return Coverage(
        evaluated, evaluated + unevaluated, unevaluated, len(findings) - evaluated - unevaluated
    )


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
        "applicable": f.applicable,
        "by_effect": f.by_effect,
        "expected": f.expected,
        "actual": f.actual,
        "reason": f.reason,
        "drift": f.drift,
        "evidence": {"path": f.location, "line": f.line} if f.location else None,
        "fix": {"nixos": f.nixos_fix, "other": f.plain_fix, "then": f.plain_apply},
        "anchors": f.anchors,
    }


def summary(findings: list[Finding], context: dict[str, Any]) -> dict[str, Any]:
    counts: dict[str, int] = defaultdict(int)
    for f in findings:
        counts[f.status.value] += 1
    return {
        **context,
        "score": score(findings),
        "coverage": coverage(findings).as_dict(),
        "summary": dict(counts),
    }


def as_json(findings: list[Finding], context: dict[str, Any]) -> dict[str, Any]:
    return {**summary(findings, context), "findings": [as_dict(f) for f in findings]}


def fix_snippet(findings: list[Finding]) -> str:
    failed = [f for f in findings if f.status is Status.FAIL]
    return fixes.snippet([(f.id, f.nixos, f.nixos_note) for f in failed])


# SARIF


def _anchor_lines(f: Finding) -> list[tuple[str, str]]:
    out = []
    for source, ref in f.anchors.items():
        url = ANCHOR_URLS.get(source, README)
        out.append((f"{ANCHOR_NAMES.get(source, source)} {ref}", url.format(quote(ref))))
    return out


def _rule(f: Finding) -> dict[str, Any]:
    anchors = _anchor_lines(f)
    verified = "by its effect on the running kernel" if f.by_effect else "by its setting"
    text = [f"{f.title}. Checked {verified}."]
    markdown = [f"**{f.title}** (checked {verified})", ""]
    if f.nixos_fix:
        text.append(f"NixOS: {f.nixos_fix}")
        markdown.append(f"NixOS:\n```nix\n{f.nixos_fix}\n```")
    if f.plain_fix:
        text.append(
            f"Other systems: {f.plain_fix}" + (f"; then {f.plain_apply}" if f.plain_apply else "")
        )
        markdown.append(f"Other systems:\n```sh\n{f.plain_fix}\n{f.plain_apply}\n```")
    if anchors:
        text.append("References: " + ", ".join(name for name, _ in anchors))
        markdown.append("References: " + ", ".join(f"[{name}]({url})" for name, url in anchors))
    return {
        "id": f.id,
        "name": "".join(part.capitalize() for part in f.id.replace("-", ".").split(".")),
        "shortDescription": {"text": f.title},
        "fullDescription": {"text": text[0]},
        "help": {"text": "\n".join(text), "markdown": "\n".join(markdown)},
        "helpUri": anchors[0][1] if anchors else README,
        "defaultConfiguration": {"level": SARIF_LEVEL[f.severity]},
        "properties": {
            "area": f.area,
            "anchors": f.anchors,
            "verifiedByEffect": f.by_effect,
            "tags": [f.area, "security"],
        },
    }


def _sarif_fix(f: Finding) -> dict[str, Any]:
    """The NixOS fix as a new module file: each one stands alone and can be imported."""
    module = fixes.snippet([(f.id, f.nixos, "")])
    return {
        "description": {"text": f"NixOS: {fixes.render(f.nixos)}"},
        "artifactChanges": [
            {
                "artifactLocation": {
                    "uri": quote(f"pantheros-fix-{f.id}.nix"),
                    "uriBaseId": "NIXOS_CONFIG",
                },
                "replacements": [
                    {
                        "deletedRegion": {"charOffset": 0, "charLength": 0},
                        "insertedContent": {"text": module},
                    }
                ],
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


def as_sarif(findings: list[Finding], context: dict[str, Any], base: str) -> dict[str, Any]:
    rules = []
    results = []
    for index, f in enumerate(findings):
        rules.append(_rule(f))
        kind = {
            Status.PASS: "pass",
            Status.FAIL: "fail",
            Status.WAIVED: "fail",
            # SARIF's "open": the tool could not tell whether the problem is present.
            Status.SKIPPED: "open" if f.applicable else "notApplicable",
        }[f.status]
        result: dict[str, Any] = {
            "ruleId": f.id,
            "ruleIndex": index,
            "kind": kind,
            "level": SARIF_LEVEL[f.severity] if kind == "fail" else "none",
            "message": {"text": _message(f)},
            "properties": {
                "expected": f.expected,
                "actual": f.actual,
                "drift": f.drift,
                "applicable": f.applicable,
            },
        }
        if f.location:
            physical: dict[str, Any] = {
                "artifactLocation": {"uri": quote(f.location.lstrip("/")), "uriBaseId": "ROOT"}
            }
            if f.line:
                physical["region"] = {"startLine": f.line}
            result["locations"] = [{"physicalLocation": physical}]
        if f.status is Status.FAIL and f.nixos:
            result["fixes"] = [_sarif_fix(f)]
        if f.status is Status.WAIVED:
            result["suppressions"] = [{"kind": "external", "justification": f.reason}]
        results.append(result)
    root = "file://" + quote(base.rstrip("/") + "/")
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "panther-audit",
                        "version": __version__,
                        "informationUri": README,
                        "rules": rules,
                    }
                },
                "originalUriBaseIds": {
                    "ROOT": {
                        "uri": root,
                        "description": {"text": "The audited machine's /"},
                    },
                    "NIXOS_CONFIG": {
                        "uri": "file:///etc/nixos/",
                        "description": {"text": "Where NixOS fixes go (import each file)"},
                    },
                },
                "invocations": [{"executionSuccessful": True}],
                "results": results,
                "properties": summary(findings, context),
            }
        ],
    }


# Text

MARK = {
    Status.PASS: ("ok  ", "green"),
    Status.FAIL: ("FAIL", "red"),
    Status.WAIVED: ("waiv", "yellow"),
    Status.SKIPPED: ("skip", "dim"),
}


def _where(f: Finding) -> str:
    return f.location + (f":{f.line}" if f.line else "")


def _tally(members: list[Finding]) -> str:
    """What became of an area's checks, e.g. "3 pass, 1 fail" or "2 not applicable": only the
    counts there are, so that a heading never reads as a failure it is not."""
    counts = {
        "pass": sum(1 for f in members if f.status is Status.PASS),
        "fail": sum(1 for f in members if f.status is Status.FAIL),
        "waived": sum(1 for f in members if f.status is Status.WAIVED),
        "skipped": sum(1 for f in members if f.status is Status.SKIPPED and f.applicable),
        "not applicable": sum(1 for f in members if not f.applicable),
    }
    return ", ".join(f"{n} {word}" for word, n in counts.items() if n)


def text(
    findings: list[Finding], context: dict[str, Any], verbose: bool, command: str = "panther audit"
) -> list[str]:
    """The report as lines; command: the audit as it was asked for (`panther audit --lab DIR`),
    for the hint that names another run of it."""
    lines = [f"panther audit: {context['target']} at level {context['level']}"]
    areas: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        areas[f.area].append(f)
    for area, members in areas.items():
        lines.append(ui.paint(f"\n{area} ({_tally(members)})", "bold"))
        for f in members:
            if f.status is Status.PASS and not verbose:
                continue
            if f.status is Status.SKIPPED and not f.applicable and not verbose:
                continue
            mark, colour = MARK[f.status]
            detail = (
                f"expected {f.expected}, found {f.actual or 'nothing'}" if f.expected else f.actual
            )
            line = f"  {ui.paint(mark, colour)} {f.id}: {f.title}"
            if f.status is not Status.PASS:
                line += f" [{f.severity}]"
            if f.by_effect:
                line += " (by effect)"
            lines.append(line)
            if f.status is Status.FAIL:
                said = "; ".join(p for p in (detail, f.reason) if p)
                lines.append(f"       {ui.printable(said)}")
                if f.location:
                    lines.append(f"       evidence: {ui.printable(_where(f))}")
                if f.drift:
                    lines.append(f"       drift: {f.drift}")
                if f.nixos_fix:
                    lines.append(f"       fix (NixOS): {ui.printable(f.nixos_fix)}")
                if f.plain_fix:
                    then = f"; then {f.plain_apply}" if f.plain_apply else ""
                    lines.append(f"       fix (other): {ui.printable(f.plain_fix)}{then}")
            elif f.reason:
                lines.append(f"       {ui.printable(f.reason)}")
    counts = {s: sum(1 for f in findings if f.status is s) for s in Status}
    cov = coverage(findings)
    lines.append(
        f"\nscore {score(findings)}/100 over the evaluated checks: {counts[Status.PASS]} pass, "
        f"{counts[Status.FAIL]} fail, {counts[Status.WAIVED]} waived"
    )
    lines.append(
        f"coverage {cov.evaluated}/{cov.applicable} applicable checks evaluated "
        f"({cov.unevaluated} skipped for lack of evidence, {cov.not_applicable} not applicable)"
    )
    if not cov.enough:
        lines.append(
            "too little evidence to judge: fewer than half of the applicable checks could be "
            "evaluated, so the score says little"
        )
    if counts[Status.FAIL]:
        lines.append(f"every NixOS fix in one module: {command} --fix-snippet")
    return lines
