"""`panther install` and `panther disk finish`: a machine installed from its host declaration."""

from __future__ import annotations

import argparse
import sys

from pantheros import manifest as manifests
from pantheros import ui
from pantheros.errors import ExitCode
from pantheros.storage import layout


def cmd_disk_finish(args: argparse.Namespace) -> int:
    # disko's hook gives the manifest on stdin (`--manifest -`): it needs no file of its own.
    if args.manifest == "-":
        manifest = manifests.loads(sys.stdin.read(), "<stdin>")
    else:
        manifest = manifests.load(args.manifest)
    layout.finish(manifest, args.device)
    if args.json:
        ui.emit_json({"device": args.device, "manifest": manifest.source, "host": manifest.host})
    else:
        ui.info(f"{args.device}: the layout of host {manifest.host} is complete")
    return ExitCode.OK
