"""A pytest plugin for `panther spec trace`: records, per scenario-marked test, the scenarios it
names and how it ended. `trace --run` also has it run only those tests; loaded into a whole test
run instead, it records as a side effect and `trace --results` reports without running anything.

Loaded with `-p panther_spec.pytest_trace`; it writes its results to the file named by the
environment variable trace.RESULT_ENV.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from panther_spec.trace import ONLY_TRACED_ENV, RESULT_ENV

_results: dict[str, dict[str, Any]] = {}


def pytest_configure(config: pytest.Config) -> None:
    # A project that never declared the marker still runs under --strict-markers.
    config.addinivalue_line("markers", "scenario(name): the OpenSpec scenario this test exercises")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    traced, untraced = [], []
    for item in items:
        names = [str(m.args[0]) for m in item.iter_markers("scenario") if m.args]
        if names:
            _results[item.nodeid] = {"scenarios": names, "outcome": "not run", "reason": ""}
            traced.append(item)
        else:
            untraced.append(item)
    if untraced and os.environ.get(ONLY_TRACED_ENV):
        config.hook.pytest_deselected(items=untraced)
        items[:] = traced


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    entry = _results.get(report.nodeid)
    if entry is None:
        return
    if report.failed:
        entry["outcome"] = "failed"
        entry["reason"] = f"{report.when}: {report.longreprtext.strip().splitlines()[-1:]}"
    elif report.skipped and entry["outcome"] != "failed":
        entry["outcome"] = "skipped"
        longrepr = report.longrepr
        entry["reason"] = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    elif report.when == "call" and entry["outcome"] == "not run":
        entry["outcome"] = "passed"


def pytest_sessionfinish(session: pytest.Session) -> None:
    path = os.environ.get(RESULT_ENV)
    if path:
        with open(path, "w") as out:
            json.dump(_results, out)
