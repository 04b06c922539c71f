"""`panther host new NAME` in a fresh copy of the repository: the host it writes evaluates as it
is written (the stand-in where PANTHEROS_NIXPKGS_LIB is given, NixOS's own module files where
PANTHEROS_NIXOS_MODULES is too), with disko and upstream impermanence imported as the flake
imports them; `panther install NAME --dry-run` then plans its install. Bad input is refused in
one line and writes nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pantheros import cli, process
from pantheros.errors import ExitCode
from tests.helpers import REPO, one_line_error, panther
from tests.install import nixeval

DISK = "/dev/disk/by-id/nvme-Example_SSD_S1234"


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and to be committed; no .venv,
    no build output)."""
    files = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    target = tmp_path / "clone"
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture
def ssh_key(tmp_path: Path) -> Path:
    key = tmp_path / "op"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@laptop", "-f", str(key)],
        check=True,
    )
    return Path(f"{key}.pub")


def host_new(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return panther("host", "new", *args, "--flake", str(clone))


def test_host_new_writes_the_host_files(clone: Path, ssh_key: Path) -> None:
    proc = host_new(clone, "demo", "--disk", DISK, "--luks", "--ssh-key", str(ssh_key))
    assert proc.returncode == 0, proc.stderr
    host = clone / "hosts" / "demo"
    assert sorted(os.listdir(host)) == ["default.nix", "hardware.nix", "persistence.json"]
    assert oct(host.stat().st_mode & 0o777) == "0o755"
    text = (host / "default.nix").read_text()
    assert f'device = "{DISK}";' in text
    assert 'passphraseFile = "/tmp/pantheros-disk.key";' in text
    assert 'hashedPasswordFile = "/persist/secrets/passwords/admin";' in text
    assert ssh_key.read_text().strip() in text
    assert "pantheros.install.hardwareReport = ./facter.json;" in text
    assert json.loads((host / "persistence.json").read_text()) == {
        "version": 1,
        "directories": [],
        "files": [],
    }
    # Nothing was left beside it.
    assert sorted(os.listdir(clone / "hosts")) == ["demo", "server", "vm", "workstation"]
    for name in ("default.nix", "hardware.nix"):
        parsed = subprocess.run(
            ["nix-instantiate", "--parse", str(host / name)], capture_output=True, check=False
        )
        if shutil.which("nix-instantiate"):
            assert parsed.returncode == 0, parsed.stderr


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["bad name", "--disk", DISK], "host name 'bad name'", ExitCode.USAGE),
        (["-demo", "--disk", DISK], "the following arguments are required: NAME", ExitCode.USAGE),
        (
            ["demo", "--disk", "/dev/sda"],
            "--disk '/dev/sda': name the disk by /dev/disk/by-id",
            ExitCode.USAGE,
        ),
        (
            ["demo", "--disk", "/dev/disk/by-id/../sda"],
            "name the disk by /dev/disk/by-id",
            ExitCode.USAGE,
        ),
        (["demo", "--disk", DISK, "--user", "root"], "--user 'root'", ExitCode.USAGE),
        (
            ["server", "--disk", DISK],
            "exists: a host of that name is already there",
            ExitCode.REFUSED,
        ),
        (
            ["demo", "--disk", DISK, "--ssh-key", "/nonexistent.pub"],
            "--ssh-key /nonexistent.pub: cannot read",
            ExitCode.USAGE,
        ),
    ],
)
def test_host_new_refuses_in_one_line_and_writes_nothing(
    clone: Path, args: list[str], message: str, code: int
) -> None:
    before = sorted(os.listdir(clone / "hosts"))
    server = (clone / "hosts" / "server" / "default.nix").read_text()
    proc = host_new(clone, *args)
    assert proc.returncode == code, proc.stderr
    assert message in one_line_error(proc)
    assert sorted(os.listdir(clone / "hosts")) == before
    assert (clone / "hosts" / "server" / "default.nix").read_text() == server


def test_host_new_needs_a_flake(tmp_path: Path) -> None:
    proc = panther("host", "new", "demo", "--disk", DISK, "--flake", str(tmp_path))
    assert f"{tmp_path} has no flake.nix" in one_line_error(proc)
    assert os.listdir(tmp_path) == []


def test_a_symlinked_hosts_directory_is_refused(clone: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(clone / "hosts")
    (clone / "hosts").symlink_to(elsewhere)
    proc = host_new(clone, "demo", "--disk", DISK)
    assert "is a symlink" in one_line_error(proc)
    assert os.listdir(elsewhere) == []


needs_lib = pytest.mark.skipif(
    nixeval.disko_reason() is not None, reason=nixeval.disko_reason() or ""
)


@needs_lib
@pytest.mark.parametrize("real", nixeval.EVALUATORS)
@pytest.mark.parametrize(
    ("role", "luks"), [("server", False), ("workstation", True), ("server", True)]
)
def test_the_new_host_evaluates_as_written(
    clone: Path, ssh_key: Path, tmp_path: Path, role: str, luks: bool, real: bool
) -> None:
    args = ["demo", "--disk", DISK, "--role", role, "--user", "ops"]
    args += ["--luks"] if luks else []
    args += ["--ssh-key", str(ssh_key)] if role == "server" else []
    proc = host_new(clone, *args)
    assert proc.returncode == 0, proc.stderr
    module = f"{{ imports = [ {clone}/hosts/demo/default.nix ]; }}"
    out = nixeval.evaluate(tmp_path, module, real=real)
    facts = out.get("facts", out)
    assert facts["failedAssertions"] == []
    assert facts["warnings"] == []
    manifest = facts["manifest"]
    assert manifest["host"] == "demo"
    assert manifest["storage"]["device"] == DISK
    assert (manifest["storage"]["luks"] is not None) == luks
    assert manifest["security"]["level"] == {"server": "strict", "workstation": "hardened"}[role]
    passwords = [f for f in manifest["first_boot"]["files"] if f.get("login")]
    assert [(f["login"], f["path"]) for f in passwords] == [
        ("ops", "/persist/secrets/passwords/ops")
    ]
    assert "ops" in facts["users"]["administrators"]
    # The layout is disko's: the file systems come from it.
    assert facts["fileSystems"]["/persist"]["neededForBoot"] is True
    assert facts["fileSystems"]["/boot"]["device"].startswith("/dev/disk/by-partuuid/")


@needs_lib
def test_install_dry_run_plans_the_new_host_from_a_fresh_clone(
    clone: Path,
    ssh_key: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    proc = host_new(clone, "demo", "--disk", DISK, "--luks", "--ssh-key", str(ssh_key))
    assert proc.returncode == 0, proc.stderr
    module = f"{{ imports = [ {clone}/hosts/demo/default.nix ]; }}"
    plan = nixeval.evaluate(tmp_path, module, "installPlan")
    calls: list[list[str]] = []

    def nix_eval(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        return subprocess.CompletedProcess(argv, 0, json.dumps(plan), "")

    monkeypatch.setattr(process, "run", nix_eval)
    monkeypatch.chdir(clone)
    code = cli.main(["install", "demo", "--target", "root@192.0.2.10", "--dry-run", "--json"])
    out = capsys.readouterr()
    assert code == ExitCode.OK, out.err
    shown = json.loads(out.out)
    assert calls == [
        [
            "nix", "--extra-experimental-features", "nix-command flakes", "eval", "--json",
            '.#nixosConfigurations."demo".config.pantheros.install.plan',
        ]
    ]  # fmt: skip
    assert shown["argv"] == [
        "nixos-anywhere",
        "--flake", ".#demo",
        "--target-host", "root@192.0.2.10",
        "--extra-files", "<staging>/tree",
        "--disk-encryption-keys", "/tmp/pantheros-disk.key", "<staging>/disk.key",
        "--generate-hardware-config", "nixos-facter", "hosts/demo/facter.json",
    ]  # fmt: skip
    staged = {e["path"]: (e["kind"], e["mode"]) for e in shown["staged"]}
    # What the modules expect before the first boot (pantheros.impermanence.firstBoot), and
    # the parents it lies in.
    first_boot = plan["manifest"]["first_boot"]
    for entry in first_boot["directories"]:
        assert staged[entry["path"]] == ("directory", entry["mode"])
    for entry in first_boot["files"]:
        assert staged[entry["path"]] == ("file", entry["mode"])
    assert staged["/persist"] == ("directory", "0755")
    assert set(staged) - {e["path"] for e in first_boot["directories"] + first_boot["files"]} == {
        "/persist",
        "/persist/etc",
        "/persist/secrets",
        "/persist/var",
        "/persist/var/lib",
    }


@needs_lib
def test_a_present_hardware_report_is_read_or_said_unread(clone: Path, tmp_path: Path) -> None:
    """Once nixos-facter's report is in the host, the plan says so (no new report is asked
    for); a NixOS without hardware.facter (this stand-in) warns that it is not read."""
    assert host_new(clone, "demo", "--disk", DISK).returncode == 0
    (clone / "hosts" / "demo" / "facter.json").write_text('{"version": 1}\n')
    module = f"{{ imports = [ {clone}/hosts/demo/default.nix ]; }}"
    out = nixeval.evaluate(tmp_path, module)
    assert out["installPlan"]["hardware_report_present"] is True
    [warning] = out["warnings"]
    assert "no\nhardware.facter module to read it" in warning
