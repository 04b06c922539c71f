"""The command line of `panther-spec` (and of `panther spec`, which declares the same actions).

argparse, as `panther` has it. Each action's module runs only when that action does: building
the parser imports none of them, so `panther --version` does not pay for the spec tools.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from panther_spec import ui
from panther_spec.errors import ExitCode, SpecError, UsageError

Handler = Callable[[argparse.Namespace], int]


def _lazy(name: str) -> ModuleType:
    """A module that runs at the first use of one of its attributes."""
    if name in sys.modules:
        return sys.modules[name]
    found = importlib.util.find_spec(name)
    assert found is not None, name
    assert found.loader is not None, name
    found.loader = importlib.util.LazyLoader(found.loader)
    module = importlib.util.module_from_spec(found)
    sys.modules[name] = module
    found.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    from panther_spec import commands, progress, trace
else:
    commands = _lazy("panther_spec.commands")
    progress = _lazy("panther_spec.progress")
    trace = _lazy("panther_spec.trace")


def _on(parser: argparse.ArgumentParser, handler: Callable[[], Handler]) -> None:
    parser.set_defaults(spec_handler=handler, command_parser=parser)


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Declare the actions on parser: `panther-spec`'s own, or the `spec` of `panther`.

    Each leaf's `spec_handler` default is a lambda returning its handler, so that no handler
    module runs before its command does (`run` calls it).
    """
    ssub = parser.add_subparsers(dest="spec_action", metavar="ACTION")
    ssub.required = True
    p = ssub.add_parser("list", help="changes (default) or specs")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--specs", action="store_true", help="list the specs")
    which.add_argument("--changes", action="store_true", help="list the active changes (default)")
    p.add_argument(
        "--sort",
        choices=["recent", "name"],
        default="recent",
        help="changes by last modification (default) or by name",
    )
    p.add_argument("--json", action="store_true", help="the list as JSON")
    _on(p, lambda: commands.cmd_list)
    p = ssub.add_parser("show", help="a change or a spec")
    p.add_argument("item", metavar="ITEM", help="a change id or a spec id")
    p.add_argument("--json", action="store_true", help="the item as JSON")
    p.add_argument(
        "--type", choices=["change", "spec"], help="what ITEM is, when a change and a spec share it"
    )
    p.add_argument(
        "--deltas-only",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    p.add_argument(
        "--requirements", action="store_true", help="spec JSON: requirements without scenarios"
    )
    p.add_argument("--no-scenarios", action="store_true", help="spec JSON: leave scenarios out")
    p.add_argument(
        "-r", "--requirement", type=int, metavar="N", help="spec JSON: only requirement N (from 1)"
    )
    p.add_argument(
        "--no-interactive",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    _on(p, lambda: commands.cmd_show)
    p = ssub.add_parser("validate", help="validate changes and specs")
    p.add_argument("item", nargs="?", metavar="ITEM", help="a change id or a spec id")
    p.add_argument("--all", action="store_true", help="every change and spec")
    p.add_argument("--changes", action="store_true", help="every active change")
    p.add_argument("--specs", action="store_true", help="every spec")
    p.add_argument(
        "--type", choices=["change", "spec"], help="what ITEM is, when a change and a spec share it"
    )
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--json", action="store_true", help="the results as JSON")
    p.add_argument(
        "--no-interactive",
        action="store_true",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="accepted as the OpenSpec CLI does; no effect here",
    )
    _on(p, lambda: commands.cmd_validate)
    p = ssub.add_parser("archive", help="apply a change's deltas to the specs and archive it")
    p.add_argument("change", nargs="?", metavar="CHANGE", help="the change id (optional with one)")
    p.add_argument(
        "-y",
        "--yes",
        action="store_true",
        help="confirm: incomplete tasks, spec updates, no checks",
    )
    p.add_argument(
        "--skip-specs", action="store_true", help="archive without applying the deltas to specs"
    )
    p.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip validation (needs --yes)",
    )
    p.add_argument("--json", action="store_true", help="the outcome as JSON")
    _on(p, lambda: commands.cmd_archive)
    p = ssub.add_parser("new", help="scaffold a change: proposal, tasks and a delta spec")
    p.add_argument("change", metavar="CHANGE", help="the new change's id, in kebab-case")
    p.add_argument("--capability", metavar="CAP", help="the capability its delta spec touches")
    p.add_argument("--json", action="store_true", help="what was made, as JSON")
    _on(p, lambda: commands.cmd_new)
    p = ssub.add_parser("diff", help="the requirement-level effect of a change, before archiving")
    p.add_argument("change", metavar="CHANGE", help="the change id")
    p.add_argument("--json", action="store_true", help="the effect as JSON")
    _on(p, lambda: commands.cmd_diff)
    p = ssub.add_parser("trace", help="which tests exercise each scenario; --run runs them")
    p.add_argument("--tests", metavar="DIR", help="test directory (default: tests/ at the root)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--run", action="store_true", help="run the traced tests (pytest) and report")
    how.add_argument(
        "--results",
        metavar="FILE",
        help="report from a test run that loaded -p panther_spec.pytest_trace",
    )
    p.add_argument("--strict", action="store_true", help="exit 1 also if a scenario is untested")
    p.add_argument("--json", action="store_true", help="the trace as JSON")
    _on(p, lambda: trace.cmd_trace)
    p = ssub.add_parser("status", help="artifact completion of a change")
    p.add_argument("--change", metavar="ID", help="the change (needed when there are several)")
    p.add_argument("--all", action="store_true", help="every active change")
    p.add_argument("--json", action="store_true", help="the status as JSON")
    _on(p, lambda: progress.cmd_status)
    p = ssub.add_parser("view", help="dashboard of changes, tasks and specs")
    p.add_argument("--json", action="store_true", help="the dashboard as JSON")
    _on(p, lambda: progress.cmd_view)


def run(args: argparse.Namespace) -> int:
    """Run the action parsed into args; a SpecError propagates to the caller's one-line report."""
    handler: Callable[[], Handler] = args.spec_handler
    return handler()(args)


class Parser(argparse.ArgumentParser):
    """`panther-spec`'s own parser: a usage error is one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        where = self.prog.removeprefix("panther-spec").strip()
        raise UsageError(f"{where + ': ' if where else ''}{message}")


def build_parser() -> Parser:
    parser = Parser(
        prog="panther-spec",
        description="OpenSpec change management (compatible with the OpenSpec CLI)",
    )
    add_commands(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return run(build_parser().parse_args(argv))
    except SpecError as exc:
        line = f"panther-spec: error: {exc}"
        print(ui.paint(line, "red", sys.stderr), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("panther-spec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return ExitCode.OK
