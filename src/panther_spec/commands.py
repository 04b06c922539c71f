"""`panther spec`: list, show, validate, archive, new and diff over an OpenSpec tree.

Arguments and `--json` shapes follow the OpenSpec CLI 1.13.2, so either tool can be used on the
same tree. Exit codes: 0 success, 1 invalid items, unknown items or a refused archive.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from panther_spec import archive as merge
from panther_spec import parse, ui, validate
from panther_spec.errors import BAD_INPUT, ExitCode, SpecError, UsageError
from panther_spec.validate import Issue


def find_root(start: Path) -> Path | None:
    for folder in [start, *start.parents]:
        candidate = folder / "openspec"
        if candidate.is_dir() and any(
            (candidate / name).exists() for name in ("specs", "changes", "config.yaml")
        ):
            return folder
    return None


class Tree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.openspec = root / "openspec"
        self.specs_dir = self.openspec / "specs"
        self.changes_dir = self.openspec / "changes"

    def root_json(self) -> dict[str, str]:
        return {"path": str(self.root), "source": "nearest"}

    def specs(self) -> list[str]:
        if not self.specs_dir.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(self.specs_dir):
            dirnames[:] = [
                d
                for d in dirnames
                if not d.startswith(".") and not os.path.islink(os.path.join(dirpath, d))
            ]
            if "spec.md" in filenames and Path(dirpath) != self.specs_dir:
                found.append("/".join(Path(dirpath).relative_to(self.specs_dir).parts))
        return sorted(found)

    def changes(self) -> list[str]:
        if not self.changes_dir.is_dir():
            return []
        # A symlink is no change (OpenSpec reads directory entries, not their targets).
        return sorted(
            e.name
            for e in os.scandir(self.changes_dir)
            if e.is_dir(follow_symlinks=False)
            and e.name != "archive"
            and not e.name.startswith(".")
        )

    def spec_file(self, spec_id: str) -> Path:
        return self.specs_dir / spec_id / "spec.md"

    def requirement_count(self, spec_id: str) -> int:
        """How many requirements a spec has; 0 for one that does not parse (as OpenSpec counts)."""
        try:
            return len(parse.parse_spec(parse.read(self.spec_file(spec_id))).requirements)
        except parse.SpecError:
            return 0


def _tree() -> Tree | None:
    root = find_root(Path.cwd())
    return Tree(root) if root else None


def fail(
    args: argparse.Namespace,
    code: str,
    message: str,
    fix: str | None = None,
    *,
    target: str | None = None,
    hint: str | None = None,
    extra: dict[str, Any] | None = None,
) -> int:
    """A spec command's error: OpenSpec's JSON status (beside extra keys) and exit 1 with --json,
    as OpenSpec's CLI does; else one `panther: error:` line, exit 2 for bad input (BAD_INPUT)."""
    status = {"severity": "error", "code": code, "message": message}
    status |= ({"target": target} if target else {}) | ({"fix": fix} if fix else {})
    if getattr(args, "json", False):
        ui.emit_json({**(extra or {}), "status": [status]})
        return ExitCode.FAILURE
    hint = hint or (fix[0].lower() + fix[1:].rstrip(".") if fix else None)
    exit_code = ExitCode.USAGE if code in BAD_INPUT else ExitCode.FAILURE
    raise SpecError(message.rstrip(".") + (f" ({hint})" if hint else ""), exit_code=exit_code)


def no_root(args: argparse.Namespace) -> int:
    message = "No OpenSpec root found from the current directory."
    fix = "Run openspec init to create a root here."
    hint = "`panther spec new CHANGE` starts one here, as does `openspec init`"
    return fail(args, "no_openspec_root", message, fix, target="openspec.root", hint=hint)


def _locale_key(item_id: str) -> tuple[str, str]:
    return (re.sub(r"[^0-9a-z]", "", item_id.lower()), item_id)


# validate


def _validate_item(tree: Tree, kind: str, item: str) -> list[Issue]:
    if kind == "spec":
        return validate.validate_spec_text(parse.read(tree.spec_file(item)))
    return validate.validate_change(tree.changes_dir / item, tree.specs_dir)


def cmd_validate(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    specs, changes = tree.specs(), tree.changes()
    targets: list[tuple[str, str]] = []
    if args.item:
        kinds = [k for k, pool in (("change", changes), ("spec", specs)) if args.item in pool]
        if args.type:
            kinds = [k for k in kinds if k == args.type]
        if not kinds:
            return fail(args, "unknown_item", f"Unknown item '{args.item}'.")
        if len(kinds) > 1:
            message = f"Ambiguous item '{args.item}' matches both a change and a spec."
            return fail(args, "ambiguous_item", message, "Pass --type change|spec.")
        targets = [(kinds[0], args.item)]
    else:
        everything = args.all or not (args.changes or args.specs)
        if everything and not args.all and not args.json and sys.stdin.isatty():
            message = "Nothing to validate. Try one of: --all, --changes, --specs, or an item name."
            return fail(args, "nothing_to_validate", message)
        if args.all or args.changes or everything:
            targets += [("change", c) for c in changes]
        if args.all or args.specs or everything:
            targets += [("spec", s) for s in specs]
    results: list[dict[str, Any]] = []
    for kind, item in targets:
        start = time.perf_counter()
        issues = _validate_item(tree, kind, item)
        results.append(
            {
                "id": item,
                "type": kind,
                "valid": validate.is_valid(issues, args.strict),
                "issues": [i.as_dict() for i in issues],
                "durationMs": round((time.perf_counter() - start) * 1000),
            }
        )
    results.sort(key=lambda r: _locale_key(r["id"]))
    failed = [r for r in results if not r["valid"]]
    if args.json:
        by_type: dict[str, dict[str, int]] = {}
        for r in results:
            entry = by_type.setdefault(r["type"], {"items": 0, "passed": 0, "failed": 0})
            entry["items"] += 1
            entry["passed" if r["valid"] else "failed"] += 1
        if args.changes and not args.all:
            by_type = {k: v for k, v in by_type.items() if k == "change"}
        summary = {
            "totals": {
                "items": len(results),
                "passed": len(results) - len(failed),
                "failed": len(failed),
            },
            "byType": by_type,
        }
        ui.emit_json(
            {"items": results, "summary": summary, "version": "1.0", "root": tree.root_json()}
        )
    else:
        for r in results:
            mark = "✓" if r["valid"] else "✗"
            stream = sys.stdout if r["valid"] else sys.stderr
            print(f"{mark} {r['type']}/{r['id']}", file=stream)
            for issue in r["issues"]:
                where = f"{issue['path']}" + (f":{issue['line']}" if "line" in issue else "")
                print(f"    [{issue['level']}] {where}: {issue['message']}", file=sys.stderr)
        ui.result(
            f"Totals: {len(results) - len(failed)} passed, {len(failed)} failed "
            f"({len(results)} items)"
        )
    return ExitCode.FAILURE if failed else ExitCode.OK


# list and show


def _last_modified(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
    return newest


def cmd_list(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    if args.specs:
        rows = [{"id": s, "requirementCount": tree.requirement_count(s)} for s in tree.specs()]
        if args.json:
            ui.emit_json({"specs": rows, "root": tree.root_json()})
        else:
            ui.result("Specs:")
            for row in rows:
                ui.result(f"  {row['id']:40} requirements {row['requirementCount']}")
        return ExitCode.OK
    changes: list[dict[str, Any]] = []
    for name in tree.changes():
        folder = tree.changes_dir / name
        tasks = folder / "tasks.md"
        done, total = parse.task_counts(parse.read(tasks)) if tasks.is_file() else (0, 0)
        status = "no-tasks" if total == 0 else "complete" if done == total else "in-progress"
        modified = dt.datetime.fromtimestamp(_last_modified(folder), dt.UTC)
        changes.append(
            {
                "name": name,
                "completedTasks": done,
                "totalTasks": total,
                "lastModified": modified.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "status": status,
            }
        )
    if getattr(args, "sort", "recent") == "recent":
        changes.sort(key=lambda c: c["lastModified"], reverse=True)
    if args.json:
        ui.emit_json({"changes": changes, "root": tree.root_json()})
    else:
        ui.result("Changes:")
        for c in changes:
            progress = (
                "No tasks"
                if c["status"] == "no-tasks"
                else "✓ Complete"
                if c["status"] == "complete"
                else f"{c['completedTasks']}/{c['totalTasks']} tasks"
            )
            ui.result(f"  {c['name']:40} {progress:12}  {c['lastModified'][:10]}")
    return ExitCode.OK


def _requirement_json(text: str, scenarios: list[str]) -> dict[str, Any]:
    return {"text": text, "scenarios": [{"rawText": s} for s in scenarios]}


def cmd_show(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    item = args.item
    is_change = item in tree.changes() and args.type != "spec"
    is_spec = item in tree.specs() and args.type != "change"
    if not (is_change or is_spec):
        return fail(args, "unknown_item", f"Unknown item '{item}'.")
    if is_spec and not is_change:
        text = parse.read(tree.spec_file(item))
        if not args.json:
            ui.result(text.rstrip("\n"))
            return ExitCode.OK
        try:
            spec = parse.parse_spec(text)
        except parse.SpecError as exc:
            return fail(args, "show_error", str(exc))
        reqs = spec.requirements
        if args.requirement:
            reqs = reqs[args.requirement - 1 : args.requirement]
        ui.emit_json(
            {
                "id": item,
                "title": item,
                "overview": spec.overview,
                "requirementCount": len(reqs),
                "requirements": [
                    _requirement_json(
                        r.text, [] if args.no_scenarios or args.requirements else r.scenarios
                    )
                    for r in reqs
                ],
                "metadata": {"version": "1.0.0", "format": "openspec"},
                "root": tree.root_json(),
            }
        )
        return ExitCode.OK
    folder = tree.changes_dir / item
    proposal = folder / "proposal.md"
    if not args.json:
        if not proposal.is_file():
            return fail(args, "no_proposal", f'Change "{item}" has no proposal.md yet.')
        ui.result(parse.read(proposal).rstrip("\n"))
        return ExitCode.OK
    deltas = _change_deltas(folder)
    title = item
    if proposal.is_file():
        for line in parse.normalise(parse.read(proposal)).split("\n"):
            if line.startswith("# "):
                heading = re.sub(r"^Change:\s*", "", line[2:].strip(), flags=re.I)
                title = heading if heading and heading.lower() != "proposal" else item
                break
    ui.emit_json(
        {
            "id": item,
            "title": title,
            "deltaCount": len(deltas),
            "deltas": deltas,
            "root": tree.root_json(),
        }
    )
    return ExitCode.OK


def _change_deltas(folder: Path) -> list[dict[str, Any]]:
    files, _ = validate.delta_files(folder)
    out: list[dict[str, Any]] = []
    for cap, path in files:
        delta = parse.parse_delta(parse.read(path))
        for kind, blocks in (("ADDED", delta.added), ("MODIFIED", delta.modified)):
            verb = "Add" if kind == "ADDED" else "Modify"
            for block in blocks:
                body = parse.block_body(block)
                req = _requirement_json(body, _scenario_texts(block))
                out.append(
                    {
                        "spec": cap,
                        "operation": kind,
                        "description": f"{verb} requirement: {body}",
                        "requirement": req,
                        "requirements": [req],
                    }
                )
        for name, _ in delta.removed:
            req = _requirement_json(name, [])
            out.append(
                {
                    "spec": cap,
                    "operation": "REMOVED",
                    "description": f"Remove requirement: {name}",
                    "requirement": req,
                    "requirements": [req],
                }
            )
        for rename in delta.renamed:
            out.append(
                {
                    "spec": cap,
                    "operation": "RENAMED",
                    "description": f'Rename requirement from "{rename.old}" to "{rename.new}"',
                    "rename": {"from": rename.old, "to": rename.new},
                }
            )
    return out


def _scenario_texts(block: parse.Block) -> list[str]:
    texts = []
    for section in parse.sections(block.raw):
        for child in section.children:
            text = parse.raw_text(child.content)
            if text:
                texts.append(text)
    return texts


# archive


def _archive_fail(
    args: argparse.Namespace, tree: Tree, code: str, message: str, fix: str | None = None
) -> int:
    return fail(args, code, message, fix, extra={"archive": None, "root": tree.root_json()})


def _needs_validation(folder: Path, files: list[tuple[str, Path]]) -> bool:
    """Whether archive validates the change first, as OpenSpec decides: when it has delta
    headers, or anything that archive would otherwise drop without a word (a specs/spec.md,
    a delta in a file never read, specs/ files beside skip_specs, a marker it cannot honor)."""
    if (folder / "specs" / "spec.md").is_file() or validate.unread_delta_files(folder):
        return True
    skip_specs, invalid = validate.marker(folder, "skip_specs")
    if invalid:
        return True
    if skip_specs:
        return validate.has_files(folder / "specs")
    return any(
        re.search(
            r"^##\s+(ADDED|MODIFIED|REMOVED|RENAMED)\s+Requirements", parse.read(p), re.M | re.I
        )
        for _, p in files
    )


def _unaccounted(text: str) -> list[str]:
    """Lines of a spec, other than its title and Purpose, that deleting it would lose."""
    section = parse.requirements_section(text)
    lines = parse.normalise(section.before).split("\n")
    leftovers: list[str] = []
    in_purpose = title_seen = False
    previous = ""
    for line, inside in zip(lines, parse.fenced(lines), strict=True):
        if not line.strip():
            previous = ""
            continue
        if not inside:
            heading = re.match(r"^ {0,3}##\s+(.+?)\s*$", line)
            setext = in_purpose and previous.strip() and re.match(r"^ {0,3}(=+|-+)\s*$", line)
            if heading:
                in_purpose = heading.group(1).strip().lower() == "purpose"
                leftovers += [] if in_purpose else [line.strip()]
                previous = line
                continue
            if setext or re.match(r"^ {0,3}<h[1-6]\b", line, re.I):
                leftovers.append((previous if setext else line).strip())
                in_purpose = False
                previous = line
                continue
            if re.match(r"^ {0,3}#\s+.+$", line):
                if title_seen or in_purpose:
                    leftovers.append(line.strip())
                    in_purpose = False
                title_seen = True
                previous = line
                continue
        previous = line
        if not in_purpose:
            leftovers.append(line.strip())
    for part in (section.preamble, section.after):
        leftovers += [ln.strip() for ln in part.split("\n") if ln.strip()]
    return leftovers


def _retirable(text: str, problems: list[Issue]) -> bool:
    """A rebuilt spec with nothing left but its title and Purpose, and no other fault."""
    return (
        not parse.requirements_section(text).blocks
        and not _unaccounted(text)
        and bool(problems)
        and all(i.path == "requirements" for i in problems)
    )


def _prune_empty(folder: Path, boundary: Path) -> None:
    """Remove emptied capability folders up to (not including) specs/, never through a link."""
    top = boundary.resolve()
    while not folder.is_symlink() and folder.resolve().is_relative_to(top):
        if folder.resolve() == top:
            return
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def cmd_archive(args: argparse.Namespace) -> int:
    tree = _tree()
    if tree is None:
        return no_root(args)
    change = args.change
    if not change:
        return _archive_fail(
            args, tree, "archive_change_name_required", "A change name is required."
        )
    folder = tree.changes_dir / change
    if "/" in change or change in ("", ".", ".."):
        return _archive_fail(
            args,
            tree,
            "archive_change_name_invalid",
            f"Change name '{change}' is not a folder name.",
        )
    if folder.is_symlink():
        return _archive_fail(
            args, tree, "archive_change_symlink", f"Change '{change}' is a symlink."
        )
    if change not in tree.changes():
        available = ", ".join(tree.changes()) or "none"
        return _archive_fail(
            args,
            tree,
            "archive_change_not_found",
            f"Change '{change}' not found. Available changes: {available}",
        )
    nested = validate.nested_changes(tree.changes_dir, change)
    if nested:
        return _archive_fail(
            args,
            tree,
            "archive_change_is_namespace_folder",
            validate.nested_issue(nested, change).message,
        )
    files, _ = validate.delta_files(folder)
    if args.validate and _needs_validation(folder, files):
        errors = [i for i in validate.validate_change(folder, None) if i.level == "ERROR"]
        if errors:
            return _archive_fail(
                args,
                tree,
                "archive_validation_failed",
                "Validation failed: " + "; ".join(i.message for i in errors),
            )
    if not args.validate and not args.yes:
        return _archive_fail(
            args,
            tree,
            "archive_confirmation_required",
            "Skipping validation needs confirmation: give --yes too.",
        )
    tasks = folder / "tasks.md"
    done, total = parse.task_counts(parse.read(tasks)) if tasks.is_file() else (0, 0)
    if total > done and not args.yes:
        return _archive_fail(
            args,
            tree,
            "archive_tasks_incomplete",
            f"{total - done} incomplete task(s) found for change '{change}'.",
        )
    name = (
        change
        if re.match(r"^\d{4}-\d{2}-\d{2}-", change)
        else f"{time.strftime('%Y-%m-%d')}-{change}"
    )
    destination = tree.changes_dir / "archive" / name
    if destination.exists():
        return _archive_fail(
            args, tree, "archive_target_exists", f"Archive '{name}' already exists."
        )
    totals = {"added": 0, "modified": 0, "removed": 0, "renamed": 0}
    warnings: list[str] = []
    writes: list[tuple[Path, str]] = []
    retirements: list[Path] = []
    retire = args.validate and validate.marker(folder, "retire_capabilities")[0]
    if not args.skip_specs and files:
        if not args.yes:
            return _archive_fail(
                args,
                tree,
                "archive_confirmation_required",
                "Spec updates need confirmation: give --yes.",
            )
        for cap, path in files:
            target = tree.spec_file(cap)
            current = parse.read(target) if target.is_file() else None
            try:
                applied = merge.build(cap, change, parse.read(path), current)
            except merge.ApplyError as exc:
                return _archive_fail(
                    args,
                    tree,
                    "archive_spec_update_failed",
                    str(exc),
                    "Fix the change delta specs and rerun. No files were changed.",
                )
            warnings += applied.warnings
            if not applied.changed:
                continue
            problems = [i for i in validate.validate_spec_text(applied.text) if i.level == "ERROR"]
            if (
                retire
                and applied.removed
                and target.is_file()
                and _retirable(applied.text, problems)
            ):
                totals["removed"] += applied.removed
                retirements.append(target)
                warnings.append(
                    f"{cap} - capability retired (retire_capabilities): its last requirement was "
                    f"removed, so {target.relative_to(tree.root)} was deleted."
                )
                continue
            if problems:
                return _archive_fail(
                    args,
                    tree,
                    "archive_spec_validation_failed",
                    f"Rebuilt spec for '{cap}' failed validation. No files were changed.",
                )
            for key in totals:
                totals[key] += getattr(applied, key)
            writes.append((target, applied.text))
    for target, text in writes:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for target in retirements:
        target.unlink()
        _prune_empty(target.parent, tree.specs_dir)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, destination)
    if args.json:
        body: dict[str, Any] = {
            "change": change,
            "archivedAs": name,
            "path": str(destination),
            "specsUpdated": bool(writes or retirements),
        }
        if not args.skip_specs and files:
            body["totals"] = totals
        if warnings:
            body["warnings"] = warnings
        ui.emit_json({"archive": body, "root": tree.root_json()})
    else:
        for warning in warnings:
            ui.warn(warning)
        ui.result(
            f"Totals: + {totals['added']}, ~ {totals['modified']}, - {totals['removed']}, "
            f"→ {totals['renamed']}"
        )
        ui.result(f"Change '{change}' archived as '{name}'.")
    return ExitCode.OK


KEBAB_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
MAX_CHANGE_ID = 200  # archive prefixes a date, and a directory name has 255 bytes


def kebab_problem(what: str, name: str) -> str | None:
    """Why name is not a kebab-case id (OpenSpec's grammar for change ids), or None."""
    if not name:
        return f"{what} is empty"
    if len(name) > MAX_CHANGE_ID:
        return f"{what} is longer than {MAX_CHANGE_ID} characters"
    if KEBAB_ID.fullmatch(name):
        return None
    return (
        f"{what} {name!r} is not kebab-case: use lowercase letters, digits and single "
        "hyphens, not at the start or end (e.g. add-auth)"
    )


def capability_problem(capability: str) -> str | None:
    """A capability is a path of kebab-case segments (identity/user-auth), never more."""
    for segment in capability.split("/"):
        problem = kebab_problem("capability segment", segment)
        if problem:
            return f"capability {capability!r}: {problem}"
    return None


def _inside(path: Path, folder: Path) -> bool:
    """path stays within folder once every symlink on the way is resolved."""
    return path.resolve().is_relative_to(folder.resolve())


def cmd_new(args: argparse.Namespace) -> int:
    tree = _tree() or Tree(Path.cwd())
    cap = args.capability if args.capability is not None else args.change.split("-", 1)[-1]
    problem = kebab_problem("change id", args.change) or capability_problem(cap)
    if problem:
        raise UsageError(problem)
    folder = tree.changes_dir / args.change
    delta = folder / "specs" / Path(*cap.split("/")) / "spec.md"
    if not all(_inside(p, tree.openspec) for p in (tree.changes_dir, folder, delta.parent)):
        raise UsageError(f"{tree.changes_dir} leads outside {tree.openspec} through a symlink")
    try:
        tree.changes_dir.mkdir(parents=True, exist_ok=True)
        folder.mkdir()  # the claim: of two `new` runs with one id, one gets it
    except FileExistsError:
        return fail(args, "change_exists", f"Change '{args.change}' already exists.")
    except OSError as exc:
        raise UsageError(f"cannot create {folder}: {exc.strerror}") from None
    try:
        delta.parent.mkdir(parents=True)
        (folder / ".openspec.yaml").write_text(
            f"schema: spec-driven\ncreated: {time.strftime('%Y-%m-%d')}\n"
        )
        (folder / "proposal.md").write_text(
            f"# Change: {args.change}\n\n"
            "## Why\n<why this change is needed, 50 characters or more>\n\n"
            f"## What Changes\n- **{cap}**: <what changes>\n"
        )
        (folder / "tasks.md").write_text("## 1. Implementation\n- [ ] 1.1 <first task>\n")
        delta.write_text(
            "## ADDED Requirements\n### Requirement: <Name>\nThe system SHALL <behaviour>.\n\n"
            "#### Scenario: <name>\n- **WHEN** <condition>\n- **THEN** <outcome>\n"
        )
    except OSError as exc:
        # Half a scaffold would be taken for a change: what this run made goes again.
        shutil.rmtree(folder, ignore_errors=True)
        raise UsageError(f"cannot write the change {folder}: {exc.strerror}") from None
    if args.json:
        ui.emit_json(
            {
                "change": {
                    "id": args.change,
                    "path": str(folder),
                    "metadataPath": str(folder / ".openspec.yaml"),
                    "schema": "spec-driven",
                },
                "root": tree.root_json(),
            }
        )
    else:
        ui.info(
            f"Created {folder.relative_to(tree.root)}: proposal.md, tasks.md, specs/{cap}/spec.md"
        )
    return ExitCode.OK


def cmd_diff(args: argparse.Namespace) -> int:
    """The requirement-level effect of a change on the current specs, before archiving."""
    tree = _tree()
    if tree is None or args.change not in tree.changes():
        return fail(args, "unknown_change", f"Unknown change '{args.change}'.")
    files, _ = validate.delta_files(tree.changes_dir / args.change)
    report: list[dict[str, Any]] = []
    for cap, path in files:
        target = tree.spec_file(cap)
        current = parse.read(target) if target.is_file() else None
        try:
            applied = merge.build(cap, args.change, parse.read(path), current)
        except merge.ApplyError as exc:
            report.append({"spec": cap, "error": str(exc)})
            continue
        before = {b.name: b.raw.strip() for b in parse.requirements_section(current or "").blocks}
        after = {b.name: b.raw.strip() for b in parse.requirements_section(applied.text).blocks}
        renames = {r.old: r.new for r in parse.parse_delta(parse.read(path)).renamed}
        report.append(
            {
                "spec": cap,
                "new": current is None,
                "added": [n for n in after if n not in before and n not in renames.values()],
                "removed": [n for n in before if n not in after and n not in renames],
                "renamed": [{"from": o, "to": n} for o, n in renames.items() if n in after],
                "modified": [n for n in after if n in before and after[n] != before[n]],
                "totals": {
                    "added": applied.added,
                    "modified": applied.modified,
                    "removed": applied.removed,
                    "renamed": applied.renamed,
                },
                "warnings": applied.warnings,
            }
        )
    if args.json:
        ui.emit_json({"change": args.change, "specs": report})
        return ExitCode.OK
    for entry in report:
        if "error" in entry:
            ui.result(f"{entry['spec']}: cannot apply: {entry['error']}")
            continue
        ui.result(f"{entry['spec']}{' (new spec)' if entry['new'] else ''}:")
        for mark, key in (("+", "added"), ("~", "modified"), ("-", "removed")):
            for name in entry[key]:
                ui.result(f"  {mark} {name}")
        for rename in entry["renamed"]:
            ui.result(f"  > {rename['from']} -> {rename['to']}")
    return ExitCode.FAILURE if any("error" in e for e in report) else ExitCode.OK
