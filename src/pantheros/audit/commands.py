"""`panther audit`: exit 0 when nothing fails at or above --fail-on, 1 when something does."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pantheros import manifest as manifests
from pantheros import ui
from pantheros.audit import report
from pantheros.audit.checks import load_table, run_checks
from pantheros.audit.system import System
from pantheros.errors import ExitCode, UsageError


def cmd_audit(args: argparse.Namespace) -> int:
    table = load_table()
    if args.level is not None and args.level not in table["levels"]:
        raise UsageError(f"unknown level {args.level!r} (one of {', '.join(table['levels'])})")
    manifest = None
    if args.lab:
        from pantheros.machine import Machine

        machine = Machine.select(args.lab)
        manifest, base, live = machine.manifest, machine.root, False
    else:
        base = Path(args.root) if args.root else Path("/")
        if not base.is_dir():
            raise UsageError(f"--root {base} is not a directory")
        live = args.root is None or base.resolve() == Path("/")
        source = args.manifest or (None if args.root else manifests.HOST_MANIFEST)
        if source is None and args.root:
            source = base / "etc/pantheros/manifest.json"
        if args.manifest or (source is not None and Path(source).exists()):
            manifest = manifests.load(source)  # type: ignore[arg-type]
    level = args.level or (manifest.security.level if manifest else "baseline")
    waivers = manifest.security.waivers if manifest else {}
    system = System(base=base, live=live)
    findings = list(run_checks(system, level, waivers, table))
    context = {
        "target": "this machine" if live else str(base),
        "level": level,
        "manifest": manifest.source if manifest else None,
        "live": live,
    }
    if args.sarif:
        out = json.dumps(report.as_sarif(findings, context), indent=2)
    elif args.json:
        out = json.dumps(report.as_json(findings, context), indent=2)
    else:
        out = "\n".join(report.text(findings, context, args.all))
    if args.output:
        Path(args.output).write_text(out + "\n")
    else:
        ui.result(out)
    for note in system.notes:
        ui.warn(note)
    return ExitCode.FAILURE if report.failing(findings, args.fail_on) else ExitCode.OK
