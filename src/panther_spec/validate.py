"""Validation of specs and changes, rule for rule as the OpenSpec CLI 1.13.2 reports them.

Issues carry the same level, path and line as OpenSpec's; the wording is PantherOS's own.
valid = no ERROR (and, with --strict, no WARNING); INFO never decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from panther_spec import parse
from panther_spec.parse import Block, SpecError

# A TBD/TODO opening the Purpose. In capitals it is a marker whatever follows; in any other
# case only when punctuation or the line end follows, so "Todo el sistema..." stays prose.
SHOUTED = re.compile(r"^(?:TBD|TODO)(?!\w)")
PUNCTUATED = re.compile(
    r"^(?:TBD|TODO)(?!\w)(?=[ \t]*(?:\Z|\n|[:\-\u2013\u2014.,;()\[\]{}]))", re.I
)
GENERATED_PREFIX = "TBD - created by archiving change "
GENERATED_SUFFIX = ". Update Purpose after archive."
PURPOSE_HEADER = re.compile(r"^ {0,3}##(?!#)[ \t]+Purpose[ \t]*$", re.I)
TOP_HEADER = re.compile(r"^ {0,3}#{1,2}(?!#)[ \t]+")
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
    return [Issue("ERROR", "file", f.message, f.line) for f in parse.structure_flaws(text)]


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
    placeholder = _placeholder(overview, text)
    if placeholder is not None:
        issues.append(
            Issue(
                "WARNING",
                "overview",
                "Purpose is still a placeholder; write what this capability is for.",
                placeholder or None,
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
    # Numbered by `### Requirement:` block, not by the section tree's requirement: the two
    # differ when another ### header sits in the Requirements section (OpenSpec does the same).
    for index, block in enumerate(parse.requirements_section(text).blocks):
        issue = shall_issue(block, f'Requirement "{block.name}"', f"requirements[{index}]", "ERROR")
        if issue:
            issues.append(issue)
    return issues


def _generated_at(text: str) -> int | None:
    """Where archive's placeholder sentence starts: the prefix closest before a suffix."""
    suffix = text.find(GENERATED_SUFFIX)
    while suffix != -1:
        prefix = text.rfind(GENERATED_PREFIX, 0, suffix)
        if prefix != -1:
            return prefix
        suffix = text.find(GENERATED_SUFFIX, suffix + 1)
    return None


def _placeholder(overview: str, text: str) -> int | None:
    """None if the Purpose reads as written; else the line of the placeholder (0: unknown)."""
    lines = parse.normalise(overview).split("\n")
    prose = "\n".join(
        ln for ln, inside in zip(lines, parse.fenced(lines), strict=True) if not inside
    ).strip()
    leading = bool(SHOUTED.match(prose) or PUNCTUATED.match(prose))
    if not leading and _generated_at(prose) is None:
        return None
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    mask = parse.fenced(lines)
    header = next(
        (i for i, ln in enumerate(lines) if not mask[i] and PURPOSE_HEADER.match(ln)), None
    )
    if header is None:
        return 0
    body: list[tuple[int, str]] = []
    for index in range(header + 1, len(lines)):
        if mask[index]:
            continue
        if TOP_HEADER.match(lines[index]):
            break
        if leading and lines[index].strip():
            return index + 1
        body.append((index + 1, lines[index]))
    at = None if leading else _generated_at("\n".join(ln for _, ln in body))
    if at is None:
        return 0
    offset = "\n".join(ln for _, ln in body)[:at].count("\n")
    return body[offset][0]


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
    found = _walk_specs(specs, ())
    return sorted(found, key=lambda item: item[0]), issues


def _walk_specs(folder: Path, segments: tuple[str, ...]) -> list[tuple[str, Path]]:
    """spec.md files below specs/<capability...>/: hidden entries skipped, symlinked folders
    not entered, a symlinked spec.md read only when it leads to a file (as OpenSpec walks)."""
    found: list[tuple[str, Path]] = []
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False):
            found += _walk_specs(Path(entry.path), (*segments, entry.name))
        elif entry.name == "spec.md" and segments and entry.is_file():
            found.append(("/".join(segments), Path(entry.path)))
    return found


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
        # Compared folded: a case or spacing variant in REMOVED is the same contradiction.
        if any(_fold(name) == _fold(rename.old) for name in removed):
            issues.append(
                Issue(
                    "ERROR",
                    path,
                    f'Requirement present in both RENAMED and REMOVED: "{rename.old}"',
                )
            )
    if main is not None and main.is_file():
        current = {b.name: b for b in parse.requirements_section(parse.read(main)).blocks}
        renamed_from = {r.new: r.old for r in delta.renamed}
        renamed_away = {r.old for r in delta.renamed}
        for block in delta.modified:
            if block.name in renamed_away:
                continue  # already reported: MODIFIED names the old header
            old = _current_block(current, renamed_from, block.name)
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


def _fold(name: str) -> str:
    return re.sub(r"\s+", " ", name).lower()


def _current_block(
    current: dict[str, Block], renamed_from: dict[str, str], name: str
) -> Block | None:
    """The main spec's block a MODIFIED lands on, following renames back (A to B to C)."""
    seen: set[str] = set()
    key: str | None = name
    while key is not None and key not in seen:
        if key in current:
            return current[key]
        seen.add(key)
        key = renamed_from.get(key)
    return None


def _dry_run(cap: str, change: str, text: str, main: Path) -> list[Issue]:
    """What archive would refuse, reported ahead of time (INFO: it does not decide validity)."""
    from panther_spec import archive

    current = parse.read(main) if main.is_file() else None
    try:
        archive.build(cap, change, text, current)
    except archive.ApplyError as exc:
        return [Issue("INFO", f"{cap}/spec.md", f"Archive would refuse this delta: {exc}")]
    return []


CODE_COLUMN = 4  # CommonMark: four columns of indent make a line code, not a list item
RENDERED_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)")


def tasks_issues(change: Path) -> list[Issue]:
    """A tasks.md with list items but no checkbox counts as no work at all: say where."""
    tasks = change / "tasks.md"
    if not tasks.is_file():
        return []
    text = parse.read(tasks)
    if parse.tasks(text):
        return []
    line = _first_rendered_list_item(text.split("\n"))
    if line is None:
        return []
    return [
        Issue(
            "WARNING",
            "tasks.md",
            "No line of tasks.md is a checkbox, so this change "
            'counts as 0 tasks; write tasks as "- [ ] 1.1 ...".',
            line,
        )
    ]


def _first_rendered_list_item(lines: list[str]) -> int | None:
    """The first list item a reader sees: not in front matter, a comment, a fence or code."""
    start = 0
    if lines and re.fullmatch(r"-{3}\s*", lines[0].removeprefix("\ufeff").rstrip()):
        start = next(
            (i + 1 for i in range(1, len(lines)) if re.fullmatch(r"-{3}\s*", lines[i].rstrip())),
            0,
        )
    fence: str | None = None
    in_comment = False
    for index in range(start, len(lines)):
        line = lines[index]
        if in_comment:
            in_comment = "-->" not in line
            continue
        marker = RENDERED_FENCE.match(line)
        if marker:
            run = marker.group(1)
            if fence is None:
                fence = run
            elif run[0] == fence[0] and len(run) >= len(fence) and not marker.group(2).strip():
                fence = None
            continue
        if fence is not None:
            continue
        if line.lstrip().startswith("<!--"):
            in_comment = "-->" not in line[line.index("<!--") + 4 :]
            continue
        if parse.LIST_ITEM.match(line) and _indent(line) < CODE_COLUMN:
            return index + 1
    return None


def _indent(line: str) -> int:
    column = 0
    for char in line:
        if char == " ":
            column += 1
        elif char == "\t":
            column += CODE_COLUMN - column % CODE_COLUMN
        else:
            break
    return column


SCALARS: dict[str, bool | None] = {"true": True, "True": True, "TRUE": True, "false": False}
SCALARS |= {"False": False, "FALSE": False, "null": None, "~": None, "": None}


def _flat_yaml(text: str) -> dict[str, object] | None:
    """The top-level keys of a small YAML mapping (None where it is not one): scalars are read,
    nested lists and maps are kept as a marker of their presence."""
    found: dict[str, object] = {}
    key: str | None = None
    for line in parse.normalise(text).split("\n"):
        if not line.strip() or line.lstrip().startswith("#") or line.strip() == "---":
            continue
        if line.startswith((" ", "\t", "-")):
            if key is None:
                return None
            found[key] = [line.strip()]  # a nested value: present, not a scalar
            continue
        match = re.match(r"^(['\"]?)([^'\":#]+)\1\s*:(?:\s+(.*))?$", line)
        if not match:
            return None
        key, raw = match.group(2).strip(), re.sub(r"\s+#.*$", "", match.group(3) or "").strip()
        if raw[:1] in ("'", '"'):
            found[key] = raw[1:-1] if len(raw) > 1 and raw[-1] == raw[0] else None
            if found[key] is None:
                return None
        else:
            found[key] = SCALARS.get(raw, raw)
    return found


def _metadata_problem(doc: dict[str, object]) -> str | None:
    schema = doc.get("schema")
    if not isinstance(schema, str) or not schema:
        return "schema: a schema name is required"
    created = doc.get("created")
    if created is not None and not (
        isinstance(created, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", created)
    ):
        return "created: must be YYYY-MM-DD"
    for flag in ("skip_specs", "retire_capabilities"):
        if flag in doc and not isinstance(doc[flag], bool):
            return f"{flag}: must be true or false"
    return None


def metadata_problem(change: Path) -> str | None:
    """Why the change's .openspec.yaml cannot be loaded at all (status refuses such a change)."""
    path = change / ".openspec.yaml"
    if not path.exists():
        return None
    try:
        doc = _flat_yaml(parse.read(path))
    except OSError as exc:
        return f"the metadata file cannot be read ({exc.strerror})"
    if doc is None:
        return "the metadata file is not valid YAML"
    return _metadata_problem(doc)


def marker(change: Path, key: str) -> tuple[bool, str | None]:
    """Whether .openspec.yaml sets the boolean `key`, and why it cannot be honored if so.

    As OpenSpec decides: honored only when the whole file is valid change metadata whose
    schema exists; a mention in a file that is not (or of a value that is not a boolean)
    cannot be honored, and says so rather than being ignored.
    """
    path = change / ".openspec.yaml"
    if not path.exists():
        return False, None
    try:
        text = parse.read(path)
    except OSError as exc:
        return False, f"the metadata file cannot be read ({exc.strerror})"
    doc = _flat_yaml(text)
    if doc is None:
        mentioned = re.search(rf"^\s*(['\"]?){key}\1\s*:", text, re.M)
        return False, ("the file is not valid YAML" if mentioned else None)
    problem = _metadata_problem(doc)
    if problem is None:
        if doc.get(key) is not True:
            return False, None
        schema = str(doc["schema"])
        project = change.parent.parent  # openspec/
        if schema != "spec-driven" and not (project / "schemas" / schema / "schema.yaml").is_file():
            return False, f"schema: unknown schema '{schema}'"
        return True, None
    if key in doc and doc[key] is not False:
        return False, problem
    return False, None


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


GROUP_HEADING = re.compile(r"^ {0,3}##[ \t]+(\d+)\.(?:[ \t]|\r?$)")
LEVEL_TWO = re.compile(r"^ {0,3}##(?!#)(?:[ \t]+|[ \t]*\r?$)")
# 3.6a is an id of its own: the letters belong to the id, they do not make it another 3.6.
TASK_ID = re.compile(r"^(\d+(?:\.\d+)+(?:[A-Za-z]+)?)(?=\s|$)")


def task_numbering(change: Path) -> list[Issue]:
    """In `## N.` groups a task id starts with N and appears once (spec-driven schema).

    A task outside its group is reported as misplaced and, when the id was seen before,
    as a duplicate too: both are true and each needs its own fix.
    """
    tasks = change / "tasks.md"
    if not tasks.is_file():
        return []
    lines = parse.read(tasks).removeprefix("\ufeff").split("\n")
    if not any(GROUP_HEADING.match(line) for line in lines):
        return []
    issues: list[Issue] = []
    group: str | None = None
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if LEVEL_TWO.match(line):
            heading = GROUP_HEADING.match(line)
            group = heading.group(1) if heading else None
        match = parse.TASK.match(line) if group is not None else None
        task_id = TASK_ID.match(match.group(2).strip()) if match else None
        if group is None or task_id is None:
            continue
        ident = task_id.group(1)
        leading = ident.split(".")[0]
        if (leading.lstrip("0") or "0") != (group.lstrip("0") or "0"):
            issues.append(
                Issue(
                    "WARNING",
                    "tasks.md",
                    f'Task "{ident}" is under group {group}, but its number points to group '
                    f"{leading}: move it or renumber it.",
                    number,
                )
            )
        if ident in seen:
            issues.append(
                Issue(
                    "WARNING",
                    "tasks.md",
                    f'Task ID "{ident}" is used twice; it first appears on line {seen[ident]}.',
                    number,
                )
            )
        else:
            seen[ident] = number
    return issues


def has_files(specs: Path) -> bool:
    """Any visible file (or symlink) below specs/; one that cannot be read counts (fail closed)."""
    try:
        entries = list(os.scandir(specs))
    except FileNotFoundError:
        return False
    except OSError:
        return True
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_symlink() or entry.is_file(follow_symlinks=False):
            return True
        if entry.is_dir(follow_symlinks=False) and has_files(Path(entry.path)):
            return True
    return False


CHANGE_MARKERS = (".openspec.yaml", "proposal.md", "tasks.md", "design.md")
MAX_NESTING = 3


def looks_like_change(folder: Path) -> bool:
    return any((folder / m).is_file() for m in CHANGE_MARKERS) or has_files(folder / "specs")


def _subfolders(folder: Path) -> list[os.DirEntry[str]]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [e for e in entries if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]


def nested_changes(changes_dir: Path, name: str) -> list[str]:
    """Changes nested inside a folder of changes/ that is itself no change (a "namespace"):
    OpenSpec sees none of them, so the folder is reported instead of validated or archived."""
    folder = changes_dir / name
    if name == "archive" or name.startswith(".") or looks_like_change(folder):
        return []
    try:
        if any(
            not e.name.startswith(".") and not e.is_dir(follow_symlinks=False)
            for e in os.scandir(folder)
        ):
            return []
    except OSError:
        return []
    found: list[str] = []

    def collect(at: Path, prefix: str, depth: int) -> None:
        if depth > MAX_NESTING:
            return
        for entry in _subfolders(at):
            child = Path(entry.path)
            if looks_like_change(child):
                found.append(f"{prefix}/{entry.name}")
            else:
                collect(child, f"{prefix}/{entry.name}", depth + 1)

    collect(folder, name, 1)
    return sorted(found)


def nested_issue(nested: list[str], name: str) -> Issue:
    where = ", ".join(f"openspec/changes/{n}/" for n in nested)
    return Issue(
        "ERROR",
        "file",
        f'"{name}" is a folder around changes ({where}), which OpenSpec never sees: a change '
        f"must sit directly under openspec/changes/; rename each to a flat name such as "
        f'"{nested[0].replace("/", "-")}".',
    )


def validate_change(change: Path, main_specs: Path | None) -> list[Issue]:
    nested = nested_changes(change.parent, change.name)
    if nested:
        return [nested_issue(nested, change.name)]
    files, issues = delta_files(change)
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
    unread = unread_delta_files(change)
    issues += unread
    skip_specs, invalid = marker(change, "skip_specs")
    if invalid:
        issues.append(
            Issue(
                "ERROR",
                ".openspec.yaml",
                f"skip_specs cannot be honored: .openspec.yaml is not valid change metadata "
                f"({invalid}).",
            )
        )
    # Any file under specs/ contradicts the marker, delta or not: archive would drop it.
    conflict = skip_specs and has_files(change / "specs")
    if conflict:
        issues.append(
            Issue(
                "ERROR",
                "file",
                "skip_specs is set in .openspec.yaml but files exist under specs/; "
                "remove them or the marker.",
            )
        )
    misplaced = bool(unread) or (change / "specs" / "spec.md").is_file()
    if total == 0 and not misplaced:
        if skip_specs and not conflict:
            issues.append(
                Issue(
                    "INFO",
                    "file",
                    "skip_specs is set in .openspec.yaml: no spec-level change, "
                    "zero deltas accepted.",
                )
            )
        elif not skip_specs:
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
