"""`panther audit`: exit 0 when nothing fails at or above --fail-on, 1 when something does, and
7 (inconclusive) when nothing does but fewer than half of the applicable checks were evaluated.

The machine, manifest and impermanence modules load btrfs and persistence machinery that a
machine without a manifest never uses, so they are imported only where a manifest is at hand.
"""

from __future__ import annotations

import argparse
import json
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
    from pantheros import manifest as manifests

    source = str(system.base / MANIFEST_IN_TREE)
    data = system.tree.read_bytes(MANIFEST_IN_TREE)
    if data is None:
        why = system.tree.problems.get(MANIFEST_IN_TREE, "missing")
        if why == "missing":
            return None
        raise ManifestError(source, "$", f"cannot read: {why}")
    # The same parser as every manifest: deep nesting or a huge integer is one error line.
    return manifests.loads(data, source)


def _machine(args: argparse.Namespace, system: System) -> Machine | None:
    """The machine under --root (or /) when a manifest describes it."""
    loaded: Manifest | None
    if args.manifest:
        from pantheros import manifest as manifests

        loaded = manifests.load(args.manifest)
    else:
        loaded = tree_manifest(system)
    if loaded is None:
        return None
    from pantheros.machine import Machine

    return Machine(manifest=loaded, root=system.base)


def cmd_audit(args: argparse.Namespace) -> int:
    table = load_table()
    if args.level is not None and args.level not in table["levels"]:
        raise UsageError(f"unknown level {args.level!r} (one of {', '.join(table['levels'])})")
    lab = None
    if args.lab:
        from pantheros.machine import Machine

        lab = Machine.select(args.lab)
        base, live = lab.root, False
        if not base.is_dir():
            raise UsageError(f"the lab has no tree at {base} (panther lab up {args.lab})")
    else:
        base = Path(args.root) if args.root else Path("/")
        if not base.is_dir():
            raise UsageError(f"--root {base} is not a directory")
        live = args.root is None or base.resolve() == Path("/")
    system = System(base=base, live=live)
    try:
        machine = lab or _machine(args, system)
        manifest = machine.manifest if machine else None
        level = args.level or (manifest.security.level if manifest else "baseline")
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
    if args.fix_snippet:
        out = report.fix_snippet(findings).rstrip("\n")
    elif args.sarif:
        out = json.dumps(report.as_sarif(findings, context, str(base.resolve())), indent=2)
    elif args.json:
        out = json.dumps(report.as_json(findings, context), indent=2)
    else:
        out = "\n".join(report.text(findings, context, args.all))
    # File names from a tree need not be UTF-8: show what cannot be printed as replacements.
    out = out.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if args.output:
        try:
            Path(args.output).write_text(out + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write the report to {args.output}: {exc.strerror}") from None
    else:
        ui.result(out)
    for note in system.notes:
        ui.warn(note.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))
    if report.failing(findings, args.fail_on):
        return ExitCode.FAILURE
    if not report.coverage(findings).enough:
        ui.warn("too little evidence to judge: fewer than half of the applicable checks ran")
        return ExitCode.INCONCLUSIVE
    return ExitCode.OK
