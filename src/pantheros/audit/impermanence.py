"""Impermanence checks: is this machine really rolled back, and is its state really persistent?

They need the machine's btrfs top level (subvolid=5, mounted read-only for the duration), so
they run as root on the host (from the manifest) and on the lab; on an offline `--root` tree
there is no filesystem to ask and they are skipped for lack of evidence.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pantheros import btrfs, mounttable
from pantheros.audit import fixes
from pantheros.audit.checks import Finding, Status, impermanence_findings, waive
from pantheros.audit.system import System
from pantheros.errors import PantherError
from pantheros.impermanence import blank, retention
from pantheros.impermanence.oldroots import OldRoots
from pantheros.impermanence.rollback import RECORD_FILE, boot_id
from pantheros.impermanence.status import RollbackRecord
from pantheros.machine import Machine
from pantheros.manifest import Manifest
from pantheros.manifest.models import RECORD_DIR, Design, Role, Subvolume
from pantheros.state import persist

FRESH = ("fresh", "already-fresh")
NO_RECORD = "no rollback has been recorded"


@dataclass
class Facts:
    """What the checks look at, gathered once with the top level mounted."""

    machine: Machine
    system: System
    top: Path
    record: dict[str, Any] | None
    record_problem: str

    @property
    def manifest(self) -> Manifest:
        return self.machine.manifest

    @property
    def is_host(self) -> bool:
        return self.machine.lab is None

    def mount(self, mountpoint: str) -> mounttable.MountEntry | None:
        """The topmost mount at the machine's mountpoint, as this host sees it."""
        return mounttable.mount_at(self.machine.host_path(mountpoint))

    @property
    def persist(self) -> Subvolume:
        sub = self.manifest.persist
        assert sub is not None, "validated manifests have a persist subvolume"
        return sub

    @property
    def lab(self) -> str:
        """The lab's directory, quoted for a command line ("" on the host)."""
        return fixes.q(str(self.machine.lab.directory)) if self.machine.lab else ""

    def on(self, command: str) -> str:
        """command as it acts on this machine: with `--lab DIR` on the lab."""
        return f"{command} --lab {self.lab}" if self.lab else command

    @property
    def never_booted(self) -> bool:
        """A lab with no rollback recorded has not booted yet: there is no boot to judge."""
        return (
            self.machine.lab is not None
            and self.record is None
            and self.record_problem == (NO_RECORD)
        )

    @property
    def reboot(self) -> str:
        if self.lab:
            return f"panther lab reboot {self.lab} (a boot, as the initrd rolls the root back)"
        return "reboot: the initrd rolls the root back"

    def record_path(self) -> str:
        return f"{self.persist.mountpoint.rstrip('/')}/{RECORD_DIR}/{RECORD_FILE}"


def _root_fresh(facts: Facts, f: Finding) -> None:
    st = facts.manifest.storage
    if facts.never_booted:
        f.skip(f"the lab has not booted yet ({facts.reboot})")
        return
    f.nixos = [("pantheros.impermanence.enable", True)]
    f.plain_fix = facts.reboot
    mount = facts.mount("/")
    root_info = btrfs.subvolume_info(facts.top / st.root.name)
    if mount is None or mount.fstype != "btrfs":
        f.status, f.reason = Status.FAIL, "no btrfs filesystem is mounted as /"
        return
    subvolid = mount.option("subvolid")
    f.actual = f"{mount.root} (subvolume {subvolid})"
    if subvolid != str(root_info.id):
        f.status = Status.FAIL
        f.reason = f"/ is {mount.root}, not the root subvolume {st.root.name} ({root_info.id})"
        return
    if facts.manifest.impermanence.design is Design.BLANK_SNAPSHOT:
        blank_path = facts.top / st.blank_snapshot
        source = btrfs.subvolume_info(blank_path) if btrfs.is_subvolume(blank_path) else None
        if source is None or root_info.parent_uuid != source.uuid:
            f.status, f.reason = Status.FAIL, f"the root is not a snapshot of {st.blank_snapshot}"
            return
    elif root_info.parent_uuid is not None:
        f.status, f.reason = Status.FAIL, "the root is a snapshot, not a new empty subvolume"
        return
    record = facts.record
    if record is None:
        f.status, f.reason = Status.FAIL, f"no rollback record: {facts.record_problem}"
        return
    if record.get("root_id") not in (None, root_info.id):
        f.status = Status.FAIL
        f.reason = f"the last rollback made subvolume {record['root_id']}, / is {root_info.id}"
        return
    if facts.is_host and record.get("boot_id") != boot_id():
        f.status, f.reason = Status.FAIL, "no rollback ran this boot (the record is older)"
        return
    f.status = Status.PASS


def _blank(facts: Facts, f: Finding) -> None:
    if facts.manifest.impermanence.design is not Design.BLANK_SNAPSHOT:
        f.skip("the root starts from an empty subvolume: there is no blank", applicable=False)
        return
    name = facts.manifest.storage.blank_snapshot
    f.actual = name
    problem = blank.problem(facts.top, facts.manifest)
    f.status = Status.FAIL if problem else Status.PASS
    if problem:
        f.reason = problem
        points = sorted(facts.manifest.storage.mount_points(root=False))
        new = f"$top/{name}.new"
        f.nixos_note = "the blank is made once, at install: re-make it with the plain fix"
        # A blank holds the mount points and nothing else, as `panther disk format` makes it.
        f.plain_fix = (
            'top=$(mktemp -d) && mount -o subvolid=5 <the btrfs device> "$top" && '
            f'btrfs subvolume create "{new}" && '
            f'(cd "{new}" && mkdir -p {" ".join("." + p for p in points)}) && '
            f'btrfs subvolume delete "$top/{name}" && '
            f'btrfs subvolume snapshot -r "{new}" "$top/{name}" && '
            f'btrfs subvolume delete "{new}"; umount "$top"; '
            # The remade blank is a new subvolume: record it as the blank (D80).
            "panther blank bless --yes"
        )


def _old_roots(facts: Facts, f: Finding) -> None:
    f.nixos_note = "the pantheros-roots-gc timer applies pantheros.impermanence.retention"
    f.plain_fix = facts.on("panther roots gc")
    policy = facts.manifest.impermanence.retention
    roots, strays = OldRoots(facts.top, facts.manifest.storage).scan()
    writable = [r.name for r in roots if not r.info.readonly]
    vfs = os.statvfs(facts.top)
    free = 100.0 * vfs.f_bavail / vfs.f_blocks if vfs.f_blocks else None
    plan = retention.plan(
        [r.candidate() for r in roots],
        policy,
        time.time(),
        free_percent=free,
        total_bytes=vfs.f_blocks * vfs.f_frsize,
    )
    over = [d.root.name + f" ({d.reason})" for d in plan.decisions if not d.keep]
    f.actual = f"{len(roots)} old roots" + (f", {len(strays)} strays" if strays else "")
    problems = []
    if writable:
        problems.append("writable: " + ", ".join(writable))
        location = facts.manifest.storage.old_roots
        # $top: the btrfs top level, mounted with -o subvolid=5.
        f.plain_fix = "; ".join(
            f'btrfs property set -ts "$top"{fixes.q(f"/{location}/{n}")} ro true' for n in writable
        )
    if over:
        problems.append("beyond the retention policy: " + ", ".join(over))
    f.status = Status.FAIL if problems else Status.PASS
    f.reason = "; ".join(problems + plan.notes)


def _rollback(facts: Facts, f: Finding) -> None:
    f.location = facts.record_path()
    f.nixos_note = "read `journalctl -b -u pantheros-rollback`, fix what it names, reboot"
    f.plain_fix = facts.reboot
    record = facts.record
    if facts.never_booted:
        f.nixos_note = f.plain_fix = ""
        f.skip(f"the lab has not booted yet ({facts.reboot})")
        return
    if record is None:
        f.status, f.reason = Status.FAIL, facts.record_problem
        return
    result = str(record.get("result"))
    f.actual = result
    if result not in FRESH:
        f.status = Status.FAIL
        f.reason = {
            "dirty": f"the rollback failed ({record.get('error')}); the previous root was booted",
            "skipped": "the rollback was skipped (pantheros.norollback on the kernel command line)",
        }.get(result, f"unexpected result {result!r}")
        return
    if facts.is_host and record.get("boot_id") != boot_id():
        f.status, f.reason = Status.FAIL, "the record is from an earlier boot"
        return
    when = record.get("time")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "?"
    f.status, f.reason = Status.PASS, f"recorded {stamp}"


def _mounts(facts: Facts, f: Finding) -> None:
    st = facts.manifest.storage
    wanted = [s for s in st.subvolumes if s.role in (Role.PERSIST, Role.LOG)]
    problems, seen = [], []
    for sub in wanted:
        mount = facts.mount(sub.mountpoint)
        info = btrfs.subvolume_info(facts.top / sub.name)
        if mount is None or mount.option("subvolid") != str(info.id):
            what = "nothing" if mount is None else (mount.root or mount.source)
            problems.append(f"{sub.mountpoint} is not mounted from {sub.name} ({what} is there)")
            f.plain_fix = f"panther lab up {facts.lab}" if facts.lab else f"mount {sub.mountpoint}"
        else:
            seen.append(sub.mountpoint)
        if not sub.needed_for_boot:
            problems.append(f"{sub.mountpoint} is not needed for boot")
            f.nixos.append((f'fileSystems."{sub.mountpoint}".neededForBoot', True))
    if not f.nixos:
        f.nixos_note = "boot once more with the persistent subvolumes in fileSystems"
    f.actual = ", ".join(seen) or "none"
    f.status = Status.FAIL if problems else Status.PASS
    f.reason = "; ".join(problems)


def _entries_state(facts: Facts, paths: list[str]) -> list[str]:
    """Problems of the persistent paths given (empty: all bind-mounted from persist)."""
    problems = []
    for path in paths:
        try:
            where = persist.locate(facts.machine, path)
        except PantherError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if not os.path.lexists(where.copy):
            problems.append(f"{path}: no copy in persistent storage")
        elif not persist.is_bind_mounted(where):
            problems.append(f"{path}: not bind-mounted from persistent storage")
    return problems


def _persistence(facts: Facts, f: Finding) -> None:
    paths = persist.declared_paths(facts.machine)
    f.plain_fix = facts.on("panther persist add PATH") + " for each path named"
    if facts.lab:
        # The lab's boot makes what a first boot makes (machine-id, SSH host keys, ...).
        f.plain_fix = f"{facts.reboot}; for a path still without a copy: {f.plain_fix}"
    f.nixos_note = "the paths are declared; boot again so impermanence mounts them"
    problems = _entries_state(facts, paths)
    f.actual = f"{len(paths) - len(problems)}/{len(paths)} mounted"
    f.status = Status.FAIL if problems else Status.PASS
    f.reason = "; ".join(problems)


IDENTITY = "/etc/machine-id"


def _identity(facts: Facts, f: Finding) -> None:
    declared = set(persist.declared_paths(facts.machine))
    wanted = [IDENTITY]
    if facts.system.sshd_lines is not None or any("/ssh_host_" in p for p in declared):
        keys = [p for p in declared if p.startswith("/etc/ssh/ssh_host_")]
        wanted += sorted(keys) or ["/etc/ssh/ssh_host_ed25519_key"]
    f.plain_fix = "; ".join(
        facts.on(f"panther persist add {fixes.q(p)}") for p in wanted if p not in declared
    )
    missing = [p for p in wanted if p not in declared]
    f.nixos = [("pantheros.impermanence.files", missing)] if missing else []
    problems = [f"{p}: not declared persistent" for p in missing]
    problems += _entries_state(facts, [p for p in wanted if p in declared])
    f.actual = ", ".join(wanted)
    f.status = Status.FAIL if problems else Status.PASS
    f.reason = "; ".join(problems)
    if problems and not f.plain_fix:
        # Declared: the boot makes and mounts them (on the host, a rebuild and a reboot).
        added = facts.on("panther persist add " + " ".join(fixes.q(p) for p in wanted))
        f.plain_fix = facts.reboot if facts.lab else added


def _persist_top(facts: Facts, f: Finding) -> None:
    sub = facts.persist
    base = facts.top / sub.name
    mountpoint = sub.mountpoint.rstrip("/")
    writable = []
    for name in [".", *sorted(os.listdir(base))]:
        st = os.lstat(base / name)
        if not stat.S_ISLNK(st.st_mode) and st.st_mode & 0o002:
            writable.append(mountpoint if name == "." else f"{mountpoint}/{name}")
    f.actual = str(len(writable))
    f.status = Status.FAIL if writable else Status.PASS
    if writable:
        f.reason = "writable by others: " + ", ".join(writable)
        f.plain_fix = fixes.chmod("o-w", writable)
        f.nixos_note = "create these with systemd.tmpfiles.rules and a mode others cannot write"


PROBES: dict[str, Callable[[Facts, Finding], None]] = {
    "impermanence.root_fresh": _root_fresh,
    "impermanence.blank": _blank,
    "impermanence.old_roots": _old_roots,
    "impermanence.rollback": _rollback,
    "impermanence.mounts": _mounts,
    "impermanence.persistence": _persistence,
    "impermanence.identity": _identity,
    "impermanence.persist_top": _persist_top,
}


def read_record(top: Path, machine: Machine) -> tuple[dict[str, Any] | None, str]:
    """The last rollback's record, read and checked as `panther status` reads it."""
    try:
        record = RollbackRecord.read(top, machine.manifest)
    except PantherError as exc:
        return None, str(exc)
    if record is None:
        return None, "no rollback has been recorded"
    return asdict(record), ""


def run_checks(machine: Machine, system: System, waivers: dict[str, str]) -> Iterator[Finding]:
    findings = impermanence_findings()
    reason, applicable = "", True
    if not machine.manifest.impermanence.enable:
        reason, applicable = "impermanence is off in the manifest", False
    elif machine.lab is None and not system.live:
        reason = "an offline tree has no btrfs filesystem to ask (use --lab, or the host)"
    elif os.geteuid() != 0:
        reason = "reading the btrfs top level needs root"
    if reason:
        for f in findings:
            f.skip(reason, applicable=applicable)
            yield f
        return
    try:
        with machine.top_level(readonly=True) as top:
            record, problem = read_record(top, machine)
            facts = Facts(machine, system, top, record, problem)
            for f in findings:
                try:
                    PROBES[f.id](facts, f)
                except (PantherError, OSError) as exc:
                    # A layout the manifest does not describe (a subvolume gone, say).
                    f.status, f.nixos, f.nixos_note, f.plain_fix = Status.SKIPPED, [], "", ""
                    f.skip(f"could not be checked: {exc}")
    except PantherError as exc:
        for f in findings:
            f.skip(str(exc))
    for f in findings:
        yield waive(f, waivers)
