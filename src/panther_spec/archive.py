"""Applying a change's deltas to the main specs, as `openspec archive` does (1.13.2).

Operations apply in the order RENAMED, REMOVED, MODIFIED, ADDED. Blocks keep their place
(renamed ones too); ADDED blocks go to the end of the Requirements section; the file is
recomposed with one blank line between parts and runs of blank lines collapsed outside fences.
Every target is rebuilt in memory and validated before any file is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from panther_spec import parse


class ApplyError(Exception):
    """The deltas cannot be applied; nothing is written."""


@dataclass
class Applied:
    text: str
    added: int = 0
    modified: int = 0
    removed: int = 0
    renamed: int = 0
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.modified or self.removed or self.renamed)


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name).strip().lower()


def build(cap: str, change_id: str, delta_text: str, current: str | None) -> Applied:
    delta = parse.parse_delta(delta_text)
    _prevalidate(cap, delta)
    if delta.count == 0:
        raise ApplyError(
            f"Delta parsing found no operations for {cap}. Provide "
            "ADDED/MODIFIED/REMOVED/RENAMED sections in change spec."
        )
    warnings: list[str] = []
    original = current
    if current is None:
        if delta.modified or delta.renamed:
            raise ApplyError(
                f"{cap}: target spec does not exist; only ADDED requirements are "
                "allowed for new specs."
            )
        if delta.removed:
            warnings.append(
                f"{cap} - {len(delta.removed)} REMOVED requirement(s) ignored for new "
                "spec (nothing to remove)."
            )
        purpose = delta.purpose or (
            f"TBD - created by archiving change {change_id}. Update Purpose after archive."
        )
        current = f"# {cap} Specification\n\n## Purpose\n{purpose}\n\n## Requirements\n"
        delta.removed = []
    flaws = parse.structure_flaws(current)
    if flaws:
        details = "; ".join(f"line {f.line}: {f.message}" for f in flaws)
        raise ApplyError(
            f"{cap}: target spec is structurally invalid; fix it before archiving: {details}"
        )
    section = parse.requirements_section(current)
    if not section.found:
        raise ApplyError(f"{cap}: target spec has no ## Requirements section")
    blocks = list(section.blocks)
    index = {b.name: i for i, b in enumerate(blocks)}
    result = Applied("", warnings=warnings)

    for rename in delta.renamed:
        if rename.old not in index:
            if rename.new in index:
                continue  # already renamed
            raise ApplyError(
                f'{cap} RENAMED failed for header "### Requirement: {rename.old}" - '
                "source not found"
            )
        if rename.new in index:
            raise ApplyError(
                f'{cap} RENAMED failed for header "### Requirement: {rename.new}" - '
                "target already exists"
            )
        position = index.pop(rename.old)
        old = blocks[position]
        body = old.raw.split("\n", 1)[1] if "\n" in old.raw else ""
        raw = f"### Requirement: {rename.new}" + ("\n" + body if body else "")
        blocks[position] = parse.Block(rename.new, raw, old.line)
        index[rename.new] = position
        result.renamed += 1

    for name, _ in delta.removed:
        if name not in index:
            near = [n for n in index if _key(n) == _key(name)]
            if near:
                raise ApplyError(
                    f'{cap} REMOVED failed for header "### Requirement: {name}" - '
                    f'not found, but "### Requirement: {near[0]}" exists'
                )
            warnings.append(
                f'{cap} - REMOVED requirement "{name}" is not in the current spec; '
                "treating it as already removed."
            )
            continue
        blocks[index.pop(name)] = None  # type: ignore[call-overload]
        result.removed += 1

    for block in delta.modified:
        if block.name not in index:
            raise ApplyError(
                f'{cap} MODIFIED failed for header "### Requirement: {block.name}" - not found'
            )
        old = blocks[index[block.name]]
        lost = parse.missing_scenarios(
            parse.scenario_names(old, counted_only=False),
            parse.scenario_names(block, counted_only=False),
        )
        if lost:
            raise ApplyError(
                f'{cap} MODIFIED failed for header "### Requirement: {block.name}" - '
                "current spec contains scenario(s) not present in the modified block"
            )
        if old.raw.strip() != block.raw.strip():
            blocks[index[block.name]] = block
            result.modified += 1

    for block in delta.added:
        if block.name in index:
            if blocks[index[block.name]].raw.strip() == block.raw.strip():
                continue
            raise ApplyError(
                f'{cap} ADDED failed for header "### Requirement: {block.name}" - already exists'
            )
        near = [n for n in index if _key(n) == _key(block.name)]
        if near:
            raise ApplyError(
                f'{cap} ADDED failed for header "### Requirement: {block.name}" - '
                "differs only in case or spacing from an existing one"
            )
        index[block.name] = len(blocks)
        blocks.append(block)
        result.added += 1

    kept = [b.raw.strip() for b in blocks if b is not None]
    body = "\n\n".join(([section.preamble] if section.preamble else []) + kept)
    parts = [section.before.rstrip(), section.header_line, body, section.after.strip()]
    result.text = collapse("\n\n".join(p for p in parts if p)).rstrip() + "\n"
    if original is not None and "\r\n" in original:
        result.text = result.text.replace("\n", "\r\n")  # keep the target's line endings
    return result


def collapse(text: str) -> str:
    """Runs of blank lines become one, except inside fences."""
    lines = text.split("\n")
    mask = parse.fenced(lines)
    out: list[str] = []
    for line, inside in zip(lines, mask, strict=True):
        if not inside and not line.strip() and out and not out[-1].strip():
            continue
        out.append(line)
    return "\n".join(out)


def _prevalidate(cap: str, delta: parse.Delta) -> None:
    for kind, names in (
        ("ADDED", [b.name for b in delta.added]),
        ("MODIFIED", [b.name for b in delta.modified]),
        ("REMOVED", [n for n, _ in delta.removed]),
    ):
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ApplyError(
                f"{cap} validation failed - duplicate requirement in {kind} for header "
                f'"### Requirement: {sorted(dupes)[0]}"'
            )
    if delta.unpaired:
        raise ApplyError(
            f"{cap} validation failed - RENAMED entry on line {delta.unpaired[0][0]} "
            "has no matching line"
        )
