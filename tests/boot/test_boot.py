"""The boot step in a real initrd: Debian's kernel and a dracut systemd initramfs under QEMU TCG.

The initramfs carries the unit texts the NixOS module renders (nix/generated/initrd-units.json)
and the boot step the package ships, at the store path ExecStart names. Stage 2 is a busybox
script (tests/boot/vm.py) that writes junk to /, appends to /persist/boots.log, keeps the step's
report in /persist/reports/boot-N and powers off. After each boot the host reads the disk with
panther's own functions.

Where Debian's dracut initrd with systemd 252 and NixOS's systemd initrd differ, each test says
what the difference means for what it shows.
"""

from __future__ import annotations

import pytest

from pantheros.errors import ExitCode
from tests.boot.vm import Machine
from tests.bootstep_variant import HANG_AFTER_ENV

pytestmark = [pytest.mark.root, pytest.mark.boot]

DIRTY = "boot-dirty"
CLOSED = "fail-closed"
PREPARED = "using the fresh root prepared for this boot"


def _position(serial: str, text: str) -> int:
    at = serial.find(text)
    assert at >= 0, f"{text!r} is not in the serial log"
    return at


@pytest.mark.scenario("boot-step: Three boots in a real initrd")
def test_three_boots_each_start_from_the_blank(machine: Machine) -> None:
    """Three boots: the junk of the previous boot is gone each time, /persist keeps everything,
    one more read-only old root per boot holds the previous boot's junk, and the step finishes
    before sysroot.mount starts.

    Debian vs NixOS: both initrds keep our unit in /etc/systemd/system and order it with the
    same Before=sysroot.mount, but dracut makes sysroot.mount from root= on the kernel command
    line (systemd-fstab-generator) where NixOS writes it from fileSystems."/" into the initrd's
    fstab; both name the device unit after the same udev link,
    dev-disk-by\\x2dlabel-pantheros.device, which the unit requires. The step's tools come from
    dracut's /usr/bin here (PATH of systemd 252) and from the initrd's /bin on NixOS.
    """
    names: list[str] = []
    for n in (1, 2, 3):
        boot = machine.boot(DIRTY)
        assert boot.reached_stage2, "stage 2 did not run"
        serial = boot.serial
        assert _position(serial, "Finished pantheros-rollback.service") < _position(
            serial, "Mounting sysroot.mount"
        )
        outcome, code, warning = machine.stage2()
        assert (outcome.result, code, warning, outcome.pruned) == ("fresh", 0, "", [])
        state = machine.state()
        assert state.boots[-1] == f"boot-{n} junk-seen=[]"
        assert len(state.boots) == n, "persist lost a line of an earlier boot"
        report = state.reports[f"boot-{n}"]
        assert report.result == "fresh"
        # The first boot makes its own root; stage 2 prepares the next one (D150).
        assert (PREPARED in report.notes) == (n > 1), report.notes
        assert state.prepared, "stage 2 left no root for the next boot"
        assert state.record is not None
        assert state.record["result"] == "fresh"
        assert len(state.old_roots) == n
        assert all(r.info.readonly for r in state.old_roots)
        newest = state.old_roots[-1]
        assert report.archived == [newest.name]
        assert f"junk-{n - 1}" in state.old_root_files[newest.name]
        assert [f for f in state.root_files if f.startswith("junk-")] == [f"junk-{n}"]
        assert state.blank_problem is None
        assert state.strays == 0
        assert not state.leftovers
        names.append(newest.name)
    assert names == sorted(names), "old roots must sort by creation"
    # The step unmounts the top level it mounted under /run, or stage 2 inherits that mount.
    for boot in machine.boots:
        assert "could not unmount" not in boot.serial, "the step left the top level mounted"


@pytest.mark.scenario("boot-step: Power cut during the step with a prepared root")
def test_power_cuts_with_a_prepared_root_are_finished_by_the_next_boot(machine: Machine) -> None:
    """The same power cuts on the path of every boot after the first (D150): stage 2 of the
    first boot prepared the next root, and the step forces no commit (D154), so each cut boot
    leaves what the next boot finishes."""
    first = machine.boot(CLOSED)
    assert first.reached_stage2
    assert machine.stage2()[1] == 0
    assert machine.state().prepared
    for step in ("exchange", "archive"):
        cut = machine.boot(
            CLOSED,
            extra=f"systemd.setenv={HANG_AFTER_ENV}={step}",
            kill_on=f"pantheros-rollback: hanging after {step}",
            hooks=True,
        )
        assert cut.returncode is None, f"the VM was to be killed after {step}"
        assert not cut.reached_stage2
        during = machine.state()
        assert "sbin" in during.root_files, f"no root after a power cut after {step}"

    boot = machine.boot(CLOSED)
    assert boot.reached_stage2, "the boot after the power cuts did not reach stage 2"
    state = machine.state()
    # A cut boot never reaches stage 2, so it writes no line: the recovery boot is boot-2.
    assert state.boots == ["boot-1 junk-seen=[]", "boot-2 junk-seen=[]"]
    report = state.reports["boot-2"]
    assert report.result == "fresh"
    assert PREPARED in report.notes, report.notes
    assert not state.prepared, "the prepared root was used"
    assert not state.leftovers
    assert [f for f in state.root_files if f.startswith("junk-")] == ["junk-2"]
    # The first boot's root (junk-0) and the root of boot 1 (junk-1), nothing else lost.
    assert len(state.old_roots) == 2, [r.name for r in state.old_roots]
    assert "junk-1" in state.old_root_files[state.old_roots[-1].name]
    assert state.blank_problem is None
    assert state.strays == 0


@pytest.mark.scenario("boot-step: Power cut during the step")
def test_power_cuts_during_the_step_are_finished_by_the_next_boot(machine: Machine) -> None:
    """The VM is killed (SIGKILL: the guest's unwritten pages are lost, like pulling the plug)
    right after the exchange; the next boot, finishing what the disk holds (the step forces no
    commit, D154: usually the disk as before it, with the root the first cut boot snapshotted
    beside it), is killed right after the archive; the boot after that completes the rollback,
    and nothing is lost. The two cut boots run the step's test variant (the shipped script and
    helper with the hang hook; what ships has none), the recovery boot the shipped step.

    Debian vs NixOS: `systemd.setenv=` reaches the unit the same way in both (systemd's manager
    environment), and the hang hook's line reaches the serial console through the journal here
    and on NixOS alike. fail-closed links the unit into sysroot.mount.requires in both initrds.
    """
    for step in ("exchange", "archive"):
        cut = machine.boot(
            CLOSED,
            extra=f"systemd.setenv={HANG_AFTER_ENV}={step}",
            kill_on=f"pantheros-rollback: hanging after {step}",
            hooks=True,
        )
        assert cut.returncode is None, f"the VM was to be killed after {step}"
        assert not cut.reached_stage2
        during = machine.state()
        assert "sbin" in during.root_files, f"no root after a power cut after {step}"
        assert during.boots == []
        assert all(r.info.readonly for r in during.old_roots[:-1])

    boot = machine.boot(CLOSED)
    assert boot.reached_stage2, "the boot after the power cuts did not reach stage 2"
    state = machine.state()
    assert state.boots == ["boot-1 junk-seen=[]"]
    assert state.reports["boot-1"].result == "fresh"
    assert not state.leftovers, "a half-made root was left"
    assert len(state.old_roots) == 1, [r.name for r in state.old_roots]
    # The root this boot archived stays writable until stage 2 (pantheros-rollback-finish, not
    # run by this test's stage 2) makes it read-only (D151).
    assert all(r.info.readonly for r in state.old_roots[:-1])
    (old,) = state.old_root_files.values()
    assert "junk-0" in old, "the previous root was lost"
    assert state.blank_problem is None
    assert state.strays == 0


def test_fail_closed_without_a_blank_stops_in_the_initrd(machine: Machine) -> None:
    """fail-closed with the blank missing: the step fails, sysroot.mount (which requires it)
    never mounts, and no stage-2 init runs; the root is untouched.

    Debian vs NixOS: what follows the failure differs: dracut's emergency service honours
    rd.emergency=poweroff (so QEMU exits), NixOS's initrd goes to emergency.target with
    boot.initrd.systemd.emergencyAccess deciding whether a shell opens. Both stop before the
    root is mounted, which is what this test checks.
    """
    machine.remove_blank()
    boot = machine.boot(CLOSED)
    assert "rollback failed: the blank snapshot root-blank is missing" in boot.serial
    assert "Mounted sysroot.mount" not in boot.serial
    assert not boot.reached_stage2
    state = machine.state()
    assert state.boots == []
    assert "junk-0" in state.root_files
    assert state.old_roots == []


def test_boot_dirty_without_a_blank_boots_the_previous_root(machine: Machine) -> None:
    """boot-dirty with the blank missing: the step fails (exit 6), the previous root boots with
    its junk, and stage 2 (`panther rollback --finish`'s function, on the report the boot carried
    out of its initrd) records it as dirty, warns at login and exits 6.

    Debian vs NixOS: the report crosses switch-root in /run in both (systemd moves the initrd's
    /run to the new root). Stage 2 here is a busybox script that copies the report to /persist
    and the host then runs panther's stage-2 function on the disk; on NixOS
    pantheros-rollback-finish.service runs it after local-fs.target in the booted system.
    """
    machine.remove_blank()
    boot = machine.boot(DIRTY)
    assert boot.reached_stage2
    assert "pantheros-rollback.service: Main process exited, code=exited, status=6" in boot.serial
    outcome, code, warning = machine.stage2()
    assert (outcome.result, code) == ("dirty", ExitCode.BOOT_DIRTY)
    assert outcome.error == "the blank snapshot root-blank is missing"
    assert "NOT rolled back" in warning
    state = machine.state()
    assert state.boots == ["boot-1 junk-seen=[junk-0 ]"]
    assert state.reports["boot-1"].result == "dirty"
    assert state.record is not None
    assert state.record["result"] == "dirty"
    assert state.old_roots == []


@pytest.mark.scenario("boot-step: Kernel switch skips the step")
def test_norollback_on_the_kernel_command_line_skips_the_step(machine: Machine) -> None:
    """`pantheros.norollback` on the kernel command line: the unit is skipped, the previous
    root boots with its junk, no old root is made, no report is written, and stage 2 records
    the boot as skipped.

    Debian vs NixOS: ConditionKernelCommandLine= reads the kernel command line in both; dracut
    passes the whole line through, as NixOS's initrd does.
    """
    boot = machine.boot(DIRTY, extra="pantheros.norollback")
    assert boot.reached_stage2
    assert "pantheros-rollback" not in boot.serial.replace("pantheros.norollback", "")
    outcome, code, warning = machine.stage2()
    assert (outcome.result, code) == ("skipped", 0)
    assert "skipped" in warning
    state = machine.state()
    assert state.record is not None
    assert state.record["result"] == "skipped"
    assert state.boots == ["boot-1 junk-seen=[junk-0 ]"]
    assert state.reports == {}
    assert state.old_roots == []
    assert "junk-0" in state.root_files


def test_a_replaced_blank_is_refused_in_the_initrd(machine: Machine) -> None:
    """The blank swapped for a read-only snapshot of a changed copy (it passes "read-only and
    unchanged since made"): the step in the initrd refuses it against the identity recorded
    when the disk was laid out, the previous root boots (boot-dirty), and stage 2 records why.

    Debian vs NixOS: the record is a file at the btrfs top level, read by the step's bash after
    it mounts the top level itself; nothing in it depends on the initrd's make.
    """
    machine.swap_blank()
    boot = machine.boot(DIRTY)
    assert boot.reached_stage2
    assert "the blank snapshot root-blank is not the one recorded" in boot.serial
    outcome, code, warning = machine.stage2()
    assert (outcome.result, code) == ("dirty", ExitCode.BOOT_DIRTY)
    assert "is not the one recorded" in (outcome.error or "")
    assert "NOT rolled back" in warning
    state = machine.state()
    assert state.boots == ["boot-1 junk-seen=[junk-0 ]"]
    assert "planted" not in state.root_files
    assert state.old_roots == []
    assert state.blank_problem is not None
    assert "is not the one recorded" in state.blank_problem
