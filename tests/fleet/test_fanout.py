"""The fan-out: its bound, a row for every host whatever happened, a Ctrl-C anywhere in its
loop, and the progress lines (a terminal, a log)."""

from __future__ import annotations

import io
import re
import threading
import time
from typing import Any

import pytest

from pantheros.fleet import fanout, progress
from pantheros.fleet.fanout import Job, Plan
from pantheros.fleet.inventory import Host

HOSTS = [Host(f"h{i:02d}", "127.0.0.1") for i in range(12)]


def plan(work: Any) -> Plan[str]:
    return Plan(
        work=work,
        outcome=lambda r: (
            (fanout.INTERRUPTED, r)
            if r == "stopped"
            else (fanout.FAILED, r)
            if r.startswith("error")
            else (fanout.DONE, r)
        ),
        on_error=lambda host, exc: f"error: {exc}",
        not_started=lambda host: "not started",
    )


def test_never_more_than_limit_at_once_and_every_host_answered() -> None:
    lock = threading.Lock()
    now = most = 0

    def work(host: Host, stop: threading.Event) -> str:
        nonlocal now, most
        with lock:
            now += 1
            most = max(most, now)
        time.sleep(0.05)
        with lock:
            now -= 1
        if host.name == "h05":
            raise RuntimeError("boom")
        return f"ok {host.name}"

    jobs, interrupted = fanout.run(HOSTS, plan(work), 3, progress.Quiet())
    assert not interrupted
    assert most == 3
    assert [j.host.name for j in jobs] == [h.name for h in HOSTS]
    assert jobs[5].result == "error: boom"
    assert jobs[5].state == fanout.FAILED
    assert all(j.state == fanout.DONE for j in jobs if j.host.name != "h05")
    assert all(j.started is not None and j.ended is not None for j in jobs)


class InterruptAfter(progress.Quiet):
    """A watcher whose tick raises KeyboardInterrupt once, as a Ctrl-C would, after n hosts."""

    def __init__(self, jobs_done: int) -> None:
        self.jobs_done = jobs_done
        self.jobs: list[Job[Any]] = []
        self.fired = False
        self.told = 0

    def start(self, jobs: Any, limit: int) -> None:
        self.jobs = list(jobs)

    def tick(self) -> None:
        done = sum(1 for j in self.jobs if j.state == fanout.DONE)
        if done >= self.jobs_done and not self.fired:
            self.fired = True
            raise KeyboardInterrupt

    def interrupted(self) -> None:
        self.told += 1


def test_a_ctrl_c_keeps_what_finished_and_ends_what_runs() -> None:
    def work(host: Host, stop: threading.Event) -> str:
        if host.name in ("h00", "h01"):
            return "ok"
        stop.wait(30)  # a slow host: it ends when told to
        return "stopped" if stop.is_set() else "ok"

    watcher = InterruptAfter(2)
    started = time.monotonic()
    jobs, interrupted = fanout.run(HOSTS, plan(work), 4, watcher)
    assert time.monotonic() - started < 10
    assert interrupted
    assert watcher.told == 1
    states = [j.state for j in jobs]
    assert states[:2] == [fanout.DONE, fanout.DONE]
    # Came when h00 and h01 were seen done, before their places went to others.
    assert states[2:4] == [fanout.INTERRUPTED] * 2
    assert states[4:] == [fanout.NOT_STARTED] * 8
    assert all(j.result is not None for j in jobs)
    assert jobs[-1].result == "not started"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def visible(text: str) -> str:
    return re.sub(r"\033\[[0-9;]*[A-Za-z]", "", text)


def test_a_terminal_gets_a_line_per_host_redrawn_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "6")
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = Terminal()
    live = progress.watcher(stream, quiet=False)
    assert isinstance(live, progress.Live)
    jobs: list[Job[Any]] = [Job(Host(f"host-with-a-long-name-{i}", "x")) for i in range(8)]
    live.start(jobs, 2)
    live.tick()
    first = stream.getvalue()
    # Room for LINES - 2: running and waiting hosts, the last line says how many more wait.
    assert visible(first).splitlines() == [
        "host-with-a-long-name-0  waiting",
        "host-with-a-long-name-1  waiting",
        "host-with-a-long-name-2  waiting",
        "... and 5 more waiting",
    ]
    jobs[0].state, jobs[0].started = fanout.RUNNING, time.monotonic()
    jobs[1].state, jobs[1].started, jobs[1].ended = fanout.FAILED, 0.0, 1.5
    jobs[1].note = "connection refused by a host whose reason is long"
    live.tick()
    second = stream.getvalue()[len(first) :]
    assert second.startswith("\033[4F\033[J")  # up over the four live lines, cleared
    lines = visible(second).splitlines()
    assert lines[0] == "host-with-a-long-name-1  failed 1.5s: c"  # printed once, cut to 39
    assert lines[1].startswith("host-with-a-long-name-0  running")
    assert all(len(line) <= 39 for line in lines)
    live.tick()
    third = visible(stream.getvalue()[len(first) + len(second) :])
    assert "failed" not in third  # a finished host is printed once
    assert "\033[31m" in second  # red, on a terminal without NO_COLOR


def test_a_log_gets_plain_lines() -> None:
    stream = io.StringIO()
    lines = progress.watcher(stream, quiet=False)
    assert isinstance(lines, progress.Lines)
    job: Job[Any] = Job(Host("web1", "x"))
    lines.start([job], 10)
    job.state = fanout.RUNNING
    lines.changed(job)
    job.state, job.started, job.ended, job.note = fanout.DONE, 0.0, 2.25, "root fresh"
    lines.changed(job)
    assert stream.getvalue().splitlines() == [
        "panther fleet: 1 host(s), at most 10 at a time",
        "panther fleet: web1  running",
        "panther fleet: web1  done 2.2s: root fresh",
    ]
    assert progress.watcher(io.StringIO(), quiet=True).__class__ is progress.Quiet
