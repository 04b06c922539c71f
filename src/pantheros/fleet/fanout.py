"""Work on many hosts at once, at most `limit` at a time, one thread per running host.

Every host gets a result: a host whose work raised, was interrupted or never started still
gets its row (`on_error`, `not_started`), so no failure hides the others. A Ctrl-C (a
KeyboardInterrupt in the main thread) stops new hosts from starting and sets `stop`, which each
running host's work watches to end its connection; what finished is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pantheros.fleet.inventory import Host

log = logging.getLogger(__name__)

R = TypeVar("R")

WAITING = "waiting"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
INTERRUPTED = "interrupted"
NOT_STARTED = "not started"


@dataclass
class Job(Generic[R]):
    host: Host
    state: str = WAITING
    started: float | None = None
    ended: float | None = None
    note: str = ""  # what ended it: a summary when done, the reason when it failed
    result: R | None = None
    complete: bool = False  # set by its thread when the work returned
    thread: threading.Thread | None = None

    def elapsed(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        end = self.ended if self.ended is not None else (now or time.monotonic())
        return end - self.started


class Watcher(Protocol):
    """Told of every change of state (progress lines); `tick` after each turn of the loop,
    at least five times a second while hosts run."""

    def start(self, jobs: Sequence[Job[Any]], limit: int) -> None: ...
    def changed(self, job: Job[Any]) -> None: ...
    def tick(self) -> None: ...
    def interrupted(self) -> None: ...


@dataclass(frozen=True)
class Plan(Generic[R]):
    work: Callable[[Host, threading.Event], R]  # must end soon once the event is set
    outcome: Callable[[R], tuple[str, str]]  # (DONE | FAILED | INTERRUPTED, note)
    on_error: Callable[[Host, BaseException], R]
    not_started: Callable[[Host], R]


def run(
    hosts: Sequence[Host], plan: Plan[R], limit: int, watcher: Watcher
) -> tuple[list[Job[R]], bool]:
    """Run plan.work on every host, at most limit at once; the jobs (in the hosts' order, each
    with a result) and whether a Ctrl-C interrupted the run.

    The state of the run is read from the jobs themselves at every turn, so a Ctrl-C that lands
    anywhere in the loop loses no host: the next turn sees what the last one did not finish.
    """
    jobs: list[Job[R]] = [Job(host) for host in hosts]
    stop = threading.Event()
    wake = threading.Event()
    pending = deque(jobs)
    interrupted = False
    watcher.start(jobs, limit)

    def work(job: Job[R]) -> None:
        try:
            job.result = plan.work(job.host, stop)
        except Exception as exc:
            log.debug("%s: work raised", job.host.name, exc_info=True)
            job.result = plan.on_error(job.host, exc)
        finally:
            job.ended = time.monotonic()
            job.complete = True
            wake.set()

    while True:
        try:
            running = sum(1 for job in jobs if job.state == RUNNING)
            while not interrupted and pending and running < limit:
                job = pending.popleft()
                job.thread = threading.Thread(
                    target=work, args=(job,), name=f"fleet-{job.host.name}"
                )
                job.state, job.started = RUNNING, time.monotonic()
                running += 1
                job.thread.start()
                watcher.changed(job)
            for job in jobs:
                if job.state == RUNNING and job.complete:
                    assert job.result is not None
                    job.state, job.note = plan.outcome(job.result)
                    watcher.changed(job)
            watcher.tick()
            if not pending and not any(job.state == RUNNING for job in jobs):
                break
            if wake.wait(0.2):
                wake.clear()
        except KeyboardInterrupt:
            if not interrupted:
                interrupted = True
                stop.set()
                pending.clear()
                for job in jobs:
                    # Waiting, or taken from the queue by a turn the Ctrl-C cut short.
                    never = job.thread is None or job.thread.ident is None
                    if job.state == WAITING or (job.state == RUNNING and never):
                        job.state, job.result = NOT_STARTED, plan.not_started(job.host)
                        job.note = "not started: interrupted"
                watcher.interrupted()
    for job in jobs:
        if job.thread is not None and job.thread.ident is not None:
            job.thread.join()
    return jobs, interrupted
