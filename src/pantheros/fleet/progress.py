"""Progress of a fleet run on stderr: on a terminal, a line per host redrawn in place (running
and waiting hosts below, each finished host printed once above them, done or failed); else
plain lines, one per start and one per end, for logs."""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pantheros import ui
from pantheros.fleet import fanout
from pantheros.fleet.fanout import Job

COLOR = {
    fanout.DONE: "green",
    fanout.FAILED: "red",
    fanout.INTERRUPTED: "yellow",
    fanout.NOT_STARTED: "yellow",
    fanout.RUNNING: "bold",
    fanout.WAITING: "dim",
}


def _line(job: Job[Any], width: int, now: float, live: bool = True) -> tuple[str, str]:
    """The host's line and its colour."""
    text = f"{job.host.name:<{width}}  {job.state}"
    if job.state in (fanout.DONE, fanout.FAILED, fanout.INTERRUPTED) or (
        job.state == fanout.RUNNING and live
    ):
        text += f" {job.elapsed(now):.1f}s"
    if job.note and job.state != fanout.NOT_STARTED:
        text += f": {job.note}"
    return ui.printable(text), COLOR[job.state]


class Quiet:
    def start(self, jobs: Sequence[Job[Any]], limit: int) -> None:
        pass

    def changed(self, job: Job[Any]) -> None:
        pass

    def tick(self) -> None:
        pass

    def interrupted(self) -> None:
        pass


class Lines:
    """Plain lines, for a log: a host's start and its end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.width = 0

    def _say(self, text: str) -> None:
        print(f"panther fleet: {text}", file=self.stream, flush=True)

    def start(self, jobs: Sequence[Job[Any]], limit: int) -> None:
        self.width = max((len(j.host.name) for j in jobs), default=0)
        self._say(f"{len(jobs)} host(s), at most {limit} at a time")

    def changed(self, job: Job[Any]) -> None:
        self._say(_line(job, self.width, time.monotonic(), live=False)[0])

    def tick(self) -> None:
        pass

    def interrupted(self) -> None:
        self._say("interrupted: no new host starts; the running ones are being ended")


class Live:
    """A line per host on a terminal, redrawn in place."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.jobs: Sequence[Job[Any]] = ()
        self.shown: set[int] = set()  # finished jobs already printed above the live lines
        self.drawn = 0
        self.width = 0
        self.note = ""

    def start(self, jobs: Sequence[Job[Any]], limit: int) -> None:
        self.jobs = jobs
        self.width = max((len(j.host.name) for j in jobs), default=0)

    def changed(self, job: Job[Any]) -> None:
        pass  # drawn at the next tick, once for every change of the turn

    def tick(self) -> None:
        self._draw()

    def interrupted(self) -> None:
        self.note = "interrupted: no new host starts; the running ones are being ended"
        self._draw()

    def _draw(self) -> None:
        size = shutil.get_terminal_size()
        now = time.monotonic()
        out = []
        if self.drawn:
            out.append(f"\033[{self.drawn}F\033[J")  # up to the first live line, clear below
        finished = [
            j
            for j in self.jobs
            if j.state not in (fanout.RUNNING, fanout.WAITING) and id(j) not in self.shown
        ]
        finished.sort(key=lambda j: j.ended or 0.0)
        for job in finished:
            self.shown.add(id(job))
            out.append(self._painted(job, size.columns, now) + "\n")
        live = [j for j in self.jobs if j.state == fanout.RUNNING]
        live += [j for j in self.jobs if j.state == fanout.WAITING]
        room = max(1, size.lines - 2 - (1 if self.note else 0))
        lines = [self._painted(j, size.columns, now) for j in live[:room]]
        if len(live) > room:
            lines[-1] = ui.paint(f"... and {len(live) - room + 1} more waiting", "dim", self.stream)
        if self.note:
            lines.append(ui.paint(self.note[: size.columns - 1], "yellow", self.stream))
        out += [line + "\n" for line in lines]
        self.drawn = len(lines)
        self.stream.write("".join(out))
        self.stream.flush()

    def _painted(self, job: Job[Any], columns: int, now: float) -> str:
        text, color = _line(job, self.width, now)
        # Never wrapped: a wrapped line would throw off the count of lines to redraw.
        return ui.paint(text[: max(1, columns - 1)], color, self.stream)


def watcher(stream: TextIO, quiet: bool) -> Quiet | Lines | Live:
    if quiet:
        return Quiet()
    isatty = getattr(stream, "isatty", None)
    return Live(stream) if isatty and isatty() else Lines(stream)
