"""One host, asked once: connect, run the steps, and say in one line why not when it failed."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from pantheros import ui
from pantheros.fleet import transport
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import Answer, Failure, Frames, Options, Step

# What a host that never answered is, in the report's terms.
INTERRUPTED = Failure("interrupted", "interrupted: its connection was ended")
NOT_STARTED = Failure("not-started", "not started: the run was interrupted")


@dataclass(frozen=True)
class Reply:
    host: Host
    failure: Failure | None  # why the host could not be asked (its row says this)
    frames: Frames
    elapsed: float

    def answer(self, name: str) -> Answer | None:
        return self.frames.answers.get(name)


def ask(host: Host, steps: Sequence[Step], options: Options, stop: threading.Event) -> Reply:
    if host.address is None:
        failure = Failure(
            "no-address", "no SSH address: its deployer reaches it only locally (targetHost null)"
        )
        return Reply(host, failure, Frames(), 0.0)
    marker = transport.new_marker()
    code = transport.script(host, steps, marker, options.timeout)
    session = transport.run(transport.ssh_argv(host, options), code.encode(), options.timeout, stop)
    frames = transport.parse(session.stdout, marker)
    return Reply(host, failure_of(host, steps, options, session, frames), frames, session.elapsed)


def failure_of(
    host: Host,
    steps: Sequence[Step],
    options: Options,
    session: transport.Session,
    frames: Frames,
) -> Failure | None:
    running = next((s for s in steps if s.name not in frames.answers), None)
    if not frames.started:
        doing = " (connecting or logging in)"
    elif running is not None:
        doing = f" (running {'panther ' if running.panther else ''}{' '.join(running.argv)})"
    else:
        doing = ""
    if session.interrupted:
        return Failure(INTERRUPTED.kind, f"interrupted after {session.elapsed:.1f}s{doing}")
    if session.overflow:
        return Failure("output", f"sent more than {transport.MAX_OUTPUT >> 20} MiB: cut off{doing}")
    if session.timed_out:
        return Failure("timeout", f"no complete answer within {options.timeout:g}s{doing}")
    stderr = session.stderr
    if not frames.started and session.returncode == 255:
        return transport.ssh_failure(stderr, host, options)
    if frames.fatal is not None:
        return Failure("host", f"the host cannot run panther's script: {frames.fatal}")
    if frames.missing_panther is not None:
        return Failure(
            "no-panther",
            f"panther is not installed on the host: no {host.panther!r} in its PATH "
            f"({frames.missing_panther})",
        )
    last = _last_line(stderr)
    if not frames.started:
        return Failure(
            "shell",
            f"the host did not run panther's script (exit {session.returncode})"
            + (f": {last}" if last else ""),
        )
    if frames.garbled:
        return Failure("output", "its answer is not in the form panther sent for")
    if not frames.ended:
        return Failure(
            "cut",
            f"the connection ended early (exit {session.returncode}){doing}"
            + (f": {last}" if last else ""),
        )
    return None


def _last_line(stderr: bytes) -> str:
    lines = [
        line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()
    ]
    return ui.printable(lines[-1]) if lines else ""


def problem(step: str, answer: Answer, host: Host) -> str:
    """One line for a step that ran on the host and failed there."""
    said = answer.error()
    if answer.returncode == 4 and not host.become:
        said += ' (log in as root, or set `become` for this host, e.g. ["sudo", "-n"])'
    return f"panther {step}: {said}"
