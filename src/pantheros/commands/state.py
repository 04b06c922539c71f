"""`panther diff` and `panther persist`: options, then what each prints."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pantheros import ui
from pantheros.errors import ExitCode, PantherError, UsageError
from pantheros.files import read_bytes
from pantheros.impermanence import blank, bootstep
from pantheros.machine import Machine
from pantheros.manifest.models import Design
from pantheros.state import diff, persist

MARKS = {
    diff.Kind.CREATED: "+",
    diff.Kind.DELETED: "-",
    diff.Kind.MODIFIED: "~",
    diff.Kind.METADATA: "m",
    diff.Kind.RENAMED: ">",
    diff.Kind.TIMES: "t",
}


def ignore_patterns(machine: Machine, extra: list[str], files: list[str]) -> list[diff.Ignore]:
    """--ignore patterns, --ignore-file files, and the machine's own diff-ignore file."""
    default = (
        machine.lab.directory / "diff-ignore" if machine.lab else Path("/etc/pantheros/diff-ignore")
    )
    sources = [Path(f) for f in files] + ([default] if default.exists() else [])
    patterns = [diff.Ignore(pattern, "--ignore") for pattern in extra]
    for source in sources:
        data = read_bytes(source, beneath=None, what="the ignore file")
        if data is None:
            raise UsageError(f"cannot read ignore file {source}: No such file or directory")
        # Byte for byte: a pattern may name a file whose name is not UTF-8, as diff shows it.
        lines = data.decode("utf-8", errors="surrogateescape").splitlines()
        patterns += [
            diff.Ignore(ln.strip(), str(source))
            for ln in lines
            if ln.strip() and not ln.lstrip().startswith("#")
        ]
    return patterns


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def _line(change: diff.Change) -> str:
    detail = f"  ({change.detail})" if change.detail else ""
    return f"{MARKS[change.kind]} {ui.printable(change.display)}{detail}"


def _as_json(change: diff.Change) -> dict[str, Any]:
    return {
        "path": change.display,
        "kind": change.kind.value,
        "type": change.type,
        "size": change.size,
        "detail": change.detail,
        "old_path": os.fsdecode(change.old_path) if change.old_path else None,
    }


def _left_out(excluded: diff.Excluded) -> str:
    shown = ui.printable(excluded.change.display)
    return f"left out: {MARKS[excluded.change.kind]} {shown}  ({ui.printable(excluded.why)})"


@dataclass(frozen=True)
class Diff:
    json: bool
    lines: bool  # --list
    times: bool
    show_excluded: bool
    ignore: list[str]
    ignore_file: list[str]
    method: str


def _helper() -> Path | None:
    """The boot step's helper, which reads the changed leaves of the trees in C (D157); None
    where it cannot be had (the diff then reads them in Python)."""
    try:
        return bootstep.artifact_dir() / bootstep.HELPER
    except PantherError:
        return None


def cmd_diff(machine: Machine, opts: Diff) -> int:
    st = machine.manifest.storage
    keep = diff.Filter(
        persisted=tuple(os.fsencode(p) for p in persist.declared_paths(machine)),
        mountpoints=tuple(os.fsencode(m) for m in st.mount_points(root=False)),
        patterns=tuple(ignore_patterns(machine, opts.ignore, opts.ignore_file)),
    )
    empty_design = machine.manifest.impermanence.design is Design.EMPTY_SUBVOLUME
    # Under the lock: the diff makes a temporary snapshot in the top level (and removes those
    # of killed diffs), and the boot step must not exchange the root meanwhile.
    with machine.lock(), machine.top_level() as top:
        # The diff is against the blank: one that changed hides what was planted in it.
        distrust = blank.problem(top, machine.manifest)
        result = diff.run(
            top,
            st.root.name,
            None if empty_design else st.blank_snapshot,
            method=opts.method,
            want_times=opts.times,
            keep=keep,
            helper=_helper(),
        )
    counts = Counter(c.kind.value for c in result.changes)
    code = ExitCode.OK
    if distrust is not None:
        ui.warn(f"this answer cannot be trusted: {distrust}")
        code = ExitCode.FAILURE
    if opts.json:
        ui.emit_json(
            {
                "trusted": distrust is None,
                "untrusted_because": distrust,
                "method": result.method,
                "summary": dict(counts),
                "hidden": result.hidden,
                "changes": [_as_json(c) for c in result.changes],
                **(
                    {"excluded": [{**_as_json(e.change), "why": e.why} for e in result.excluded]}
                    if opts.show_excluded
                    else {}
                ),
            }
        )
        return code
    if opts.lines:
        for change in result.changes:
            ui.result(_line(change))
        for excluded in result.excluded if opts.show_excluded else []:
            ui.result(_left_out(excluded))
        return code
    groups: dict[str, list[diff.Change]] = defaultdict(list)
    for change in result.changes:
        top_dir = "/" + ui.printable(change.display.lstrip("/").split("/", 1)[0])
        groups[top_dir].append(change)
    for top_dir, members in groups.items():
        tally = Counter(c.kind.value for c in members)
        words = ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
        size = sum(c.size for c in members if c.kind is not diff.Kind.DELETED)
        ui.result(ui.paint(f"{top_dir}  ({words}; {_human(size)})", "bold"))
        for change in members:
            ui.result(f"  {_line(change)}")
    if opts.show_excluded:
        for excluded in result.excluded:
            ui.result(_left_out(excluded))
    total = sum(counts.values())
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing"
    listed = "" if opts.show_excluded or not result.excluded else "; --show-excluded lists them"
    ui.info(
        f"{total} change(s) the next boot would erase: {summary} (method {result.method}; "
        f"{result.hidden} left out as persistent, managed or ignored{listed})"
    )
    return code


@dataclass(frozen=True)
class PersistAdd:
    paths: list[str]
    json: bool
    merge: bool
    host_file: str | None
    no_wait: bool


def cmd_persist_add(machine: Machine, opts: PersistAdd) -> int:
    host_file = persist.host_file_for(machine, opts.host_file)
    added = []
    for path in opts.paths:
        with machine.lock(wait=not opts.no_wait):
            entry = persist.add(machine, path, host_file, merge=opts.merge)
        added.append(
            {
                "path": entry.path,
                "kind": entry.kind,
                "user": entry.user,
                "group": entry.group,
                "mode": entry.mode,
                "recorded_in": str(host_file) if host_file is not None else None,
                # Without a host file, the lines to declare it with: the next boot needs them.
                "nix": persist.nix_lines(entry) if host_file is None else None,
            }
        )
        if opts.json:
            continue
        ui.info(
            f"{entry.path} is persistent ({entry.kind}, {entry.user}:{entry.group} {entry.mode})"
        )
        if host_file is not None:
            ui.info(f"recorded in {host_file}; the next rebuild declares it")
        else:
            ui.info("declare it in your NixOS configuration so the next boot keeps it:")
            ui.result(persist.nix_lines(entry))
    if opts.json:
        ui.emit_json(added)
    return ExitCode.OK


@dataclass(frozen=True)
class PersistRemove:
    path: str
    purge: bool
    host_file: str | None
    json: bool
    no_wait: bool


def cmd_persist_remove(machine: Machine, opts: PersistRemove) -> int:
    host_file = persist.host_file_for(machine, opts.host_file)
    with machine.lock(wait=not opts.no_wait):
        where = persist.locate(machine, opts.path)
        persist.remove(machine, opts.path, host_file, purge=opts.purge)
    if opts.json:
        ui.emit_json(
            {
                "path": where.path,
                "copy": str(where.copy),
                "copy_kept": os.path.lexists(where.copy),
                "host_file": str(host_file) if host_file is not None else None,
            }
        )
    return ExitCode.OK


@dataclass(frozen=True)
class PersistList:
    json: bool


def cmd_persist_list(machine: Machine, opts: PersistList) -> int:
    rows = persist.states(machine)
    if opts.json:
        ui.emit_json(
            [
                {
                    "path": r.entry.path,
                    "kind": r.entry.kind,
                    "user": r.entry.user,
                    "group": r.entry.group,
                    "mode": r.entry.mode,
                    "state": r.state,
                    "copy": str(r.where.copy),
                }
                for r in rows
            ]
        )
        return ExitCode.OK
    for r in rows:
        colour = "green" if r.state == "ok" else "yellow"
        ui.result(f"{ui.printable(r.entry.path):40} {r.entry.kind:9} {ui.paint(r.state, colour)}")
    return ExitCode.OK


def cmd_persist_stray(machine: Machine, opts: PersistList) -> int:
    persist_sub = machine.manifest.persist
    assert persist_sub is not None, "validated manifests have a persist subvolume"
    # As the machine sees them (/persist/note), not as paths inside persistent storage.
    found = [persist_sub.mountpoint.rstrip("/") + path for path in persist.strays(machine)]
    if opts.json:
        ui.emit_json(found)
    else:
        for path in found:
            ui.result(ui.printable(path))
        ui.info(f"{len(found)} path(s) in persistent storage that no entry declares")
    return ExitCode.OK
