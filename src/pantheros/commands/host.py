"""`panther host new NAME`: a PantherOS host of a flake."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pantheros import ui
from pantheros.errors import ExitCode
from pantheros.install import hostgen


@dataclass(frozen=True)
class HostNew:
    name: str
    disk: str
    role: str
    luks: bool
    user: str
    ssh_key: list[str] | None
    flake: str
    json: bool


def cmd_host_new(args: HostNew) -> int:
    keys = tuple(hostgen.read_ssh_key(path) for path in args.ssh_key or [])
    spec = hostgen.HostSpec(
        name=args.name,
        disk=args.disk,
        role=args.role,
        luks=args.luks,
        user=args.user,
        ssh_keys=keys,
    )
    written = hostgen.write(Path(args.flake), spec)
    if args.json:
        ui.emit_json(
            {"host": spec.name, "directory": str(written), "files": sorted(hostgen.render(spec))}
        )
    else:
        ui.info(f"wrote {written}/ (default.nix, hardware.nix, persistence.json)")
        ui.info(f"next: git add {written}, then panther install {spec.name} --target root@ADDRESS")
    return ExitCode.OK
