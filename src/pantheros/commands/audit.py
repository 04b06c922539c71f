"""`panther audit`: exit 0 when nothing fails at or above --fail-on, 1 when something does, and
7 (inconclusive) when nothing does but fewer than half of the applicable checks were evaluated.

The machine, manifest and impermanence modules load btrfs and persistence machinery that a
machine without a manifest never uses, so they are imported only where a manifest is at hand.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pantheros import ui
from pantheros.audit import report
from pantheros.audit.checks import impermanence_findings, load_table, run_checks
from pantheros.audit.system import System
from pantheros.errors import ExitCode, ManifestError, UsageError

if TYPE_CHECKING:
    from pantheros.machine import Machine
    from pantheros.manifest import Manifest

MANIFEST_IN_TREE = "etc/pantheros/manifest.json"


def tree_manifest(system: System) -> Manifest | None:
    """The machine's own manifest, read inside its tree like every other file."""
    source = str(system.base / MANIFEST_IN_TREE)
    data = system.tree.read_bytes(MANIFEST_IN_TREE)
    if data is None:
        why = system.tree.problems.get(MANIFEST_IN_TREE, "missing")
        if why == "missing":
            return None
        raise ManifestError(source, "$", f"cannot read: {why}")
    from pantheros import manifest as manifests

    # The same parser as every manifest: deep nesting or a huge integer is one error line.
    return manifests.loads(data, source)


@dataclass(frozen=True)
class Audit:
    json: bool
    sarif: bool
    fix_snippet: bool
    output: str | None
    level: str | None
    fail_on: str
    manifest: str | None
    all: bool
    root: str | None


def _machine(opts: Audit, system: System) -> Machine | None:
    """The machine under --root (or /) when a manifest describes it."""
    loaded: Manifest | None
    if opts.manifest:
        from pantheros import manifest as manifests

        loaded = manifests.load(opts.manifest)
    else:
        loaded = tree_manifest(system)
    if loaded is None:
        return None
    from pantheros.machine import Machine

    return Machine(manifest=loaded, root=system.base)


def _again(lab: Machine | None, opts: Audit) -> str:
    """This audit as a command line, for the report's hints."""
    if lab is not None and lab.lab is not None:
        return f"panther audit --lab {shlex.quote(str(lab.lab.directory))}"
    return f"panther audit --root {shlex.quote(opts.root)}" if opts.root else "panther audit"


def cmd_audit(lab: Machine | None, opts: Audit) -> int:
    """lab: the machine of --lab, else None (the host, or the tree under --root)."""
    table = load_table()
    if opts.level is not None and opts.level not in table["levels"]:
        raise UsageError(f"unknown level {opts.level!r} (one of {', '.join(table['levels'])})")
    if lab is not None:
        assert lab.lab is not None
        base, live = lab.root, False
        if not base.is_dir():
            raise UsageError(f"the lab has no tree at {base} (panther lab up {lab.lab.directory})")
    else:
        base = Path(opts.root) if opts.root else Path("/")
        if not base.is_dir():
            raise UsageError(f"--root {base} is not a directory")
        live = opts.root is None or base.resolve() == Path("/")
    system = System(base=base, live=live)
    try:
        machine = lab or _machine(opts, system)
        manifest = machine.manifest if machine else None
        level = opts.level or (manifest.security.level if manifest else "baseline")
        waivers = manifest.security.waivers if manifest else {}
        findings = list(run_checks(system, level, waivers, table))
        if machine is None:
            findings += impermanence_findings("not a PantherOS machine (no manifest)")
        else:
            from pantheros.audit import impermanence

            findings += impermanence.run_checks(machine, system, waivers)
    finally:
        system.tree.close()
    context = {
        "target": "this machine" if live else str(base),
        "level": level,
        "manifest": manifest.source if manifest else None,
        "live": live,
    }
    if opts.fix_snippet:
        out = report.fix_snippet(findings).rstrip("\n")
    elif opts.sarif:
        out = json.dumps(report.as_sarif(findings, context, str(base.resolve())), indent=2)
    elif opts.json:
        out = json.dumps(report.as_json(findings, context), indent=2)
    else:
        out = "\n".join(report.text(findings, context, opts.all, command=_again(lab, opts)))
    # File names from a tree need not be UTF-8: show what cannot be printed as replacements.
    out = out.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    told = not (opts.output or opts.json or opts.sarif or opts.fix_snippet)
    if opts.output:
        try:
            Path(opts.output).write_text(out + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write the report to {opts.output}: {exc.strerror}") from None
    else:
        ui.result(out)
    for note in system.notes:
        ui.warn(note.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if report.failing(findings, opts.fail_on):
        return ExitCode.FAILURE
    if not report.coverage(findings).enough:
        if not told:  # the text report on the terminal says it already
            ui.warn("too little evidence to judge: fewer than half of the applicable checks ran")
        return ExitCode.INCONCLUSIVE
    return ExitCode.OK
