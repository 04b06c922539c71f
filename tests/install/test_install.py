"""`panther install`: the plan, the staged first-boot state and nixos-anywhere's exact argv.

nixos-anywhere cannot run here (no Nix store, no machine to kexec): the process runner is
replaced where panther calls `nix eval` (it answers with the host's plan) and nixos-anywhere
(the fake records its argv and the staged tree as it is at that moment). Everything else is
real: ssh-keygen makes the host keys, openssl hashes a typed password, the staged tree is read
from the disk. Where PANTHEROS_NIXPKGS_LIB is given, the plan is the stand-in evaluation of a
host that `panther host new` wrote into a fresh copy of the repository.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pantheros import cli, process
from pantheros import manifest as manifests
from pantheros.errors import CommandFailed, ExitCode
from pantheros.install import stage
from tests.helpers import REPO

DISK = "/dev/disk/by-id/nvme-Example_SSD_S1234"
HASH = "$y$j9T$1234567890123456789012$abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQ\n"
FIRST_BOOT: dict[str, Any] = {
    "directories": [
        {"path": "/persist/var/lib/nixos", "user": "root", "group": "root", "mode": "0755",
         "uid": 0, "gid": 0},
        {"path": "/persist/etc/ssh", "user": "root", "group": "root", "mode": "0755",
         "uid": 0, "gid": 0},
        {"path": "/persist/secrets/passwords", "user": "root", "group": "root", "mode": "0700",
         "uid": 0, "gid": 0},
        {"path": "/persist/var/lib/acme", "user": "acme", "group": "acme", "mode": "0750",
         "uid": 60, "gid": 60},
    ],
    "files": [
        {"path": "/persist/secrets/passwords/alice", "user": "root", "group": "root",
         "mode": "0600", "uid": 0, "gid": 0, "required": True, "login": "alice",
         "what": "the password hash of alice (mkpasswd -m yescrypt)"},
        {"path": "/persist/etc/ssh/ssh_host_ed25519_key", "user": "root", "group": "root",
         "mode": "0600", "uid": 0, "gid": 0, "required": False, "what": "the host key"},
        {"path": "/persist/etc/ssh/ssh_host_ed25519_key.pub", "user": "root", "group": "root",
         "mode": "0644", "uid": 0, "gid": 0, "required": False, "what": "its public half"},
        {"path": "/persist/etc/machine-id", "user": "root", "group": "root", "mode": "0444",
         "uid": 0, "gid": 0, "required": False, "what": "the machine id"},
    ],
}  # fmt: skip


def plan_doc(*, luks: bool = True, report_present: bool = False, disko: bool = True) -> Any:
    manifest = json.loads(manifests.bundled_path("workstation").read_text())
    manifest["host"] = "demo"
    manifest["storage"]["device"] = DISK
    if not luks:
        manifest["storage"]["luks"] = None
    manifest["first_boot"] = FIRST_BOOT
    return {
        "version": 1,
        "manifest": manifest,
        "disko": disko,
        "luks_passphrase_file": "/tmp/pantheros-disk.key" if luks else None,
        # As Nix names a path of the flake: in the store copy of its source.
        "hardware_report": f"/nix/store/{'0' * 32}-source/hosts/demo/facter.json",
        "hardware_report_present": report_present,
    }


@dataclass
class Seen:
    """What the fake nixos-anywhere found when it was called."""

    argv: list[str]
    tree: dict[str, tuple[str, int, int, int]]  # path -> (kind, mode, uid, gid)
    contents: dict[str, bytes]
    staging_mode: int
    staging: Path
    disk_key: bytes | None


@dataclass
class Runner:
    """process.run, with `nix eval` answered by plan and nixos-anywhere recorded."""

    plan: Any
    fail: bool = False
    calls: list[list[str]] = field(default_factory=list)
    seen: Seen | None = None

    def __call__(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        args = list(argv)
        self.calls.append(args)
        if args[0] == "nix":
            return subprocess.CompletedProcess(args, 0, json.dumps(self.plan), "")
        if args[0] == "nixos-anywhere":
            self.seen = snapshot(args)
            if self.fail:
                raise CommandFailed(args, 1, "error: kexec failed")
            return subprocess.CompletedProcess(args, 0, "", "")
        return REAL_RUN(args, **kwargs)


REAL_RUN = process.run


def snapshot(argv: list[str]) -> Seen:
    tree_dir = Path(argv[argv.index("--extra-files") + 1])
    tree: dict[str, tuple[str, int, int, int]] = {}
    contents: dict[str, bytes] = {}
    for directory, dirs, files in os.walk(tree_dir):
        for name in dirs + files:
            path = Path(directory, name)
            st = path.lstat()
            rel = "/" + str(path.relative_to(tree_dir))
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "file"
            tree[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if kind == "file":
                contents[rel] = path.read_bytes()
    key = None
    if "--disk-encryption-keys" in argv:
        key = Path(argv[argv.index("--disk-encryption-keys") + 2]).read_bytes()
    return Seen(
        argv=argv,
        tree=tree,
        contents=contents,
        staging_mode=stat.S_IMODE(tree_dir.parent.stat().st_mode),
        staging=tree_dir.parent,
        disk_key=key,
    )


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Runner:
    fake = Runner(plan_doc())
    monkeypatch.setattr(process, "run", fake)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil,
        "which",
        lambda name, *a, **k: (
            "/fake/nixos-anywhere" if name == "nixos-anywhere" else real_which(name, *a, **k)
        ),
    )
    return fake


@pytest.fixture
def secrets_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    (d / "alice.hash").write_text(HASH)
    (d / "disk.key").write_bytes(b"correct horse battery staple")
    (d / "age.key").write_text("AGE-SECRET-KEY-1EXAMPLEEXAMPLEEXAMPLE\n")
    return d


def install(*args: str) -> int:
    return cli.main(["install", "demo", "--target", "root@192.0.2.10", *args])


def test_install_stages_the_first_boot_state_and_runs_nixos_anywhere(
    runner: Runner,
    secrets_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code = install(
        "--password-hash", f"alice={secrets_dir / 'alice.hash'}",
        "--disk-key", str(secrets_dir / "disk.key"),
        "--age-key", str(secrets_dir / "age.key"),
        "--yes",
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == ExitCode.OK, out.err
    assert runner.calls[0][:5] == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
    ]
    assert runner.calls[0][5] == '.#nixosConfigurations."demo".config.pantheros.install.plan'
    seen = runner.seen
    assert seen is not None
    staging = str(seen.staging)
    assert seen.argv == [
        "nixos-anywhere",
        "--flake", ".#demo",
        "--target-host", "root@192.0.2.10",
        "--extra-files", f"{staging}/tree",
        "--chown", "/persist/var/lib/acme", "60:60",
        "--disk-encryption-keys", "/tmp/pantheros-disk.key", f"{staging}/disk.key",
        "--generate-hardware-config", "nixos-facter", "hosts/demo/facter.json",
    ]  # fmt: skip
    # The private directory, and the tree as nixos-anywhere's tar extracts it onto /mnt.
    assert seen.staging_mode == 0o700
    assert seen.tree == {
        "/persist": ("directory", 0o755, 0, 0),
        "/persist/etc": ("directory", 0o755, 0, 0),
        "/persist/etc/machine-id": ("file", 0o444, 0, 0),
        "/persist/etc/ssh": ("directory", 0o755, 0, 0),
        "/persist/etc/ssh/ssh_host_ed25519_key": ("file", 0o600, 0, 0),
        "/persist/etc/ssh/ssh_host_ed25519_key.pub": ("file", 0o644, 0, 0),
        "/persist/secrets": ("directory", 0o755, 0, 0),
        "/persist/secrets/passwords": ("directory", 0o700, 0, 0),
        "/persist/secrets/passwords/alice": ("file", 0o600, 0, 0),
        "/persist/var": ("directory", 0o755, 0, 0),
        "/persist/var/lib": ("directory", 0o755, 0, 0),
        "/persist/var/lib/acme": ("directory", 0o750, 0, 0),
        "/persist/var/lib/nixos": ("directory", 0o755, 0, 0),
        "/persist/var/lib/sops-nix": ("directory", 0o755, 0, 0),
        "/persist/var/lib/sops-nix/key.txt": ("file", 0o600, 0, 0),
    }
    assert seen.contents["/persist/secrets/passwords/alice"] == HASH.encode()
    assert (
        seen.contents["/persist/var/lib/sops-nix/key.txt"] == (secrets_dir / "age.key").read_bytes()
    )
    assert re.fullmatch(rb"[0-9a-f]{32}\n", seen.contents["/persist/etc/machine-id"])
    assert seen.disk_key == b"correct horse battery staple"
    # The host key pair is one, and the operator is told its known_hosts line.
    private = seen.contents["/persist/etc/ssh/ssh_host_ed25519_key"]
    public = seen.contents["/persist/etc/ssh/ssh_host_ed25519_key.pub"].decode().split()
    assert public[0] == "ssh-ed25519"
    key_file = secrets_dir / "check"
    key_file.write_bytes(private)
    key_file.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(key_file)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert derived[:2] == public[:2]
    assert f"192.0.2.10 ssh-ed25519 {public[1]}" in out.out.splitlines()
    # Nothing of it is left behind; no secret was printed.
    assert not seen.staging.exists()
    assert "correct horse" not in out.out + out.err
    assert HASH.strip() not in out.out + out.err


def test_a_failed_install_leaves_no_staged_secret(
    runner: Runner, secrets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner.fail = True
    code = install(
        "--password-hash", f"alice={secrets_dir / 'alice.hash'}",
        "--disk-key", str(secrets_dir / "disk.key"), "--yes",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == ExitCode.TOOL
    assert (
        err.strip().splitlines()[-1] == "panther: error: nixos-anywhere failed: error: kexec failed"
    )
    assert runner.seen is not None
    assert not runner.seen.staging.exists()


def test_dry_run_shows_the_plan_and_the_command_and_runs_nothing(
    runner: Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    code = install("--dry-run", "--json")
    out = capsys.readouterr().out
    assert code == ExitCode.OK
    plan = json.loads(out)
    assert [c[0] for c in runner.calls] == ["nix"]
    assert plan["disk"] == DISK
    assert plan["argv"][plan["argv"].index("--extra-files") + 1] == "<staging>/tree"
    assert plan["argv"][-4:] == [
        "<staging>/disk.key", "--generate-hardware-config", "nixos-facter",
        "hosts/demo/facter.json",
    ]  # fmt: skip
    staged = {e["path"]: (e["mode"], e["user"], e["chown"]) for e in plan["staged"]}
    assert staged["/persist/secrets/passwords/alice"] == ("0600", "root", None)
    assert staged["/persist/var/lib/acme"] == ("0750", "acme", "60:60")
    [alice] = [e for e in plan["staged"] if e["path"].endswith("/alice")]
    assert alice["source"] == "the password hash of alice, asked for (never shown)"
    # The text form says what is erased and lists the layout.
    install("--dry-run")
    text = capsys.readouterr().out
    assert f"Disk on the target: {DISK}" in text
    assert "ERASED" in text
    assert "LUKS2 labelled pantheros-luks" in text
    assert (
        "root -> / (in the initrd), rolled back at every boot from the read-only root-blank" in text
    )
    assert "nixos-anywhere --flake '.#demo' --target-host root@192.0.2.10" in text


@pytest.mark.parametrize(
    ("typed", "code"),
    [
        ("nvme-Example_SSD_S1234\n", ExitCode.OK),
        ("yes\n", ExitCode.REFUSED),
        ("", ExitCode.REFUSED),
    ],
)
def test_the_disk_id_is_typed_to_go_on(
    runner: Runner,
    secrets_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    typed: str,
    code: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(typed))
    result = install(
        "--password-hash", f"alice={secrets_dir / 'alice.hash'}",
        "--disk-key", str(secrets_dir / "disk.key"),
    )  # fmt: skip
    err = capsys.readouterr().err
    assert result == code, err
    assert "Type the disk's id (nvme-Example_SSD_S1234) to erase it" in err
    assert (runner.seen is not None) == (code == ExitCode.OK)
    if code != ExitCode.OK:
        assert (
            err.strip().splitlines()[-1].startswith("panther: error: the disk's id was not typed")
        )


def test_no_hardware_report_is_asked_for_when_the_host_has_one(
    runner: Runner, capsys: pytest.CaptureFixture[str]
) -> None:
    runner.plan = plan_doc(report_present=True, luks=False)
    assert install("--dry-run", "--json") == ExitCode.OK
    argv = json.loads(capsys.readouterr().out)["argv"]
    assert "--generate-hardware-config" not in argv
    assert "--disk-encryption-keys" not in argv


@pytest.mark.parametrize(
    ("args", "plan", "message", "code"),
    [
        (
            ["--target=-oProxyCommand=x"],
            {},
            "--target '-oProxyCommand=x': give root@ADDRESS",
            ExitCode.USAGE,
        ),
        ([], {"disko": False}, "host demo does not import disko's module", ExitCode.USAGE),
        (
            [],
            {"luks_passphrase_file": None},
            "set pantheros.storage.luks.passphraseFile",
            ExitCode.USAGE,
        ),
        (
            ["--password-hash", "bob=/x"],
            {},
            "host demo keeps no password hash of bob",
            ExitCode.USAGE,
        ),
        (
            ["--password-hash", "alice"],
            {},
            "--password-hash 'alice': give USER=FILE",
            ExitCode.USAGE,
        ),
        ([], {"version": 2}, "is not version 1", ExitCode.USAGE),
        (
            ["--password-hash", "alice=/nonexistent"],
            {},
            "the password hash of alice /nonexistent: cannot read",
            ExitCode.USAGE,
        ),
        (
            ["--disk-key", "/dev/null"],
            {},
            "--disk-key /dev/null: a passphrase is text, not empty",
            ExitCode.USAGE,
        ),
    ],
)
def test_what_cannot_be_installed_is_refused_before_anything_runs(
    runner: Runner,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    plan: dict[str, Any],
    message: str,
    code: int,
) -> None:
    runner.plan = {**plan_doc(), **plan}
    target = [] if any(a.startswith("--target") for a in args) else ["--target", "root@192.0.2.10"]
    result = cli.main(["install", "demo", *target, *args, "--yes"])
    err = capsys.readouterr().err
    assert result == code, err
    [line] = err.strip().splitlines()
    assert line.startswith("panther: error: ")
    assert message in line
    assert runner.seen is None


def test_a_password_needs_a_terminal_or_a_file(
    runner: Runner,
    secrets_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stage, "terminal_asker", lambda: _no_terminal)
    result = install("--disk-key", str(secrets_dir / "disk.key"), "--yes")
    err = capsys.readouterr().err
    assert result == ExitCode.USAGE
    assert "Password of alice on demo: no terminal to ask on" in err
    assert runner.seen is None


def _no_terminal(prompt: str) -> str:
    from pantheros.errors import UsageError

    raise UsageError(
        f"{prompt.rstrip(': ')}: no terminal to ask on (give it in a file: see --help)"
    )


def test_a_typed_password_is_hashed_and_never_kept_in_clear(tmp_path: Path) -> None:
    """The asker is the terminal's getpass; here it answers twice, the hash is real."""
    manifest = manifests.load_document(plan_doc(luks=True)["manifest"])
    entries = stage.planned(manifest, stage.Sources(), "demo")
    answers = iter(["s3cret pass", "s3cret pass", "disk words", "disk words"])
    prompts: list[str] = []

    def ask(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    staged = stage.stage(
        directory, entries, stage.Sources(), host="demo", address="h", luks=True, ask=ask
    )
    hashed = (staged.tree / "persist/secrets/passwords/alice").read_text().strip()
    assert prompts == [
        "Password of alice on demo: ", "Password of alice on demo (again): ",
        "LUKS passphrase for the disk of demo: ", "LUKS passphrase for the disk of demo (again): ",
    ]  # fmt: skip
    salt = hashed.split("$")[2]
    method = hashed.split("$")[1]
    if method == "6":
        again = subprocess.run(
            ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
            input="s3cret pass\n", capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert again == hashed
    assert "s3cret" not in hashed
    assert staged.disk_key is not None
    assert staged.disk_key.read_bytes() == b"disk words"
    for path in directory.rglob("*"):
        if path.is_file():
            assert b"s3cret pass" not in path.read_bytes()


def test_two_different_entries_of_a_password_are_refused(tmp_path: Path) -> None:
    manifest = manifests.load_document(plan_doc(luks=False)["manifest"])
    entries = stage.planned(manifest, stage.Sources(), "demo")
    answers = iter(["one", "two"])
    directory = tmp_path / "private"
    directory.mkdir(mode=0o700)
    with pytest.raises(Exception, match="the two entries differ"):
        stage.stage(
            directory,
            entries,
            stage.Sources(),
            host="demo",
            address="h",
            luks=False,
            ask=lambda p: next(answers),
        )


def test_the_staging_directory_is_removed_on_sigterm(tmp_path: Path) -> None:
    """A killed install (SIGTERM) removes its private directory before it ends."""
    script = (
        "import os, signal, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from pantheros.install import stage\n"
        "try:\n"
        "    with stage.private_directory() as d:\n"
        "        print(d, flush=True)\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n"
    )
    proc = subprocess.run(
        ["python3", "-c", script, str(REPO / "src")], capture_output=True, text=True, check=False
    )
    directory, said = proc.stdout.split()
    assert said == "interrupted"
    assert not Path(directory).exists()
