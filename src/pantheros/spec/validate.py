"""Validation of specs and changes, rule for rule as the OpenSpec CLI 1.13.2 reports them.

Issues carry the same level, path and line as OpenSpec's; the wording is PantherOS's own.
valid = no ERROR (and, with --strict, no WARNING); INFO never decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros.spec import parse
from pantheros.spec.parse import Block, SpecError

PLACEHOLDER = re.compile(r"^(TBD|TODO)\b", re.I)
MIN_PURPOSE = 50
LONG_REQUIREMENT = 500


@dataclass(frozen=True)
class Issue:
    level: str  # ERROR | WARNING | INFO
    path: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"level": self.level, "path": self.path, "message": self.message}
        if self.line is not None:
            out["line"] = self.line
        return out


def is_valid(issues: list[Issue], strict: bool) -> bool:
    bad = {"ERROR", "WARNING"} if strict else {"ERROR"}
    return not any(i.level in bad for i in issues)


def structure_issues(text: str) -> list[Issue]:
    """Delta headers, requirements outside the Requirements section, duplicate names (S6-S8)."""
    issues: list[Issue] = []
    lines = parse.normalise(text).split("\n")
    mask = parse.fenced(lines)
    in_requirements = False
    seen_requirements = False
    names: dict[str, int] = {}
    for number, (line, inside) in enumerate(zip(lines, mask, strict=True), 1):
        if inside:
            continue
        if re.match(r"^##\s+(ADDED|MODIFIED|REMOVED|RENAMED)\s+Requirements\s*$", line, re.I):
            issues.append(
                Issue(
                    "ERROR",
                    "file",
                    f'Main spec has the delta header "{line.strip()}"; '
                    "delta headers belong in a change's specs/.",
                    number,
                )
            )
        h2 = parse.H2.match(line)
        if h2 and not line.startswith("###"):
            now = bool(re.match(r"^##\s+Requirements\s*$", line, re.I))
            in_requirements = now and not seen_requirements
            seen_requirements = seen_requirements or now
            continue
        req = parse.REQ_HEADER.match(line)
        if not req:
            continue
        if not in_requirements:
            issues.append(
                Issue(
                    "ERROR",
                    "file",
                    f'Requirement header "{line.strip()}" lies outside '
                    "the ## Requirements section and is invisible.",
                    number,
                )
            )
            continue
        name = parse.clean_name(req.group(1))
        if name in names:
            issues.append(
                Issue(
                    "ERROR",
                    "file",
                    f'Requirement header "{line.strip()}" repeats the one on line {names[name]}.',
                    number,
                )
            )
        else:
            names[name] = number
    return issues


def validate_spec_text(text: str) -> list[Issue]:
    try:
        spec = parse.parse_spec(text)
    except SpecError as exc:
        return [Issue("ERROR", "file", f"{exc}. Expected headers: ## Purpose and ## Requirements.")]
    issues: list[Issue] = []
    if not spec.requirements:
        issues.append(Issue("ERROR", "requirements", "Spec must have at least one requirement"))
    for index, req in enumerate(spec.requirements):
        if not req.scenarios:
            issues.append(
                Issue(
                    "ERROR",
                    f"requirements.{index}.scenarios",
                    "Requirement must have at least one scenario",
                )
            )
    issues += structure_issues(text)
    overview = spec.overview.strip()
    if overview.startswith("TBD - created by archiving change") or PLACEHOLDER.match(overview):
        issues.append(
            Issue(
                "WARNING",
                "overview",
                "Purpose is still a placeholder; write what this capability is for.",
                spec.overview_line + 1,
            )
        )
    elif len(overview) < MIN_PURPOSE:
        issues.append(
            Issue(
                "WARNING",
                "overview",
                f"Purpose section is too brief (less than {MIN_PURPOSE} characters)",
            )
        )
    for index, req in enumerate(spec.requirements):
        if len(req.text) > LONG_REQUIREMENT:
            issues.append(
                Issue(
                    "INFO",
                    f"requirements[{index}]",
                    "Requirement text is very long (>500 characters).",
                )
            )
        if not req.scenarios:
            issues.append(
                Issue(
                    "WARNING",
                    f"requirements[{index}].scenarios",
                    "Requirement has no scenario; scenarios use #### Scenario: headers.",
                )
            )
    blocks = {b.name: b for b in parse.requirements_section(text).blocks}
    for index, req in enumerate(spec.requirements):
        block = blocks.get(req.name)
        if block is None:
            continue
        issue = shall_issue(block, f'Requirement "{req.name}"', f"requirements[{index}]", "ERROR")
        if issue:
            issues.append(issue)
    return issues


def shall_issue(block: Block, subject: str, path: str, empty_level: str) -> Issue | None:
    body = parse.block_body(block)
    in_header = bool(parse.SHALL.search(block.header))
    hint = " (the header has it; put it in the body)" if in_header else ""
    if not body:
        return Issue(empty_level, path, f"{subject} must contain SHALL or MUST{hint}")
    if not parse.SHALL.search(body):
        return Issue("WARNING", path, f"{subject} should contain SHALL or MUST{hint}")
    return None


# Changes


def delta_files(change: Path) -> tuple[list[tuple[str, Path]], list[Issue]]:
    """(capability id, file) of every delta spec, and issues about misplaced ones."""
    specs = change / "specs"
    found: list[tuple[str, Path]] = []
    issues: list[Issue] = []
    if not specs.is_dir():
        return found, issues
    if (specs / "spec.md").is_file():
        issues.append(
            Issue(
                "ERROR",
                "spec.md",
                "Delta spec at specs/spec.md: it belongs in "
                "specs/<capability>/spec.md and is ignored here.",
            )
        )
    for path in sorted(specs.rglob("spec.md")):
        rel = path.parent.relative_to(specs)
        if rel == Path(".") or any(p.startswith(".") for p in rel.parts):
            continue
        found.append(("/".join(rel.parts), path))
    return sorted(found, key=lambda item: item[0]), issues


def validate_delta(cap: str, text: str, main: Path | None) -> list[Issue]:
    path = f"{cap}/spec.md"
    delta = parse.parse_delta(text)
    issues: list[Issue] = []
    for line, header, heading in delta.ignored_headers:
        issues.append(
            Issue(
                "INFO",
                path,
                f'Header "### {header}" in {heading} is not a '
                '"### Requirement:" header and is ignored.',
                line,
            )
        )
    for line, which, name in delta.unpaired:
        issues.append(
            Issue("ERROR", path, f'RENAMED {which}: "{name}" has no matching line.', line)
        )
    for line, name, under in delta.stray:
        where = f'under "## {under}"' if under else 'above the first "## " section'
        issues.append(
            Issue(
                "WARNING",
                path,
                f'Requirement "{name}" is {where}, not a delta section, and is ignored.',
                line,
            )
        )
    if not delta.sections:
        return [*issues, Issue("ERROR", path, "No delta sections found.")]
    if delta.count == 0:
        return [*issues, Issue("ERROR", path, "Delta sections were found but hold no requirement.")]
    for kind, blocks in (("ADDED", delta.added), ("MODIFIED", delta.modified)):
        seen: set[str] = set()
        for block in blocks:
            if block.name in seen:
                issues.append(
                    Issue("ERROR", path, f'Duplicate requirement in {kind}: "{block.name}"')
                )
            seen.add(block.name)
            issue = shall_issue(block, f'{kind} "{block.name}"', path, "ERROR")
            if issue:
                issues.append(issue)
            if not parse.scenario_names(block):
                issues.append(
                    Issue(
                        "ERROR", path, f'{kind} "{block.name}" must include at least one scenario'
                    )
                )
    removed = [name for name, _ in delta.removed]
    for name in {n for n in removed if removed.count(n) > 1}:
        issues.append(Issue("ERROR", path, f'Duplicate requirement in REMOVED: "{name}"'))
    froms = [r.old for r in delta.renamed]
    tos = [r.new for r in delta.renamed]
    for name in {n for n in froms if froms.count(n) > 1}:
        issues.append(Issue("ERROR", path, f'Duplicate FROM in RENAMED: "{name}"'))
    for name in {n for n in tos if tos.count(n) > 1}:
        issues.append(Issue("ERROR", path, f'Duplicate TO in RENAMED: "{name}"'))
    added = {b.name for b in delta.added}
    modified = {b.name for b in delta.modified}
    for name in sorted(modified & set(removed)):
        issues.append(
            Issue("ERROR", path, f'Requirement present in both MODIFIED and REMOVED: "{name}"')
        )
    for name in sorted(modified & added):
        issues.append(
            Issue("ERROR", path, f'Requirement present in both MODIFIED and ADDED: "{name}"')
        )
    for name in sorted(added & set(removed)):
        issues.append(
            Issue("ERROR", path, f'Requirement present in both ADDED and REMOVED: "{name}"')
        )
    for rename in delta.renamed:
        if rename.old in modified:
            issues.append(Issue("ERROR", path, f'MODIFIED uses the old name; use "{rename.new}"'))
        if rename.new in added:
            issues.append(
                Issue("ERROR", path, f'RENAMED TO collides with ADDED for "{rename.new}"')
            )
        if rename.old in removed:
            issues.append(
                Issue(
                    "ERROR",
                    path,
                    f'Requirement present in both RENAMED and REMOVED: "{rename.old}"',
                )
            )
    if main is not None and main.is_file():
        current = {b.name: b for b in parse.requirements_section(parse.read(main)).blocks}
        renamed_to = {r.new: r.old for r in delta.renamed}
        for block in delta.modified:
            old = current.get(renamed_to.get(block.name, block.name))
            if old is None:
                continue
            lost = parse.missing_scenarios(
                parse.scenario_names(old, counted_only=False),
                parse.scenario_names(block, counted_only=False),
            )
            if lost:
                issues.append(
                    Issue(
                        "ERROR",
                        path,
                        f'MODIFIED "{block.name}" omits scenario(s) the '
                        f"current spec still has: {', '.join(lost)}",
                    )
                )
    return issues


def _dry_run(cap: str, change: str, text: str, main: Path) -> list[Issue]:
    """What archive would refuse, reported ahead of time (INFO: it does not decide validity)."""
    from pantheros.spec import archive

    current = parse.read(main) if main.is_file() else None
    try:
        archive.build(cap, change, text, current)
    except archive.ApplyError as exc:
        return [Issue("INFO", f"{cap}/spec.md", f"Archive would refuse this delta: {exc}")]
    return []


def tasks_issues(change: Path) -> list[Issue]:
    tasks = change / "tasks.md"
    if not tasks.is_file():
        return []
    text = parse.normalise(parse.read(tasks))
    _, total = parse.task_counts(text)
    if total:
        return []
    lines = text.split("\n")
    for number, (line, inside) in enumerate(zip(lines, parse.fenced(lines), strict=True), 1):
        if not inside and parse.LIST_ITEM.match(line):
            return [
                Issue(
                    "WARNING",
                    "tasks.md",
                    "No line of tasks.md is a checkbox, so this change "
                    'counts as 0 tasks; write tasks as "- [ ] 1.1 ...".',
                    number,
                )
            ]
    return []


def metadata(change: Path) -> tuple[dict[str, str] | None, str | None]:
    """The change's .openspec.yaml as flat key: value pairs, or (None, why it is not valid)."""
    path = change / ".openspec.yaml"
    if not path.is_file():
        return {}, None
    found: dict[str, str] = {}
    for line in parse.normalise(parse.read(path)).split("\n"):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if ":" not in line or line.startswith((" ", "\t")):
            continue
        key, _, value = line.partition(":")
        found[key.strip()] = value.strip().strip("'\"")
    if found.get("schema") != "spec-driven":
        return None, f"unknown schema {found.get('schema')!r}"
    return found, None


def unread_delta_files(change: Path) -> list[Issue]:
    """Markdown files with delta headers that archive never reads (not a <cap>/spec.md)."""
    specs = change / "specs"
    issues: list[Issue] = []
    if not specs.is_dir():
        return issues
    for path in sorted(specs.rglob("*.md")):
        rel = path.relative_to(specs)
        if path.name == "spec.md" or any(p.startswith(".") for p in rel.parts):
            continue
        text = parse.read(path)
        if re.search(r"^##\s+(ADDED|MODIFIED|REMOVED|RENAMED)\s+Requirements", text, re.M | re.I):
            issues.append(
                Issue(
                    "ERROR",
                    str(rel),
                    f"Delta spec at specs/{rel} is never read: "
                    "move it to specs/<capability>/spec.md.",
                )
            )
    return issues


def task_numbering(change: Path) -> list[Issue]:
    """In `## N.` groups, task ids must start with N and be unique (spec-driven schema)."""
    tasks = change / "tasks.md"
    if not tasks.is_file():
        return []
    issues: list[Issue] = []
    group: str | None = None
    seen: dict[str, int] = {}
    lines = parse.normalise(parse.read(tasks)).split("\n")
    for number, (line, inside) in enumerate(zip(lines, parse.fenced(lines), strict=True), 1):
        if inside:
            continue
        heading = re.match(r"^##\s+(\d+)\.", line)
        if heading:
            group = heading.group(1)
            continue
        match = parse.TASK.match(line)
        if not match or group is None:
            continue
        task_id = re.match(r"(\d+(?:\.\d+)+)", match.group(2) or "")
        if not task_id:
            continue
        ident = task_id.group(1)
        if ident.split(".")[0] != group:
            issues.append(
                Issue(
                    "WARNING",
                    "tasks.md",
                    f'Task "{ident}" is under group {group}, '
                    f"but its number points to group {ident.split('.')[0]}.",
                    number,
                )
            )
        elif ident in seen:
            issues.append(
                Issue(
                    "WARNING",
                    "tasks.md",
                    f'Task ID "{ident}" is duplicated; first on line {seen[ident]}.',
                    number,
                )
            )
        seen.setdefault(ident, number)
    return issues


def validate_change(change: Path, main_specs: Path | None) -> list[Issue]:
    files, issues = delta_files(change)
    meta, invalid = metadata(change)
    skip_specs = meta is not None and meta.get("skip_specs", "").lower() == "true"
    if invalid and "skip_specs" in (change / ".openspec.yaml").read_text():
        issues.append(
            Issue(
                "ERROR",
                ".openspec.yaml",
                "skip_specs is set but .openspec.yaml is "
                f"not valid change metadata ({invalid}), so it is not honored.",
            )
        )
    unread = unread_delta_files(change)
    issues += unread
    if skip_specs:
        specs = change / "specs"
        has_files = specs.is_dir() and any(
            p.is_file() and not any(part.startswith(".") for part in p.relative_to(specs).parts)
            for p in specs.rglob("*")
        )
        if has_files:
            return [
                *issues,
                Issue(
                    "ERROR",
                    "file",
                    "skip_specs is set in .openspec.yaml but spec files exist under specs/.",
                ),
            ]
    total = 0
    for cap, path in files:
        text = parse.read(path)
        delta = parse.parse_delta(text)
        total += delta.count
        main = main_specs / cap / "spec.md" if main_specs is not None else None
        found = validate_delta(cap, text, main)
        issues += found
        if main is not None and not any(i.level == "ERROR" for i in found):
            issues += _dry_run(cap, change.name, text, main)
    misplaced = bool(unread) or any(i.path == "spec.md" for i in issues)
    if total == 0 and skip_specs:
        issues.append(
            Issue(
                "INFO",
                "file",
                "skip_specs is set in .openspec.yaml: no spec-level change, zero deltas accepted.",
            )
        )
    elif total == 0 and not misplaced:
        issues.append(
            Issue(
                "ERROR",
                "file",
                "Change must have at least one delta. No deltas found "
                "under specs/<capability>/spec.md (set skip_specs: true in .openspec.yaml "
                "for a change that touches no spec).",
            )
        )
    if main_specs is not None:
        issues += tasks_issues(change)
        issues += task_numbering(change)
    return issues
