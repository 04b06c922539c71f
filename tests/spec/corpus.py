"""A generated OpenSpec tree that exercises every validation rule and archive outcome."""

from __future__ import annotations

from pathlib import Path

GOOD_PURPOSE = "Authentication of users for the whole system, across every client that ships."


def req(
    name: str, body: str = "The system SHALL do it.", scenarios: tuple[str, ...] = ("works",)
) -> str:
    text = f"### Requirement: {name}\n{body}\n"
    for scenario in scenarios:
        text += (
            f"\n#### Scenario: {scenario}\n- **WHEN** something happens\n- **THEN** it is handled\n"
        )
    return text


def spec(purpose: str, *requirements: str, extra: str = "") -> str:
    return (
        f"# x Specification\n\n## Purpose\n{purpose}\n\n## Requirements\n"
        + "\n".join(requirements)
        + extra
    )


SPECS: dict[str, str] = {
    "auth": spec(
        GOOD_PURPOSE,
        req("Login", scenarios=("good password", "bad password")),
        req("Logout"),
        req("Password Reset"),
        req("Legacy Tokens"),
    ),
    "billing": spec(GOOD_PURPOSE, req("Invoices"), req("Refunds", body="Refunds can be made.")),
    "short-purpose": spec("Too short.", req("Thing")),
    "tbd-purpose": spec(
        "TBD - created by archiving change x. Update Purpose after archive.", req("A")
    ),
    "no-purpose": "# x\n\n## Requirements\n" + req("A"),
    "no-requirements-section": f"# x\n\n## Purpose\n{GOOD_PURPOSE}\n",
    "zero-requirements": spec(GOOD_PURPOSE),
    "no-scenario": spec(GOOD_PURPOSE, req("Lonely", scenarios=())),
    "lowercase-shall": spec(GOOD_PURPOSE, req("Quiet", body="the system shall be quiet.")),
    "shall-in-header": spec(
        GOOD_PURPOSE,
        "### Requirement: It SHALL work\n\n#### Scenario: s\n- **WHEN** a\n- **THEN** b\n",
    ),
    "empty-body": spec(
        GOOD_PURPOSE, "### Requirement: Empty\n\n#### Scenario: s\n- **WHEN** a\n- **THEN** b\n"
    ),
    "duplicate-names": spec(GOOD_PURPOSE, req("Same"), req("Same")),
    "delta-header-in-main": spec(
        GOOD_PURPOSE, req("A"), extra="\n## ADDED Requirements\n" + req("B")
    ),
    "requirement-outside": spec(GOOD_PURPOSE, req("A"), extra="\n## Notes\n" + req("Hidden")),
    "long-text": spec(GOOD_PURPOSE, req("Long", body="The system SHALL " + "go on " * 100)),
    "empty-scenario": spec(
        GOOD_PURPOSE, "### Requirement: E\nThe system SHALL x.\n\n#### Scenario: empty\n"
    ),
    "three-hash-scenario": spec(
        GOOD_PURPOSE,
        "### Requirement: T\nThe system SHALL x.\n\n### Scenario: wrong\n- **WHEN** a\n- **THEN** b\n",
    ),
    "fenced": spec(
        GOOD_PURPOSE, req("F", body="The system SHALL x.\n\n```\n### Requirement: In Fence\n```")
    ),
    "nested/area": spec(GOOD_PURPOSE, req("Nested")),
    "crlf": spec(GOOD_PURPOSE, req("Windows")).replace("\n", "\r\n"),
    "metadata-body": spec(GOOD_PURPOSE, req("Meta", body="**ID**: REQ-1\nThe system MUST x.")),
    # A ```python line inside a block does not close it, so the header below stays hidden.
    "fence-info-string": spec(
        GOOD_PURPOSE,
        req("F", body="The system SHALL x.\n\n```\n```python\n### Requirement: Hidden\n```"),
    ),
    "long-fence": spec(
        GOOD_PURPOSE,
        req("L", body="The system SHALL x.\n\n````\n```\n### Requirement: Inner\n```\n````"),
    ),
    "closed-heading-duplicate": spec(
        GOOD_PURPOSE, req("Twin"), req("Twin ###", body="The system SHALL again.")
    ),
    "no-space-requirement": spec(
        GOOD_PURPOSE, req("A"), "###Requirement: Tight\nThe system SHALL x.\n"
    ),
    "todo-lower-purpose": spec(
        "todo - write this later; it is long enough to pass the brevity rule anyway.", req("A")
    ),
    "todo-spanish-purpose": spec(
        "Todo el sistema de autenticación funciona para todos los clientes del proyecto.", req("A")
    ),
    "tbds-purpose": spec(
        "TBDs remain for this capability, but this purpose is long enough to stand.", req("A")
    ),
    "generated-after-prose": spec(
        "We started writing this.\nTBD - created by archiving change x. Update Purpose after archive.",
        req("A"),
    ),
    # A section's content runs to the next header of its level or higher, children included.
    "purpose-in-child": (
        "# x\n\n## Purpose\n### Background\n" + GOOD_PURPOSE + "\n\n## Requirements\n" + req("A")
    ),
    "scenario-with-child": spec(
        GOOD_PURPOSE,
        "### Requirement: Deep\nThe system SHALL x.\n\n#### Scenario: outer\n"
        "##### Details\n- **WHEN** a\n- **THEN** b\n",
    ),
    # "#tag" is not a header (no space after the #), so it is text.
    "hashtag-lines": spec(
        GOOD_PURPOSE,
        "### Requirement: Tagged\n#tag first\nThe system SHALL x.\n\n"
        "#### Scenario: s\n#only-a-tag\n",
    ),
    "h3-before-requirement": spec(
        GOOD_PURPOSE,
        "### Overview\nSome words.\n\n#### Scenario: s\n- **WHEN** a\n- **THEN** b\n\n",
        req("Quiet", body="Nothing normative here."),
    ),
    "with-notes": spec(GOOD_PURPOSE, req("A"), extra="\n## Notes\nKeep this.\n"),
    "shouted-todo-purpose": spec(
        "TODO write the purpose of this capability before anyone reads it.", req("A")
    ),
}


def delta(*sections: tuple[str, str]) -> str:
    return "\n".join(f"## {title}\n{body}" for title, body in sections)


PROPOSAL = "# Change: x\n\n## Why\nBecause the system needs it for reasons long enough here.\n\n## What Changes\n- **auth**: change\n"

CHANGES: dict[str, dict[str, str]] = {
    "c-full-merge": {
        "specs/auth/spec.md": delta(
            ("ADDED Requirements", req("Two Factor", "The system MUST support TOTP.")),
            (
                "MODIFIED Requirements",
                req("Session Login", scenarios=("good password", "bad password", "sso")),
            ),
            ("REMOVED Requirements", "### Requirement: Legacy Tokens\n**Reason**: gone\n"),
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Login`\n- TO: `### Requirement: Session Login`\n",
            ),
        )
    },
    "c-new-spec": {"specs/storage/spec.md": delta(("ADDED Requirements", req("Disks")))},
    "c-new-spec-purpose": {
        "specs/net/spec.md": "## Purpose\nNetworking of every host in the fleet, wired and wireless alike.\n\n"
        + delta(("ADDED Requirements", req("Links")))
    },
    "c-no-shall": {
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Quiet", "Things happen.")))
    },
    "c-added-empty-body": {
        "specs/billing/spec.md": delta(
            (
                "ADDED Requirements",
                "### Requirement: Nothing\n\n#### Scenario: s\n- **WHEN** a\n- **THEN** b\n",
            )
        )
    },
    "c-added-no-scenario": {
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Bare", scenarios=())))
    },
    "c-added-empty-scenario": {
        "specs/billing/spec.md": delta(
            (
                "ADDED Requirements",
                "### Requirement: Hollow\nThe system SHALL x.\n\n#### Scenario: nothing\n",
            )
        )
    },
    "c-dup-added": {
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Twice") + "\n" + req("Twice")))
    },
    "c-modified-and-removed": {
        "specs/billing/spec.md": delta(
            ("MODIFIED Requirements", req("Invoices")),
            ("REMOVED Requirements", "### Requirement: Invoices\n"),
        )
    },
    "c-modified-drops-scenario": {
        "specs/auth/spec.md": delta(
            ("MODIFIED Requirements", req("Login", scenarios=("good password",)))
        )
    },
    "c-modified-missing": {"specs/auth/spec.md": delta(("MODIFIED Requirements", req("Nope")))},
    "c-removed-missing": {
        "specs/auth/spec.md": delta(("REMOVED Requirements", "### Requirement: Never Existed\n"))
    },
    "c-removed-bullets": {
        "specs/auth/spec.md": delta(
            ("REMOVED Requirements", "- `### Requirement: Legacy Tokens`\n")
        )
    },
    "c-renamed-missing": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Ghost`\n- TO: `### Requirement: Spirit`\n",
            )
        )
    },
    "c-renamed-target-exists": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Login`\n- TO: `### Requirement: Logout`\n",
            )
        )
    },
    "c-renamed-unpaired": {
        "specs/auth/spec.md": delta(("RENAMED Requirements", "- FROM: `### Requirement: Login`\n"))
    },
    "c-modified-old-name": {
        "specs/auth/spec.md": delta(
            ("MODIFIED Requirements", req("Login", scenarios=("good password", "bad password"))),
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Login`\n- TO: `### Requirement: Signin`\n",
            ),
        )
    },
    "c-stray-h3": {
        "specs/auth/spec.md": delta(
            ("ADDED Requirements", "### Not A Requirement\nText.\n\n" + req("Real"))
        )
    },
    "c-empty-sections": {
        "specs/auth/spec.md": "## ADDED Requirements\n\n## REMOVED Requirements\n"
    },
    "c-no-delta-headers": {"specs/auth/spec.md": "# Notes\nNothing here.\n"},
    "c-no-specs-dir": {"proposal.md": PROPOSAL},
    "c-root-level-spec": {"specs/spec.md": delta(("ADDED Requirements", req("Root")))},
    "c-lowercase-headers": {"specs/billing/spec.md": "## added requirements\n" + req("Lower")},
    "c-requirement-outside-delta": {
        "specs/billing/spec.md": "## Notes\n"
        + req("Lost")
        + "\n## ADDED Requirements\n"
        + req("Found")
    },
    "c-added-exists": {
        "specs/auth/spec.md": delta(
            ("ADDED Requirements", req("Logout", "The system SHALL differ."))
        )
    },
    "c-added-identical": {"specs/auth/spec.md": delta(("ADDED Requirements", req("Logout")))},
    "c-tasks-no-checkbox": {
        "tasks.md": "## 1. Work\n- write the code\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Tasks"))),
    },
    "c-tasks-incomplete": {
        "tasks.md": "- [x] 1.1 a\n- [ ] 1.2 b\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Partial"))),
    },
    "2025-01-01-dated": {"specs/billing/spec.md": delta(("ADDED Requirements", req("Dated")))},
    "c-nested-new": {"specs/nested/area/spec.md": delta(("ADDED Requirements", req("Deeper")))},
    "c-crlf-target": {"specs/crlf/spec.md": delta(("ADDED Requirements", req("More Windows")))},
    "c-skip-specs": {".openspec.yaml": "schema: spec-driven\nskip_specs: true\n"},
    "c-skip-specs-conflict": {
        ".openspec.yaml": "schema: spec-driven\nskip_specs: true\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Conflict"))),
    },
    "c-task-numbering": {
        "tasks.md": "## 1. First\n- [x] 1.1 a\n- [ ] 2.1 misplaced\n- [ ] 1.1 again\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Numbered"))),
    },
    "c-unread-delta-file": {
        "specs/billing.md": delta(("ADDED Requirements", req("Unread"))),
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Read"))),
    },
    "c-repeated-sections": {
        "specs/billing/spec.md": delta(
            ("ADDED Requirements", req("One")), ("ADDED Requirements", req("Two"))
        )
    },
    "c-rename-no-backticks": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "FROM: ### Requirement: Logout\nTO: ### Requirement: Sign Out\n",
            )
        )
    },
    "c-removed-case-typo": {
        "specs/auth/spec.md": delta(("REMOVED Requirements", "### Requirement: legacy tokens\n"))
    },
    "c-modified-same": {"specs/auth/spec.md": delta(("MODIFIED Requirements", req("Logout")))},
    "c-two-specs": {
        "specs/auth/spec.md": delta(("ADDED Requirements", req("Audit Log"))),
        "specs/billing/spec.md": delta(
            ("MODIFIED Requirements", req("Refunds", "The system SHALL refund."))
        ),
    },
    "c-fenced-header": {
        "specs/billing/spec.md": delta(
            (
                "ADDED Requirements",
                req(
                    "Fenced",
                    "The system SHALL x.\n\n```\n## REMOVED Requirements\n### Requirement: Invoices\n```",
                ),
            )
        )
    },
    # Deltas against a main spec that is structurally invalid: validate says archive would
    # refuse (INFO), and archive refuses.
    "c-target-duplicates": {
        "specs/duplicate-names/spec.md": delta(("ADDED Requirements", req("Other")))
    },
    "c-target-outside": {
        "specs/requirement-outside/spec.md": delta(("ADDED Requirements", req("Other")))
    },
    "c-target-delta-header": {
        "specs/delta-header-in-main/spec.md": delta(("ADDED Requirements", req("Other")))
    },
    "c-target-closed-duplicate": {
        "specs/closed-heading-duplicate/spec.md": delta(("ADDED Requirements", req("Other")))
    },
    "c-task-suffix": {
        "tasks.md": "## 3. Group\n- [x] 3.6 a\n- [x] 3.6a b\n- [x] 3.6b c\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Suffix"))),
    },
    "c-task-dup-other-group": {
        "tasks.md": "## 1. A\n- [x] 1.1 a\n\n## 2. B\n- [x] 1.1 again\n- [x] 2.1 b\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Regrouped"))),
    },
    "c-task-leading-zero": {
        "tasks.md": "## 01. A\n- [x] 1.1 a\n- [x] 01.2 b\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Zeros"))),
    },
    "c-task-unnumbered-section": {
        "tasks.md": "## 1. A\n- [x] 1.1 a\n\n## Notes\n- [x] 9.9 stray\n  - [x] 1.1 nested\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Sections"))),
    },
    "c-task-no-groups": {
        "tasks.md": "# Tasks\n- [x] 2.1 a\n- [x] 2.1 b\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Groupless"))),
    },
    "c-task-punctuated-id": {
        "tasks.md": "## 1. A\n- [x] 2.1: colon\n- [x] 1.1\n- [x] 1.1\n 1. [x] 1.2 ordered\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Punctuated"))),
    },
    "c-task-fenced-group": {
        "tasks.md": "## 1. A\n```\n## 2. Example\n- [x] 2.1 in fence\n```\n- [x] 1.1 a\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Fenced Group"))),
    },
    "c-tasks-fenced-checkbox": {
        "tasks.md": "- [x] 1.1 done\n```\n- [ ] 1.2 example\n```\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Fenced Box"))),
    },
    "c-tasks-front-matter": {
        "tasks.md": "---\ntags:\n  - a\n---\n# Tasks\n- write it\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Front"))),
    },
    "c-tasks-comment-and-code": {
        "tasks.md": "<!--\n- hidden\n-->\n    - code sample\n```\n- fenced\n```\n* real item\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Commented"))),
    },
    "c-tasks-link-bullets": {
        "tasks.md": "- [A](https://example.com)\n- [ ](x)\n",
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Links"))),
    },
    # A ### header inside an ADDED block is reported and stays part of that block.
    "c-h3-inside-block": {
        "specs/billing/spec.md": delta(
            ("ADDED Requirements", req("Real") + "\n### Notes\nMore text.\n\n" + req("Second"))
        )
    },
    "c-modified-h3": {
        "specs/auth/spec.md": delta(
            ("MODIFIED Requirements", req("Logout") + "\n### Rationale\nBecause.\n")
        )
    },
    # The list forms of RENAMED and REMOVED are case-sensitive.
    "c-lowercase-from": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "- from: `### Requirement: Logout`\n- to: `### Requirement: Sign Out`\n",
            )
        )
    },
    "c-removed-bullet-lowercase": {
        "specs/auth/spec.md": delta(
            ("REMOVED Requirements", "- `### requirement: Legacy Tokens`\n")
        )
    },
    "c-interleaved-renames": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "- TO: `### Requirement: Orphan`\n"
                "- FROM: `### Requirement: Login`\n- FROM: `### Requirement: Logout`\n"
                "- TO: `### Requirement: Sign Out`\n",
            )
        )
    },
    # What archive would otherwise drop silently makes it validate first (and refuse).
    "c-unread-only": {"specs/billing.md": delta(("ADDED Requirements", req("Unread")))},
    "c-skip-specs-notes": {
        ".openspec.yaml": "schema: spec-driven\nskip_specs: true\n",
        "specs/notes/spec.md": "# Notes\nNothing here.\n",
    },
    "c-skip-specs-hidden": {
        ".openspec.yaml": "schema: spec-driven\nskip_specs: true\n",
        "specs/.gitkeep": "",
    },
    "c-skip-specs-unknown-schema": {".openspec.yaml": "schema: my-flow\nskip_specs: true\n"},
    "c-skip-specs-string": {".openspec.yaml": 'schema: spec-driven\nskip_specs: "yes"\n'},
    "c-skip-specs-false-bad-date": {
        ".openspec.yaml": "schema: spec-driven\ncreated: yesterday\nskip_specs: false\n"
    },
    "c-skip-specs-bad-date": {
        ".openspec.yaml": "schema: spec-driven\ncreated: yesterday\nskip_specs: true\n"
    },
    "c-skip-specs-no-schema": {".openspec.yaml": "skip_specs: true\n"},
    "c-hidden-capability": {
        "specs/.draft/spec.md": delta(("ADDED Requirements", req("Hidden"))),
        "specs/billing/spec.md": delta(("ADDED Requirements", req("Visible"))),
    },
    # Folders that only wrap changes: reported (validate) and refused (archive), not read.
    "c-namespace": {"team/add-x/proposal.md": PROPOSAL, "team/add-y/specs/a/spec.md": "x"},
    "c-namespace-deep": {"a/b/c/add-z/tasks.md": "- [ ] 1.1 x\n", "a/notes/.keep": ""},
    "c-namespace-with-file": {"README": "a note", "team/add-x/proposal.md": PROPOSAL},
    # retire_capabilities: a change that removes a spec's last requirement deletes the spec.
    "c-retire-last": {
        ".openspec.yaml": "schema: spec-driven\nretire_capabilities: true\n",
        "specs/billing/spec.md": delta(
            ("REMOVED Requirements", "### Requirement: Invoices\n### Requirement: Refunds\n")
        ),
    },
    "c-retire-nested": {
        ".openspec.yaml": "schema: spec-driven\nretire_capabilities: true\n",
        "specs/nested/area/spec.md": delta(("REMOVED Requirements", "### Requirement: Nested\n")),
    },
    "c-retire-not-last": {
        ".openspec.yaml": "schema: spec-driven\nretire_capabilities: true\n",
        "specs/billing/spec.md": delta(("REMOVED Requirements", "### Requirement: Refunds\n")),
    },
    "c-retire-with-notes": {
        ".openspec.yaml": "schema: spec-driven\nretire_capabilities: true\n",
        "specs/with-notes/spec.md": delta(("REMOVED Requirements", "### Requirement: A\n")),
    },
    # A MODIFIED naming a header the same delta renames away is reported once, not also as a
    # scenario loss; renames chain; RENAMED and REMOVED conflict whatever the case.
    "c-modified-old-name-drops": {
        "specs/auth/spec.md": delta(
            ("MODIFIED Requirements", req("Login", scenarios=("good password",))),
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Login`\n- TO: `### Requirement: Signin`\n",
            ),
        )
    },
    "c-rename-then-modify-drops": {
        "specs/auth/spec.md": delta(
            ("MODIFIED Requirements", req("Signin", scenarios=("good password",))),
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Login`\n- TO: `### Requirement: Signin`\n",
            ),
        )
    },
    "c-renamed-and-removed-case": {
        "specs/auth/spec.md": delta(
            (
                "RENAMED Requirements",
                "- FROM: `### Requirement: Logout`\n- TO: `### Requirement: Sign Out`\n",
            ),
            ("REMOVED Requirements", "### Requirement: logout\n"),
        )
    },
    "c-remove-last": {
        "specs/billing/spec.md": delta(
            ("REMOVED Requirements", "### Requirement: Invoices\n### Requirement: Refunds\n")
        )
    },
}


# Changes written without the default proposal.md and tasks.md.
BARE = {"c-namespace", "c-namespace-deep", "c-namespace-with-file"}
# A change folder that is a symlink to another change.
LINKED = {"c-linked": "c-new-spec"}


def write(root: Path) -> Path:
    """Write the tree under root (root/openspec/...); returns root."""
    for spec_id, text in SPECS.items():
        path = root / "openspec" / "specs" / spec_id / "spec.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
    for change, files in CHANGES.items():
        folder = root / "openspec" / "changes" / change
        folder.mkdir(parents=True, exist_ok=True)
        if change not in BARE:
            files = {"proposal.md": PROPOSAL, "tasks.md": "- [x] 1.1 done\n", **files}
        for rel, text in files.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for link, target in LINKED.items():
        (root / "openspec" / "changes" / link).symlink_to(target)
    return root
