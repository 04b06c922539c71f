"""`panther install` and `panther disk finish`: a machine installed from its host declaration."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass

from pantheros import manifest as manifests
from pantheros import process, ui
from pantheros.errors import ExitCode, Refused, ToolMissing, UsageError
from pantheros.install import anywhere, hostgen, plan, stage
from pantheros.install.plan import HostPlan
from pantheros.storage import layout


@dataclass(frozen=True)
class DiskFinish:
    manifest: str
    device: str
    json: bool


def cmd_disk_finish(args: DiskFinish) -> int:
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


def _password_hash_files(values: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        login, sep, path = value.partition("=")
        if not sep or not login or not path:
            raise UsageError(f"--password-hash {value!r}: give USER=FILE")
        if login in found:
            raise UsageError(f"--password-hash: {login} given twice")
        found[login] = path
    return found


def _show(
    host: HostPlan, options: anywhere.Options, entries: list[stage.Entry], argv: list[str]
) -> None:
    st = host.manifest.storage
    ui.result(f"panther install {host.host}: nixos-anywhere over SSH to {options.target}")
    ui.result(f"Disk on the target: {host.disk}")
    ui.result("  ERASED: its partition table and every partition and file system on it.")
    ui.result("Layout (disko, from pantheros.storage):")
    for line in plan.layout_lines(host.manifest):
        ui.result(f"  {line}")
    ui.result(
        f"Staged under {host.manifest.persist.mountpoint if host.manifest.persist else '/persist'}"
        " (copied onto the new system, as root, with these modes):"
    )
    for entry in entries:
        ui.result(f"  {entry.describe()}")
    report = anywhere.hardware_report_path(host, options.flake)
    if report:
        ui.result(f"Hardware report: nixos-facter's, written to {report} (commit it)")
    elif host.hardware_report:
        ui.result(f"Hardware report: {host.hardware_report} (there)")
    else:
        ui.result("Hardware report: none declared (the host's own hardware.nix)")
    if st.luks:
        ui.result(
            f"LUKS passphrase: sent to {host.luks_passphrase_file} on the installer for disko"
        )
    ui.result("Command:")
    ui.result(f"  {shlex.join(argv)}")


def _confirm(disk: str) -> None:
    """The user types the disk's id (its /dev/disk/by-id name) to go on."""
    name = os.path.basename(disk)
    print(
        f"Type the disk's id ({name}) to erase it and install: ",
        end="",
        file=sys.stderr,
        flush=True,
    )
    line = sys.stdin.readline()
    if not line.endswith("\n") or not sys.stdin.isatty():
        print(file=sys.stderr)  # the end of the answer's line, which no terminal echoed
    if line.strip() not in (name, disk):
        raise Refused(f"the disk's id was not typed ({name}): nothing was done")


@dataclass(frozen=True)
class Install:
    host: str
    target: str
    flake: str
    identity: str | None
    password_hash: list[str] | None
    disk_key: str | None
    age_key: str | None
    age_key_path: str | None
    dry_run: bool
    yes: bool
    json: bool


def cmd_install(args: Install) -> int:
    if not hostgen.NAME.fullmatch(args.host):
        raise UsageError(f"host name {args.host!r} is not a host of the flake (a hostName)")
    address = plan.check_target(args.target)
    if args.age_key_path and not args.age_key:
        raise UsageError("--age-key-path: give the key with --age-key FILE")
    options = anywhere.Options(flake=args.flake, target=args.target, identity=args.identity)
    sources = stage.Sources(
        password_hash_files=_password_hash_files(args.password_hash or []),
        disk_key_file=args.disk_key,
        age_key_file=args.age_key,
        age_key_path=args.age_key_path or stage.AGE_KEY_PATH,
    )
    host = plan.read(args.flake, args.host)
    logins = {f.login for f in host.manifest.first_boot.files if f.login}
    for login in sources.password_hash_files:
        if login not in logins:
            raise UsageError(
                f"--password-hash {login}=...: host {host.host} keeps no password hash of {login}"
            )
    if args.disk_key and host.luks_passphrase_file is None:
        raise UsageError(f"--disk-key: host {host.host} has no LUKS")
    stage.check_sources(sources)
    entries = stage.planned(host.manifest, sources, host.host)
    disk_key = f"{anywhere.STAGING}/disk.key" if host.luks_passphrase_file else None
    shown = anywhere.argv(host, options, entries, f"{anywhere.STAGING}/tree", disk_key)
    if args.json:
        ui.emit_json(
            {
                "host": host.host,
                "target": args.target,
                "disk": host.disk,
                "erased": host.disk,
                "layout": plan.layout_lines(host.manifest),
                "staged": [
                    {
                        "path": e.path,
                        "kind": e.kind,
                        "mode": f"{e.mode:04o}",
                        "user": e.user,
                        "group": e.group,
                        "chown": e.chown,
                        "source": e.source,
                    }
                    for e in entries
                ],
                "hardware_report": anywhere.hardware_report_path(host, args.flake),
                "argv": shown,
                "dry_run": args.dry_run,
            }
        )
    else:
        _show(host, options, entries, shown)
    if args.dry_run:
        return ExitCode.OK
    if shutil.which("nixos-anywhere") is None:
        raise ToolMissing(
            "nixos-anywhere is not installed: `nix shell nixpkgs#nixos-anywhere`, or "
            "`nix develop` in PantherOS's flake"
        )
    if not args.yes:
        _confirm(host.disk)
    with stage.private_directory() as directory:
        staged = stage.stage(
            directory,
            entries,
            sources,
            host=host.host,
            address=address,
            luks=host.luks_passphrase_file is not None,
            ask=stage.terminal_asker(),
        )
        argv = anywhere.argv(
            host,
            options,
            entries,
            str(staged.tree),
            str(staged.disk_key) if staged.disk_key else None,
        )
        process.run(argv, check=True, capture=False)
    ui.info(f"host {host.host} is installed on {args.target}; its SSH host key, for known_hosts:")
    for line in staged.known_hosts:
        ui.result(line)
    report = anywhere.hardware_report_path(host, args.flake)
    if report:
        ui.info(f"commit the hardware report: git add {report}")
    return ExitCode.OK
