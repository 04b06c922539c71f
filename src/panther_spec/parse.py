"""Parsers of OpenSpec files, as the OpenSpec CLI (1.13.2) reads them.

Two parsers read main specs, as in OpenSpec: a section tree (for validate, show and list) in
which every direct child header of "Requirements" is a requirement, and a block parser (for
archive merges and the SHALL/MUST rule) that knows only `### Requirement:` headers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

HEADER = re.compile(r"^(#{1,6})\s+(.+)$")
REQ_HEADER = re.compile(r"^###\s*Requirement:\s*(.+)\s*$", re.I)
H2 = re.compile(r"^##\s+(.+)$")
H2_ANY = re.compile(r"^##\s+")
SHALL = re.compile(r"\b(SHALL|MUST)\b")
METADATA = re.compile(r"^\*\*[^*]+\*\*:")
DELTA_TITLES = {
    "added requirements": "ADDED",
    "modified requirements": "MODIFIED",
    "removed requirements": "REMOVED",
    "renamed requirements": "RENAMED",
}


def read(path: Path) -> str:
    """A file's text exactly (Path.read_text would turn CRLF into LF)."""
    return path.read_bytes().decode("utf-8", errors="replace")


def normalise(text: str) -> str:
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


FENCE_OPEN = re.compile(r"^\s*(`{3,}|~{3,})")
FENCE_CLOSE = re.compile(r"^\s*(`{3,}|~{3,})\s*$")


def fenced(lines: list[str]) -> list[bool]:
    """Whether each line is inside (or opens or closes) a fenced block.

    A fence closes only on a bare run of its own character at least as long as the opener,
    so a "```python" line inside a block is content, as OpenSpec reads it.
    """
    out = []
    fence: str | None = None
    for line in lines:
        if fence is None:
            opener = FENCE_OPEN.match(line)
            if opener:
                fence = opener.group(1)
            out.append(bool(opener))
            continue
        out.append(True)
        closer = FENCE_CLOSE.match(line)
        if closer and closer.group(1)[0] == fence[0] and len(closer.group(1)) >= len(fence):
            fence = None
    return out


def clean_name(text: str) -> str:
    """A header's name: trimmed, without an ATX closing run of #."""
    return re.sub(r"\s+#+\s*$", "", text).strip()


# The section tree


@dataclass
class Section:
    level: int
    title: str
    line: int  # 1-based
    # Every line up to the next header of this level or higher, children's lines included,
    # as OpenSpec reads a section (fenced lines marked with a leading NUL).
    content: list[str] = field(default_factory=list)
    children: list[Section] = field(default_factory=list)


HEADER_START = re.compile(r"^(#{1,6})\s+")


def sections(text: str) -> list[Section]:
    lines = normalise(text).split("\n")
    mask = fenced(lines)
    marked = ["\x00" + ln if inside else ln for ln, inside in zip(lines, mask, strict=True)]
    # Where each level's content ends: the next header (of any title, even an empty one)
    # at that level or higher.
    starts = [
        (i, len(m.group(1)))
        for i, ln in enumerate(lines)
        if not mask[i] and (m := HEADER_START.match(ln))
    ]
    roots: list[Section] = []
    stack: list[Section] = []
    for order, (index, _) in enumerate(starts):
        match = HEADER.match(lines[index])
        if not match:
            continue
        level = len(match.group(1))
        end = next((i for i, lv in starts[order + 1 :] if lv <= level), len(lines))
        section = Section(level, match.group(2).strip(), index + 1, marked[index + 1 : end])
        while stack and stack[-1].level >= level:
            stack.pop()
        (stack[-1].children if stack else roots).append(section)
        stack.append(section)
    return roots


def find(tree: list[Section], title: str) -> Section | None:
    for section in tree:
        if section.title.lower() == title:
            return section
        found = find(section.children, title)
        if found:
            return found
    return None


HEADER_LINE = re.compile(r"^#{1,6}\s")
SCENARIO_END = re.compile(r"^#{1,4}\s")  # a scenario's body runs to the next header up to ####


def body_text(lines: list[str]) -> str:
    """A requirement's text: its non-blank, unfenced lines up to the first header; metadata
    lines (**ID**: ...) count only when there is nothing else."""
    prose: list[str] = []
    metadata: list[str] = []
    for line in lines:
        if line.startswith("\x00"):
            continue
        if HEADER_LINE.match(line):
            break
        if line.strip():
            (metadata if METADATA.match(line.strip()) else prose).append(line.strip())
    return "\n".join(prose or metadata)


def raw_text(lines: list[str]) -> str:
    return "\n".join(ln[1:] if ln.startswith("\x00") else ln for ln in lines).strip()


@dataclass
class Requirement:
    name: str
    text: str
    scenarios: list[str]  # raw texts
    line: int


@dataclass
class Spec:
    overview: str
    overview_line: int
    requirements: list[Requirement]


class SpecError(Exception):
    pass


def parse_spec(text: str) -> Spec:
    tree = sections(text)
    purpose = find(tree, "purpose")
    requirements = find(tree, "requirements")
    if purpose is None or not raw_text(purpose.content):
        raise SpecError("Spec must have a Purpose section")
    if requirements is None:
        raise SpecError("Spec must have a Requirements section")
    reqs = []
    for child in requirements.children:
        name = child.title
        name = re.sub(r"^Requirement:\s*", "", name, flags=re.I).strip()
        text = body_text(child.content) or child.title
        scenarios = [raw_text(s.content) for s in child.children if raw_text(s.content)]
        reqs.append(Requirement(name, text, scenarios, child.line))
    return Spec(raw_text(purpose.content), purpose.line, reqs)


# Structure of a main spec

STRUCTURE_REQ_HEADER = re.compile(r"^###\s+Requirement:\s*(.+)\s*$", re.I)
DELTA_HEADER = re.compile(r"^##\s+(ADDED|MODIFIED|REMOVED|RENAMED)\s+Requirements\s*$", re.I)


@dataclass(frozen=True)
class Flaw:
    """A structural flaw of a main spec: it makes requirements invisible or ambiguous."""

    line: int
    header: str
    message: str


def structure_flaws(text: str) -> list[Flaw]:
    """Delta headers, requirement headers outside ## Requirements, repeated requirement names.

    Archive refuses to update a spec with any of these, because a merge by name could keep
    one block of a repeated name and silently drop the other.
    """
    lines = normalise(text).split("\n")
    mask = fenced(lines)
    visible = ["" if inside else line for line, inside in zip(lines, mask, strict=True)]
    start = next(
        (i for i, ln in enumerate(visible) if re.match(r"^##\s+Requirements\s*$", ln, re.I)), None
    )
    end = len(visible)
    if start is not None:
        end = next((i for i in range(start + 1, len(visible)) if H2_ANY.match(visible[i])), end)
    flaws: list[Flaw] = []
    first: dict[str, int] = {}
    for index, line in enumerate(visible):
        header = line.strip()
        if not header:
            continue
        if DELTA_HEADER.match(line):
            flaws.append(
                Flaw(
                    index + 1,
                    header,
                    f'Main spec has the delta header "{header}"; delta headers belong in a '
                    "change's specs/<capability>/spec.md and cut the Requirements section short.",
                )
            )
            continue
        match = STRUCTURE_REQ_HEADER.match(line)
        if not match:
            continue
        if start is None or not start < index < end:
            flaws.append(
                Flaw(
                    index + 1,
                    header,
                    f'Requirement header "{header}" lies outside the ## Requirements section, '
                    "so no command sees it; move it into that section.",
                )
            )
            continue
        name = clean_name(match.group(1))
        if name in first:
            flaws.append(
                Flaw(
                    index + 1,
                    header,
                    f'Requirement header "{header}" repeats the one on line {first[name]}; '
                    "give each requirement a name of its own.",
                )
            )
        else:
            first[name] = index + 1
    return flaws


# The block parser


@dataclass
class Block:
    name: str
    raw: str
    line: int  # of the header, 1-based

    @property
    def header(self) -> str:
        return self.raw.split("\n", 1)[0]


@dataclass
class RequirementsSection:
    before: str
    header_line: str
    preamble: str
    blocks: list[Block]
    after: str
    found: bool


def requirements_section(text: str) -> RequirementsSection:
    lines = normalise(text).split("\n")
    mask = fenced(lines)
    start = next(
        (
            i
            for i, ln in enumerate(lines)
            if not mask[i] and re.match(r"^##\s+Requirements\s*$", ln, re.I)
        ),
        None,
    )
    if start is None:
        return RequirementsSection(normalise(text), "", "", [], "", False)
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if not mask[i] and H2.match(lines[i]) and not lines[i].startswith("###")
        ),
        len(lines),
    )
    body = lines[start + 1 : end]
    body_mask = mask[start + 1 : end]
    blocks: list[Block] = []
    preamble: list[str] = []
    current: list[str] | None = None
    current_line = 0
    for offset, (line, inside) in enumerate(zip(body, body_mask, strict=True)):
        match = None if inside else REQ_HEADER.match(line)
        if match:
            if current is not None:
                blocks.append(_block(current, current_line))
            current, current_line = [line], start + 2 + offset
        elif current is None:
            preamble.append(line)
        else:
            current.append(line)
    if current is not None:
        blocks.append(_block(current, current_line))
    return RequirementsSection(
        "\n".join(lines[:start]),
        lines[start],
        "\n".join(preamble).strip(),
        blocks,
        "\n".join(lines[end:]),
        True,
    )


def _block(lines: list[str], line: int) -> Block:
    match = REQ_HEADER.match(lines[0])
    assert match
    return Block(clean_name(match.group(1)), "\n".join(lines).rstrip(), line)


def block_body(block: Block) -> str:
    """The lines after the header up to the next header, for the SHALL/MUST rule."""
    lines = block.raw.split("\n")[1:]
    mask = fenced(lines)
    return body_text(
        ["\x00" + ln if inside else ln for ln, inside in zip(lines, mask, strict=True)]
    )


def scenario_names(block: Block, counted_only: bool = True) -> list[str]:
    """Names of the #### headers in a block (those with a body, when counted_only)."""
    lines = block.raw.split("\n")
    mask = fenced(lines)
    names: list[str] = []
    for index, line in enumerate(lines):
        if mask[index] or not re.match(r"^####\s+", line):
            continue
        name = re.sub(r"^Scenario:\s*", "", clean_name(line[4:].strip()), flags=re.I).strip()
        body = []
        for later in range(index + 1, len(lines)):
            if not mask[later] and SCENARIO_END.match(lines[later]):
                break
            if lines[later].strip():
                body.append(lines[later])
        if body or not counted_only:
            names.append(name)
    return names


def missing_scenarios(current: list[str], new: list[str]) -> list[str]:
    """Scenario names of current that new lacks (as a multiset: duplicates count)."""
    left = list(new)
    missing = []
    for name in current:
        if name in left:
            left.remove(name)
        else:
            missing.append(name)
    return missing


# Delta specs


@dataclass
class Rename:
    old: str
    new: str
    line: int


@dataclass
class Delta:
    added: list[Block] = field(default_factory=list)
    modified: list[Block] = field(default_factory=list)
    removed: list[tuple[str, int]] = field(default_factory=list)
    renamed: list[Rename] = field(default_factory=list)
    purpose: str | None = None
    sections: list[str] = field(default_factory=list)  # delta section kinds found, in order
    ignored_headers: list[tuple[int, str, str]] = field(default_factory=list)  # line, text, section
    stray: list[tuple[int, str, str | None]] = field(default_factory=list)  # line, name, section
    unpaired: list[tuple[int, str, str]] = field(default_factory=list)  # line, FROM|TO, name

    @property
    def count(self) -> int:
        return len(self.added) + len(self.modified) + len(self.removed) + len(self.renamed)


# Unlike a header, these list forms are case-sensitive in OpenSpec: "from:" is not a rename.
REMOVED_BULLET = re.compile(r"^\s*[-*+]\s*`?###\s*Requirement:\s*(.+?)`?\s*$")
FROM = re.compile(r"^\s*[-*+]?\s*FROM:\s*`?###\s*Requirement:\s*(.+?)`?\s*$")
TO = re.compile(r"^\s*[-*+]?\s*TO:\s*`?###\s*Requirement:\s*(.+?)`?\s*$")


def parse_delta(text: str) -> Delta:
    lines = normalise(text).split("\n")
    mask = fenced(lines)
    delta = Delta()
    kind: str | None = None
    title: str | None = None
    block: list[str] | None = None
    block_line = 0
    purpose: list[str] | None = None
    pending_from: tuple[str, int] | None = None

    def close() -> None:
        nonlocal block
        if block is not None and kind in ("ADDED", "MODIFIED"):
            target = delta.added if kind == "ADDED" else delta.modified
            target.append(_block(block, block_line))
        block = None

    for number, (line, inside) in enumerate(zip(lines, mask, strict=True), 1):
        h2 = None if inside else H2.match(line)
        if h2 and not line.startswith("###"):
            close()
            if pending_from:
                delta.unpaired.append((pending_from[1], "FROM", pending_from[0]))
                pending_from = None
            title = h2.group(1).strip()
            kind = DELTA_TITLES.get(title.lower())
            purpose = [] if title.lower() == "purpose" and delta.purpose is None else None
            if kind:
                delta.sections.append(kind)
            continue
        if purpose is not None and not (not inside and line.startswith("#")):
            purpose.append(line)
            delta.purpose = "\n".join(purpose).strip()
            continue
        req = None if inside else REQ_HEADER.match(line)
        if kind in ("ADDED", "MODIFIED"):
            if req:
                close()
                block, block_line = [line], number
            elif not inside and re.match(r"^###\s+\S", line):
                # Not a requirement header: reported, and (as in OpenSpec) kept in the block
                # it interrupts rather than ending it.
                delta.ignored_headers.append((number, line[3:].strip(), title or ""))
                if block is not None:
                    block.append(line)
            elif block is not None:
                block.append(line)
        elif kind == "REMOVED":
            if req:
                delta.removed.append((clean_name(req.group(1)), number))
            elif (bullet := REMOVED_BULLET.match(line)) and not inside:
                delta.removed.append((clean_name(bullet.group(1)), number))
        elif kind == "RENAMED" and not inside:
            if m := FROM.match(line):
                if pending_from:
                    delta.unpaired.append((pending_from[1], "FROM", pending_from[0]))
                pending_from = (clean_name(m.group(1)), number)
            elif m := TO.match(line):
                if pending_from:
                    delta.renamed.append(
                        Rename(pending_from[0], clean_name(m.group(1)), pending_from[1])
                    )
                    pending_from = None
                else:
                    delta.unpaired.append((number, "TO", clean_name(m.group(1))))
        elif req:
            delta.stray.append((number, clean_name(req.group(1)), title))
    close()
    if pending_from:
        delta.unpaired.append((pending_from[1], "FROM", pending_from[0]))
    delta.unpaired.sort()
    return delta


# Tasks

TASK = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s*\[(?:\s*([^\]\s]?)\s*\](?![(\[])|\s+\])\s*(.*)")
LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+\S")


@dataclass(frozen=True)
class Task:
    line: int  # 1-based
    done: bool
    description: str


def tasks(text: str) -> list[Task]:
    """Every checkbox line, fenced or not: OpenSpec counts a checkbox in a code block as work,
    so that no rule about which fence is real can hide an unfinished task from archive."""
    found = []
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        match = TASK.match(line)
        if match:
            found.append(
                Task(number, (match.group(1) or "").lower() == "x", match.group(2).strip())
            )
    return found


def task_counts(text: str) -> tuple[int, int]:
    """(completed, total) checkboxes."""
    found = tasks(text)
    return sum(t.done for t in found), len(found)
