"""The disk a boot test boots, QEMU around it, and a look at the disk from the host afterwards.

The disk is laid out by `panther disk format --manifest lab`. Its root and blank hold a tiny
stage 2: a busybox shell script as /sbin/init that records what it saw in /persist and powers
off. The blank is remade from that root with a read-only snapshot, so it is trusted (read-only,
unchanged since made) exactly like a blank made by the installer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pantheros import btrfs
from pantheros import manifest as manifests
from pantheros.impermanence import blank, bootstep, rollback
from pantheros.impermanence.bootstep import Outcome
from pantheros.impermanence.oldroots import OldRoot, OldRoots
from pantheros.impermanence.stage2 import LOGIN_WARNING, finish
from pantheros.lab.lab import Lab
from pantheros.machine import Machine as PantherMachine
from tests.bootstep_variant import NEW_SUFFIX
from tests.helpers import next_root_problem

LAB = manifests.load(manifests.bundled_path("lab"))
LABEL = LAB.storage.btrfs_label
assert LAB.persist is not None, "the lab manifest has a persist subvolume"
PERSIST = LAB.persist.name
IMAGE_MIB = 512
BUSYBOX = Path("/bin/busybox")
STAGE2_DONE = "pantheros-test: stage 2 done"

# Stage 2. It runs as PID 1 after the initrd's switch-root, so it reopens the console itself
# (systemd hands PID 1 a null stdio) and powers off with -f (there is no init to ask).
INIT = f"""#!/bin/busybox sh
exec >/dev/console 2>&1
b=/bin/busybox
dev=$($b findfs LABEL={LABEL})
if ! $b mount -t btrfs -o subvol={PERSIST} "$dev" /persist; then
  echo "pantheros-test: cannot mount persist"
  $b poweroff -f
fi
n=$(( $($b cat /persist/boots.log 2>/dev/null | $b wc -l) + 1 ))
junk=$(cd / && $b ls -d junk-* 2>/dev/null | $b tr '\\n' ' ')
echo "boot-$n junk-seen=[$junk]" >>/persist/boots.log
$b mkdir -p /persist/reports
if [ -e /run/pantheros/rollback.report ]; then
  $b cp /run/pantheros/rollback.report /persist/reports/boot-$n
fi
echo "junk of boot $n" >/junk-$n
$b sync
$b umount /persist
echo "{STAGE2_DONE}, boot $n"
$b poweroff -f
"""


def sh(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def machine(directory: Path) -> PantherMachine:
    """The disk as panther sees it: a lab directory (disk.img, manifest.json) that is down."""
    return PantherMachine.select(str(directory))


def prepare(directory: Path) -> None:
    """A lab-shaped directory whose image is formatted for the lab manifest, with stage 2 in
    the root and the blank remade from it."""
    directory.mkdir()
    lab = Lab(directory)
    lab.manifest_path.write_text(manifests.bundled_path("lab").read_text())
    with open(lab.image, "wb") as f:
        f.truncate(IMAGE_MIB * 1024 * 1024)
    panther = [sys.executable, "-m", "pantheros"]
    sh(*panther, "disk", "format", "--manifest", str(lab.manifest_path), str(lab.image))
    with machine(directory).top_level() as top:
        storage = LAB.storage
        root = top / storage.root.name
        for name in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp"):
            (root / name).mkdir(exist_ok=True)
        # systemd switches only to a root that looks like an OS.
        (root / "etc" / "os-release").write_text("ID=pantheros-boot-test\n")
        sh("cp", str(BUSYBOX), str(root / "bin" / "busybox"))
        (root / "sbin" / "init").write_text(INIT)
        (root / "sbin" / "init").chmod(0o755)
        blank = top / storage.blank_snapshot
        btrfs.delete_subvolume(blank)
        btrfs.snapshot(root, blank, readonly=True)
        # The installer's root is not fresh: the first boot has something to roll back.
        (root / "junk-0").write_text("written before the first boot\n")
        btrfs.sync(top)
    # A blank made by hand is trusted once it is blessed, as a user would.
    sh(*panther, "blank", "bless", "--lab", str(directory), "--yes")


def clone(source: Path, dest: Path) -> None:
    dest.mkdir()
    sh("cp", "--sparse=always", str(Lab(source).image), str(Lab(dest).image))
    sh("cp", str(Lab(source).manifest_path), str(Lab(dest).manifest_path))


@dataclass
class Boot:
    cmdline: str
    serial: str
    returncode: int | None  # None: QEMU was killed

    @property
    def reached_stage2(self) -> bool:
        return STAGE2_DONE in self.serial


class BootTimeout(AssertionError):
    pass


def direct_boot_argv(
    vmlinuz: Path, initramfs: Path, cmdline: str, log: Path, *, memory_mib: int = 512, cpu: str = ""
) -> list[str]:
    """QEMU under TCG, one processor, no display, booting vmlinuz and initramfs directly with
    cmdline, the serial console written to log, and no reboot: the guest's power-off ends it."""
    argv = ["qemu-system-x86_64", "-accel", "tcg", *(["-cpu", cpu] if cpu else [])]
    argv += ["-m", str(memory_mib), "-smp", "1", "-nodefaults", "-display", "none", "-no-reboot"]
    argv += ["-serial", f"file:{log}", "-kernel", str(vmlinuz), "-initrd", str(initramfs)]
    return [*argv, "-append", cmdline]


def boot(
    image: Path,
    initramfs: Path,
    vmlinuz: Path,
    log: Path,
    *,
    extra: str = "",
    kill_on: str | None = None,
    timeout: float = 300,
) -> Boot:
    """Boot image under QEMU TCG until it powers off (or, with kill_on, SIGKILL it when the
    serial log shows that text: a power cut at that moment)."""
    cmdline = (
        f"root=LABEL={LABEL} rootflags=subvol={LAB.storage.root.name} rootfstype=btrfs rw"
        " console=ttyS0 panic=-1 rd.shell=0 rd.emergency=poweroff"
        " systemd.log_target=console systemd.journald.forward_to_console=1"
        # Unit names, uncoloured, so the serial log can be searched for the order of units.
        " systemd.log_color=0 systemd.status_unit_format=name"
        f" {extra}"
    ).strip()
    argv = [
        *direct_boot_argv(vmlinuz, initramfs, cmdline, log),
        # cache=unsafe: flushes are not forwarded, but every write QEMU makes reaches the host's
        # page cache, so killing QEMU loses exactly what the guest had not written yet.
        "-drive",
        f"file={image},format=raw,if=virtio,cache=unsafe",
    ]
    errors = log.with_suffix(".qemu-stderr")
    with open(errors, "wb") as stderr:
        qemu = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + timeout
    try:
        while qemu.poll() is None:
            if kill_on is not None and log.exists() and kill_on in log.read_text(errors="replace"):
                qemu.send_signal(signal.SIGKILL)
                qemu.wait()
                return Boot(cmdline, log.read_text(errors="replace"), None)
            if time.monotonic() > deadline:
                raise BootTimeout(
                    f"no power-off within {timeout:.0f} s\n" + log.read_text(errors="replace")
                )
            time.sleep(0.2)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()
    serial = log.read_text(errors="replace")
    if qemu.returncode != 0:
        raise AssertionError(
            f"qemu exited with {qemu.returncode}: {errors.read_text(errors='replace')}\n{serial}"
        )
    return Boot(cmdline, serial, qemu.returncode)


@dataclass
class DiskState:
    """What the host sees on the image after a boot."""

    boots: list[str]
    reports: dict[str, Outcome]
    old_roots: list[OldRoot]
    old_root_files: dict[str, list[str]]
    strays: int
    root_files: list[str]
    leftovers: list[str]  # a half-made root beside the root: never left by a finished step
    prepared: bool  # the next boot's root, as stage 2 prepares it (D150), is beside the root
    blank_problem: str | None
    record: dict[str, Any] | None


def inspect(directory: Path) -> DiskState:
    """Read the image's state with panther's own functions, top level mounted read-only."""
    with machine(directory).top_level(readonly=True) as top:
        storage = LAB.storage
        persist = top / PERSIST
        log = persist / "boots.log"
        reports_dir = persist / "reports"
        reports = (
            {p.name: bootstep.parse_report(p.read_text()) for p in reports_dir.iterdir()}
            if reports_dir.is_dir()
            else {}
        )
        roots, strays = OldRoots(top, storage).scan()
        record = rollback.record_path(top, LAB)
        problem = next_root_problem(top, LAB)
        return DiskState(
            boots=log.read_text().splitlines() if log.exists() else [],
            reports=reports,
            old_roots=roots,
            old_root_files={r.name: sorted(os.listdir(r.path)) for r in roots},
            strays=len(strays),
            root_files=sorted(os.listdir(top / storage.root.name)),
            leftovers=[] if problem is None else [f"{storage.root.name}{NEW_SUFFIX}: {problem}"],
            prepared=problem is None and os.path.lexists(top / (storage.root.name + NEW_SUFFIX)),
            blank_problem=blank.problem(top, LAB),
            record=json.loads(record.read_text()) if record.exists() else None,
        )


@dataclass
class Machine:
    """One test's copy of the prepared disk, booted as often as the test likes."""

    directory: Path
    logs: Path
    initramfs: Callable[[str, bool], tuple[Path, Path]]
    boots: list[Boot] = field(default_factory=list)

    @property
    def image(self) -> Path:
        return Lab(self.directory).image

    def boot(
        self, policy: str, extra: str = "", kill_on: str | None = None, hooks: bool = False
    ) -> Boot:
        """Boot once; hooks: with the step's test variant (the hang hook for a power cut)."""
        image, vmlinuz = self.initramfs(policy, hooks)
        log = self.logs / f"serial-{len(self.boots) + 1}.log"
        result = boot(self.image, image, vmlinuz, log, extra=extra, kill_on=kill_on)
        self.boots.append(result)
        return result

    def state(self) -> DiskState:
        return inspect(self.directory)

    def stage2(self) -> tuple[Outcome, int, str]:
        """What `panther rollback --finish` does after local-fs on NixOS, run here on the host
        against the disk with the report the last boot carried out of its initrd: (outcome,
        exit code, login warning)."""
        n = len(self.boots)
        report = self.logs / f"rollback.report-{n}"
        with machine(self.directory).top_level(readonly=True) as top:
            carried = top / PERSIST / "reports" / f"boot-{n}"
            if carried.exists():
                report.write_bytes(carried.read_bytes())
        this = machine(self.directory)
        outcome, code = finish(this, report, self.boots[-1].cmdline)
        warning = this.run_dir / LOGIN_WARNING
        return outcome, code, warning.read_text() if warning.exists() else ""

    def swap_blank(self) -> None:
        """Issue 20.3's attack: the blank replaced by a read-only snapshot of a changed copy."""
        with machine(self.directory).top_level() as top:
            blank_path = top / LAB.storage.blank_snapshot
            copy = top / "copy"
            btrfs.snapshot(blank_path, copy)
            (copy / "planted").write_text("in every new root\n")
            btrfs.delete_subvolume(blank_path)
            btrfs.snapshot(copy, blank_path, readonly=True)
            btrfs.delete_subvolume(copy)
            btrfs.sync(top)

    def remove_blank(self) -> None:
        with machine(self.directory).top_level() as top:
            btrfs.delete_subvolume(top / LAB.storage.blank_snapshot)
            btrfs.sync(top)
