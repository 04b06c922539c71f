"""Asking one host over SSH: the system OpenSSH client, one connection per host, one POSIX shell
script sent on its stdin that runs each `panther ... --json` and frames every answer.

- ssh runs with BatchMode (never a prompt), StrictHostKeyChecking (a key that changed is refused
  and reported, never accepted), a connect timeout, and a total deadline enforced here: a host
  that hangs is ended, not waited for. These options come first on the command line, so neither
  the inventory's ssh_options nor ~/.ssh/config can weaken them (ssh keeps the first value).
- The script is read by `sh -s`, so the login shell (bash, zsh, fish) never parses it. Each
  answer is framed by a random marker with its exit status and byte counts: whatever a host
  prints (a login banner, a hostile file name in a JSON string) cannot forge or shift a frame.
- ssh gets its own process group: a Ctrl-C on the terminal reaches panther, which then ends
  each running ssh itself (SIGTERM, then SIGKILL) and keeps what had arrived.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import selectors
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

from pantheros import process
from pantheros.fleet.inventory import Host

# What one host may send before it is cut off (a diff of a very changed root is a few MB).
MAX_OUTPUT = 64 * 1024 * 1024
# How long an ended ssh gets to leave after its stdin closed, then after a SIGTERM.
STDIN_GRACE = 1.0
GRACE = 2.0
NIXOS_PANTHER = "/run/current-system/sw/bin/panther"


@dataclass(frozen=True)
class Options:
    connect_timeout: int = 10
    timeout: float = 120.0  # total, per host
    # StrictHostKeyChecking=accept-new: a key known_hosts lacks is added; a changed one refused.
    accept_new: bool = False
    ssh_options: tuple[str, ...] = ()  # `--ssh-option`, for every host, after the host's own


def ssh_argv(host: Host, options: Options) -> list[str]:
    """The ssh command line for host. Ours first: ssh keeps the first value of each option."""
    assert host.address is not None
    argv = [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"StrictHostKeyChecking={'accept-new' if options.accept_new else 'yes'}",
        "-o",
        f"ConnectTimeout={options.connect_timeout}",
        "-o",
        "ConnectionAttempts=1",
    ]
    if host.port is not None:
        argv += ["-p", str(host.port)]
    if host.user is not None:
        argv += ["-l", host.user]
    if host.identity is not None:
        argv += ["-i", host.identity, "-o", "IdentitiesOnly=yes"]
    for option in host.ssh_options:
        argv += ["-o", option]
    argv += host.ssh_args
    for option in options.ssh_options:
        argv += ["-o", option]
    return [*argv, "--", host.address, "sh", "-s"]


# The script


@dataclass(frozen=True)
class Step:
    """One command the script runs on the host; `panther`: its argv follows the host's panther."""

    name: str
    argv: tuple[str, ...]
    panther: bool = True


SYSTEM_STEPS = (
    Step("hostname", ("uname", "-n"), panther=False),
    Step("booted", ("readlink", "/run/booted-system"), panther=False),
    Step("current", ("readlink", "/run/current-system"), panther=False),
    Step("profile", ("readlink", "/nix/var/nix/profiles/system"), panther=False),
)


def script(host: Host, steps: Sequence[Step], marker: str, timeout: float) -> str:
    """The POSIX shell script that runs steps on host and frames each answer.

    All of it is one function, called on the last line: the shell has read every line before
    anything runs, so the rest of the connection's stdin is free for the watchdog. The watchdog
    waits for that stdin to end (panther closes it, or the connection is gone) and then ends the
    script's whole process group, so no step outlives the run that asked for it. Each step is
    also bounded on the host by `timeout`, in the foreground (in that same group).
    """
    q = shlex.quote
    seconds = max(1, int(timeout))
    lines = [
        f"M={q(marker)}",
        "main() {",
        "exec 3<&0 </dev/null",
        "printf '%s start\\n' \"$M\"",
        't=$(mktemp -d 2>/dev/null) || t=""',
        'if [ -z "$t" ] || [ ! -d "$t" ]; then',
        "  printf '%s fatal %s\\n' \"$M\" 'cannot make a temporary directory (mktemp -d)'",
        "  exit 0",
        "fi",
        "trap 'rm -rf \"$t\"' EXIT",
        "trap 'exit 129' HUP",
        "trap 'exit 143' TERM",
        "{ cat <&3 >/dev/null 2>&1; kill -TERM 0; } >/dev/null 2>&1 &",
        "exec 3<&-",
        "T=",
        f"if timeout --foreground -k 5 {seconds} true >/dev/null 2>&1; then",
        f'  T="timeout --foreground -k 5 {seconds}"',
        "fi",
        "step() {",
        "  n=$1; shift",
        '  $T "$@" </dev/null >"$t/o" 2>"$t/e"',
        "  r=$?",
        '  printf \'%s step %s %s %s %s\\n\' "$M" "$n" "$r" '
        '"$(($(wc -c <"$t/o")))" "$(($(wc -c <"$t/e")))"',
        '  cat "$t/o" "$t/e"',
        "}",
    ]
    found = False
    for step in steps:
        if step.panther and not found:
            found = True
            lines.append(f'P=$(command -v {q(host.panther)} 2>/dev/null) || P=""')
            if host.panther == "panther":
                lines.append(
                    f'if [ -z "$P" ] && [ -x {NIXOS_PANTHER} ]; then P={NIXOS_PANTHER}; fi'
                )
            lines += [
                'if [ -z "$P" ]; then printf \'%s nopanther %s\\n\' "$M" "$PATH"; exit 0; fi',
                'printf \'%s panther %s\\n\' "$M" "$P"',
            ]
        words = [q(step.name)]
        if step.panther:
            words += [*(q(w) for w in host.become), '"$P"']
        words += [q(a) for a in step.argv]
        lines.append("step " + " ".join(words))
    lines += ["printf '%s end\\n' \"$M\"", "}", "main; exit"]
    return "\n".join(lines) + "\n"


# The answer


@dataclass(frozen=True)
class Answer:
    """What one step printed on the host."""

    returncode: int
    stdout: bytes
    stderr: bytes

    def error(self) -> str:
        """The one line that says why it failed: panther's own error line when there is one."""
        lines = [
            line.strip()
            for line in self.stderr.decode("utf-8", "replace").splitlines()
            if line.strip()
        ]
        said = [line for line in lines if line.startswith("panther: error: ")]
        if said:
            return said[-1].removeprefix("panther: error: ")
        if self.returncode == 124:
            return "timed out on the host"
        if self.returncode == 127:
            return "command not found on the host"
        return lines[-1] if lines else f"exit status {self.returncode}"


@dataclass
class Frames:
    started: bool = False
    ended: bool = False
    answers: dict[str, Answer] = field(default_factory=dict)
    panther: str | None = None  # where the script found panther
    missing_panther: str | None = None  # the PATH it searched, when it found none
    fatal: str | None = None
    garbled: bool = False


def parse(stdout: bytes, marker: str) -> Frames:
    """The framed answers in stdout, up to where they stop (a cut connection ends them)."""
    m = marker.encode() + b" "
    frames = Frames()
    begin = stdout.find(m + b"start\n")
    if begin < 0:
        return frames
    frames.started = True
    pos = begin + len(m) + len(b"start\n")
    while pos < len(stdout):
        if not stdout.startswith(m, pos):
            frames.garbled = True
            break
        end = stdout.find(b"\n", pos)
        if end < 0:
            break
        kind, _, rest = stdout[pos + len(m) : end].decode("utf-8", "replace").partition(" ")
        pos = end + 1
        if kind == "step":
            try:
                name, code, out_len, err_len = rest.split(" ")
                sizes = int(out_len), int(err_len)
                returncode = int(code)
            except ValueError:
                frames.garbled = True
                break
            if pos + sum(sizes) > len(stdout):
                break
            out = stdout[pos : pos + sizes[0]]
            err = stdout[pos + sizes[0] : pos + sum(sizes)]
            pos += sum(sizes)
            frames.answers[name] = Answer(returncode, out, err)
        elif kind == "panther":
            frames.panther = rest
        elif kind == "nopanther":
            frames.missing_panther = rest
        elif kind == "fatal":
            frames.fatal = rest
        elif kind == "end":
            frames.ended = True
            break
        else:
            frames.garbled = True
            break
    return frames


# One session


@dataclass(frozen=True)
class Session:
    returncode: int | None  # None: ended here (deadline, interruption, too much output)
    stdout: bytes
    stderr: bytes
    elapsed: float
    timed_out: bool = False
    interrupted: bool = False
    overflow: bool = False


def run(argv: Sequence[str], stdin: bytes, timeout: float, stop: threading.Event) -> Session:
    """Run argv (ssh) with stdin, reading its output until it exits, the deadline passes, or
    stop is set; then it is ended (see _end)."""
    started = time.monotonic()
    deadline = started + timeout
    proc = process.start(argv, new_session=True)
    assert proc.stdin is not None
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        # Written whole and kept open: its end is what tells the host's watchdog to stop.
        proc.stdin.write(stdin)
        proc.stdin.flush()
    except BrokenPipeError:
        pass  # ssh is gone already: its stderr says why
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    size = 0
    timed_out = interrupted = overflow = False
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        while selector.get_map():
            now = time.monotonic()
            if stop.is_set():
                interrupted = True
                break
            if now >= deadline:
                timed_out = True
                break
            for key, _ in selector.select(min(0.1, deadline - now)):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    selector.unregister(key.fileobj)
                    continue
                chunks[key.fd].append(data)
                size += len(data)
            if size > MAX_OUTPUT:
                overflow = True
                break
    ended_here = timed_out or interrupted or overflow
    if ended_here:
        _end(proc)
    else:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = ended_here = True
            _end(proc)
    out, err = (b"".join(chunks[f.fileno()]) for f in (proc.stdout, proc.stderr))
    _close(proc.stdin)
    proc.stdout.close()
    proc.stderr.close()
    return Session(
        returncode=None if ended_here else proc.returncode,
        stdout=out,
        stderr=err,
        elapsed=time.monotonic() - started,
        timed_out=timed_out,
        interrupted=interrupted,
        overflow=overflow,
    )


def _close(stream: IO[bytes]) -> None:
    with contextlib.suppress(BrokenPipeError):
        stream.close()


def _end(proc: subprocess.Popen[bytes]) -> None:
    """End a session: its stdin first (the host's watchdog ends what runs there, and ssh
    leaves with it), then SIGTERM to ssh's process group, then SIGKILL if it lingers."""
    assert proc.stdin is not None
    _close(proc.stdin)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STDIN_GRACE)
        return
    for sig, wait in ((signal.SIGTERM, GRACE), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


# Why a connection failed


@dataclass(frozen=True)
class Failure:
    kind: str
    reason: str


def ssh_failure(stderr: bytes, host: Host, options: Options) -> Failure:
    """What ssh's own messages (exit 255) say went wrong, as one line."""
    text = stderr.decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    where = f"{host.address} port {host.port or 22}"
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have" in text:
        offending = re.search(r"Offending \S+ key in (\S+)", text)
        sent = re.search(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+)", text)
        what = f"the {sent.group(1)} key {sent.group(2).rstrip('.')}" if sent else "a key"
        known = f" ({offending.group(1)})" if offending else ""
        return Failure(
            "host-key-changed",
            f"host key changed: {where} sent {what}, not the one known_hosts has{known}; "
            "refused, not accepted (check the host, then correct known_hosts)",
        )
    if "host key is known for" in text or "Host key verification failed" in text:
        return Failure(
            "host-key-unknown",
            f"host key of {where} is not in known_hosts: refused (check its fingerprint, then "
            "add it, e.g. with ssh-keyscan; or run with --accept-new-host-keys)",
        )
    if "Connection refused" in text:
        return Failure("refused", f"connection refused by {where}")
    if "timed out" in text.lower():
        return Failure(
            "connect-timeout", f"no SSH answer from {where} within {options.connect_timeout}s"
        )
    if "Permission denied" in text:
        denied = next(line for line in lines if "Permission denied" in line)
        return Failure("auth", f"login refused: {denied}")
    if "Could not resolve hostname" in text:
        return Failure("unknown-name", f"cannot resolve the host name {host.address}")
    if "No route to host" in text or "Network is unreachable" in text:
        return Failure("unreachable", f"{where}: no route to the host")
    meaningful = [line for line in lines if not line.startswith("Warning: Permanently added")]
    return Failure("ssh", f"ssh failed: {meaningful[-1] if meaningful else 'exit status 255'}")


def new_marker() -> str:
    return f"@@pantheros-fleet-{secrets.token_hex(8)}"
