"""`panther fleet status` and `panther fleet audit`: the handlers. The work is in
pantheros.fleet; here are the arguments, the output and the exit code."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pantheros import process, ui
from pantheros.errors import UsageError
from pantheros.fleet import ask, audit, fanout, inventory, progress, status
from pantheros.fleet.inventory import Host
from pantheros.fleet.transport import Failure, Options

INTERRUPTED = 130
R = TypeVar("R")


@dataclass(frozen=True)
class Fleet:
    """The options every `panther fleet` command takes."""

    inventory: list[str]
    colmena: list[str]
    deploy_rs: list[str]
    on: list[str]
    limit: int
    connect_timeout: int
    timeout: float
    accept_new_host_keys: bool
    ssh_option: list[str]
    quiet: bool
    json: bool


@dataclass(frozen=True)
class FleetStatus(Fleet):
    pass


@dataclass(frozen=True)
class FleetAudit(Fleet):
    sarif: bool
    output: str | None
    fail_on: str
    level: str | None


def _hosts(args: Fleet) -> list[Host]:
    found = inventory.load(args.inventory, args.colmena, args.deploy_rs)
    hosts = found.select(args.on)
    if any(host.address is not None for host in hosts):
        process.require("ssh")  # once, as one line, not once per host
    return hosts


def _options(args: Fleet) -> Options:
    if args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give at least 1 host at a time")
    if args.connect_timeout < 1:
        raise UsageError(f"--connect-timeout {args.connect_timeout}: give at least 1 second")
    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds above 0")
    for option in args.ssh_option:
        if not inventory.SSH_OPTION.fullmatch(option):
            raise UsageError(f"--ssh-option {option!r}: give KEY=VALUE, e.g. ProxyJump=bastion")
    return Options(
        connect_timeout=args.connect_timeout,
        timeout=args.timeout,
        accept_new=args.accept_new_host_keys,
        ssh_options=tuple(args.ssh_option),
    )


def _run(
    hosts: list[Host],
    args: Fleet,
    work: Callable[[Host, threading.Event], R],
    outcome: Callable[[R], tuple[str, str]],
    failed: Callable[[Host, Failure], R],
) -> tuple[list[R], bool]:
    plan = fanout.Plan(
        work=work,
        outcome=outcome,
        on_error=lambda host, exc: failed(
            host, Failure("internal", f"panther could not read its answer: {exc!r}")
        ),
        not_started=lambda host: failed(host, ask.NOT_STARTED),
    )
    jobs, interrupted = fanout.run(
        hosts, plan, args.limit, progress.watcher(sys.stderr, args.quiet)
    )
    rows = [job.result for job in jobs]
    assert all(row is not None for row in rows)
    return [row for row in rows if row is not None], interrupted


def _said(rows: list[Any], interrupted: bool) -> None:
    states = Counter(
        "error" if row.error is not None else "ok" if row.exit_code == 0 else "failed"
        for row in rows
    )
    words = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    ui.info(f"panther fleet: {len(rows)} host(s): {words}")
    if interrupted:
        ui.info("panther: interrupted")


def cmd_fleet_status(args: FleetStatus) -> int:
    hosts = _hosts(args)
    options = _options(args)
    rows, interrupted = _run(
        hosts,
        args,
        lambda host, stop: status.collect(ask.ask(host, status.STEPS, options, stop)),
        status.outcome,
        status.failed,
    )
    code = INTERRUPTED if interrupted else status.exit_code(rows)
    if args.json:
        ui.emit_json(
            {
                "hosts": [row.as_json() for row in rows],
                "interrupted": interrupted,
                "exit_code": code,
            }
        )
    else:
        for line in status.table(rows, sys.stdout):
            ui.result(line)
    _said(rows, interrupted)
    return code


def _levels() -> list[str]:
    table = json.loads(resources.files("pantheros").joinpath("data/hardening.json").read_text())
    return list(table["levels"])


def cmd_fleet_audit(args: FleetAudit) -> int:
    if args.level is not None and args.level not in _levels():
        raise UsageError(f"unknown level {args.level!r} (one of {', '.join(_levels())})")
    hosts = _hosts(args)
    options = _options(args)
    steps = audit.steps(args.sarif, args.fail_on, args.level)
    rows, interrupted = _run(
        hosts,
        args,
        lambda host, stop: audit.collect(ask.ask(host, steps, options, stop), args.sarif),
        audit.outcome,
        audit.failed,
    )
    code = INTERRUPTED if interrupted else audit.exit_code(rows)
    stream = None if args.output else sys.stdout
    if args.sarif:
        out = json.dumps(audit.merged_sarif(rows), indent=2)
    elif args.json:
        out = json.dumps(
            {
                "hosts": [row.as_json() for row in rows],
                "fail_on": args.fail_on,
                "interrupted": interrupted,
                "exit_code": code,
            },
            indent=2,
        )
    else:
        out = "\n".join(audit.table(rows, stream))
    if args.output:
        try:
            Path(args.output).write_text(out + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write the report to {args.output}: {exc.strerror}") from None
    else:
        ui.result(out)
    _said(rows, interrupted)
    return code
