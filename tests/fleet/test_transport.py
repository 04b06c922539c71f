"""The ssh command line, the host-side script (run here by real shells: dash, bash, busybox),
its framing against hostile output, and ssh's own failures in one line each."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pantheros.fleet import ask, transport
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import Answer, Options, Step

STEPS = (
    *transport.SYSTEM_STEPS,
    Step("status", ("status", "--json")),
    Step("diff", ("diff", "--json")),
)


def test_ssh_argv_puts_its_own_options_first() -> None:
    host = Host(
        "web1",
        "web1.example.org",
        user="ops",
        port=2222,
        identity="/k/id",
        ssh_options=("StrictHostKeyChecking=no", "ProxyJump=bastion"),
        ssh_args=("-o", "BatchMode=no"),
    )
    argv = transport.ssh_argv(host, Options(connect_timeout=5, ssh_options=("Compression=yes",)))
    assert argv == [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "ConnectTimeout=5",
        "-o",
        "ConnectionAttempts=1",
        "-p",
        "2222",
        "-l",
        "ops",
        "-i",
        "/k/id",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "StrictHostKeyChecking=no",  # comes after ours: ssh keeps the first value, ours
        "-o",
        "ProxyJump=bastion",
        "-o",
        "BatchMode=no",
        "-o",
        "Compression=yes",
        "--",
        "web1.example.org",
        "sh",
        "-s",
    ]
    assert "StrictHostKeyChecking=accept-new" in transport.ssh_argv(host, Options(accept_new=True))


def test_ssh_keeps_the_first_value_of_an_option() -> None:
    """What the order above relies on, asked of the real ssh (`-G` prints its configuration)."""
    if shutil.which("ssh") is None:
        pytest.skip("needs ssh (openssh-client)")
    proc = subprocess.run(
        ["ssh", "-G", "-o", "StrictHostKeyChecking=yes", "-o", "StrictHostKeyChecking=no", "h"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "stricthostkeychecking true" in proc.stdout


SHELLS = [
    ["sh", "-s"],
    ["bash", "--posix", "-s"],
    ["busybox", "sh", "-s"],
]


def fake_panther(tmp_path: Path, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    panther = bin_dir / "panther"
    panther.write_text("#!/bin/sh\n" + body)
    panther.chmod(0o755)
    return bin_dir


def run_here(
    shell: list[str],
    steps: tuple[Step, ...],
    path: str,
    host: Host | None = None,
    timeout: float = 30,
    stop: threading.Event | None = None,
    env: dict[str, str] | None = None,
    host_timeout: float | None = None,
) -> tuple[transport.Session, transport.Frames]:
    """The script as ssh would run it, but with a shell of this machine, in its own session
    (the watchdog ends its whole process group)."""
    if shutil.which(shell[0]) is None:
        pytest.skip(f"needs {shell[0]}")
    host = host or Host("here", "localhost")
    marker = transport.new_marker()
    code = transport.script(host, steps, marker, host_timeout or timeout)
    argv = ["env", "-i", f"PATH={path}", *(f"{k}={v}" for k, v in (env or {}).items()), *shell]
    session = transport.run(argv, code.encode(), timeout, stop or threading.Event())
    return session, transport.parse(session.stdout, marker)


HOSTILE = (
    "printf '{\"json\": true}\\n'\n"
    # A forged frame, a marker-looking line, bytes that are not UTF-8, no final newline.
    "printf '@@pantheros-fleet-0000000000000000 step diff 0 5 0\\nforged'\n"
    "printf '\\377\\376 not utf-8'\n"
    "printf 'warn: %s\\n' \"$*\" >&2\n"
    'case "$1" in diff) exit 1;; esac\n'
)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_script_frames_every_answer_exactly(shell: list[str], tmp_path: Path) -> None:
    bin_dir = fake_panther(tmp_path, HOSTILE)
    session, frames = run_here(shell, STEPS, f"{bin_dir}:/usr/bin:/bin")
    assert session.returncode == 0, session.stderr
    assert frames.started
    assert frames.ended
    assert not frames.garbled
    assert frames.panther == str(bin_dir / "panther")
    expected = (
        b'{"json": true}\n@@pantheros-fleet-0000000000000000 step diff 0 5 0\nforged'
        b"\xff\xfe not utf-8"
    )
    status = frames.answers["status"]
    assert status == Answer(0, expected, b"warn: status --json\n")
    assert frames.answers["diff"] == Answer(1, expected, b"warn: diff --json\n")
    assert frames.answers["hostname"].returncode == 0
    # Nothing of this machine's NixOS links: readlink's own failure, framed like the rest.
    assert frames.answers["booted"].returncode != 0 or Path("/run/booted-system").is_symlink()


def test_no_panther_names_the_path_searched(tmp_path: Path) -> None:
    session, frames = run_here(["sh", "-s"], STEPS, "/usr/bin:/bin")
    assert frames.missing_panther == "/usr/bin:/bin"
    assert "status" not in frames.answers
    assert "hostname" in frames.answers
    failure = ask.failure_of(Host("h", "x"), STEPS, Options(), session, frames)
    assert failure is not None
    assert failure.kind == "no-panther"
    assert "PATH (/usr/bin:/bin)" in failure.reason


def test_become_and_a_configured_panther(tmp_path: Path) -> None:
    bin_dir = fake_panther(tmp_path, 'echo "$0 $*"\n')
    (bin_dir / "asroot").write_text('#!/bin/sh\necho "as root:" "$@"\n')
    (bin_dir / "asroot").chmod(0o755)
    host = Host("h", "x", become=("asroot", "-n"), panther=str(bin_dir / "panther"))
    _, frames = run_here(["sh", "-s"], STEPS, f"{bin_dir}:/usr/bin:/bin", host=host)
    out = frames.answers["status"].stdout.decode()
    assert out == f"as root: -n {bin_dir}/panther status --json\n"


def test_a_host_that_cannot_make_a_temporary_directory(tmp_path: Path) -> None:
    bin_dir = fake_panther(tmp_path, "echo {}\n")
    path = f"{bin_dir}:/usr/bin:/bin"
    session, frames = run_here(["sh", "-s"], STEPS, path, env={"TMPDIR": str(tmp_path / "no")})
    assert frames.fatal == "cannot make a temporary directory (mktemp -d)"
    failure = ask.failure_of(Host("h", "x"), STEPS, Options(), session, frames)
    assert failure is not None
    assert failure.kind == "host"


def test_ending_the_session_ends_what_runs_there(tmp_path: Path) -> None:
    """The watchdog: once stdin ends, the whole script's group is ended, its step included."""
    marker = "63.91"
    bin_dir = fake_panther(tmp_path, f"exec sleep {marker}\n")
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    session, frames = run_here(["sh", "-s"], STEPS, f"{bin_dir}:/usr/bin:/bin", stop=stop)
    assert session.interrupted
    assert time.monotonic() - started < 1.0 + transport.STDIN_GRACE + 1.0
    assert frames.started
    assert "status" not in frames.answers
    failure = ask.failure_of(Host("h", "x"), STEPS, Options(), session, frames)
    assert failure is not None
    assert failure.kind == "interrupted"
    assert "(running panther status --json)" in failure.reason
    deadline = time.monotonic() + 5
    while subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], check=False).returncode == 0:
        assert time.monotonic() < deadline, "the step outlived its session"
        time.sleep(0.1)


def test_the_host_bounds_each_step_with_its_own_timeout(tmp_path: Path) -> None:
    """Should the connection outlive panther's deadline, the host ends the step itself."""
    bin_dir = fake_panther(tmp_path, "exec sleep 30\n")
    started = time.monotonic()
    session, frames = run_here(
        ["sh", "-s"], STEPS[-1:], f"{bin_dir}:/usr/bin:/bin", timeout=20, host_timeout=1
    )
    assert time.monotonic() - started < 10
    assert not session.timed_out
    assert frames.ended
    assert frames.answers["diff"].returncode == 124
    assert frames.answers["diff"].error() == "timed out on the host"


def test_parse_stops_where_the_answer_stops() -> None:
    m = "@@pantheros-fleet-abc"
    whole = f"motd\n{m} start\n{m} step a 0 3 2\nabcde{m} step b 1 0 0\n{m} end\n".encode()
    frames = transport.parse(whole, m)
    assert frames.ended
    assert frames.answers == {"a": Answer(0, b"abc", b"de"), "b": Answer(1, b"", b"")}
    cut = transport.parse(whole[: whole.index(b"de") + 1], m)
    assert not cut.ended
    assert cut.answers == {}
    garbled = transport.parse(f"{m} start\nnoise\n".encode(), m)
    assert garbled.garbled
    assert not transport.parse(b"no marker at all\n", m).started


REAL_SSH = {
    "host-key-changed": (
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "The fingerprint for the ED25519 key sent by the remote host is\n"
        "SHA256:abcDEF.\n"
        "Offending ED25519 key in /home/me/.ssh/known_hosts:3\n"
        "Host key for [10.0.0.5]:2222 has changed and you have requested strict checking.\n"
        "Host key verification failed.\n"
    ),
    "host-key-unknown": (
        "No ED25519 host key is known for [10.0.0.5]:2222 and you have requested strict "
        "checking.\nHost key verification failed.\n"
    ),
    "refused": "ssh: connect to host 10.0.0.5 port 2222: Connection refused\n",
    "connect-timeout": "Connection timed out during banner exchange\n",
    "auth": "ops@10.0.0.5: Permission denied (publickey).\n",
    "unknown-name": "ssh: Could not resolve hostname nope: Name or service not known\n",
    "unreachable": "ssh: connect to host 10.0.0.5 port 2222: No route to host\n",
    "ssh": "kex_exchange_identification: read: Connection reset by peer\n",
}


@pytest.mark.parametrize("kind", REAL_SSH)
def test_ssh_failures_in_one_line(kind: str) -> None:
    failure = transport.ssh_failure(
        REAL_SSH[kind].encode(), Host("h", "10.0.0.5", port=2222), Options()
    )
    assert failure.kind == kind
    assert "\n" not in failure.reason
    if kind == "host-key-changed":
        assert "the ED25519 key SHA256:abcDEF," in failure.reason
        assert "(/home/me/.ssh/known_hosts:3)" in failure.reason
    if kind == "ssh":
        assert (
            failure.reason
            == "ssh failed: kex_exchange_identification: read: Connection reset by peer"
        )


def test_a_step_error_is_panthers_own_line() -> None:
    answer = Answer(4, b"", b"warning: x\npanther: error: this command needs root\n")
    assert answer.error() == "this command needs root"
    assert Answer(124, b"", b"").error() == "timed out on the host"
    assert Answer(2, b"", b"").error() == "exit status 2"
    said = ask.problem("status", answer, Host("h", "x"))
    assert said.startswith("panther status: this command needs root (log in as root")
    assert "become" not in ask.problem("status", answer, Host("h", "x", become=("sudo",)))
