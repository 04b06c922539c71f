"""The floors of the house hold (docs/architecture.md), and no import runs in a circle.

Read from the source with `ast`: every import, also inside functions and `if TYPE_CHECKING`, so an
upward import or a cycle fails here before a reader or a circular import finds it. A module may
import from its own package and from the floors below its own; packages that share a floor are
independent of each other. `panther_spec` is a package of its own: it imports nothing from
`pantheros`, and only the command line imports it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

from tests.helpers import REPO

SRC = REPO / "src"

# Top first; on one line, packages that stand side by side and may not import each other.
FLOORS: tuple[tuple[str, ...], ...] = (
    ("pantheros.__main__",),  # python -m pantheros
    ("pantheros.main",),  # the `panther` entry point: what starts before the command line
    ("pantheros.cli",),  # the parser and the dispatcher
    ("pantheros.commands",),  # every handler and its printing
    ("pantheros.audit", "pantheros.fleet", "pantheros.install"),
    ("pantheros.impermanence", "pantheros.state"),
    ("pantheros.machine",),
    ("pantheros.lab",),
    ("pantheros.storage",),
    ("pantheros.manifest",),
    (
        "pantheros.fsutil",
        "pantheros.locking",
        "pantheros.btrfs",
        "pantheros.sendstream",
        "pantheros.native",
    ),
    ("pantheros.process", "pantheros.ui", "pantheros.mounttable", "pantheros.files"),
    ("pantheros.errors", "pantheros.mountlines", "pantheros"),  # `pantheros`: the version
)
SPEC = "panther_spec"
SPEC_USERS = ("pantheros.cli", "pantheros.commands")


def package(module: str) -> tuple[int, str]:
    """The floor (0 at the top) and the package of a module of pantheros."""
    found = [
        (len(name), number, name)
        for number, names in enumerate(FLOORS)
        for name in names
        if module == name or (name != "pantheros" and module.startswith(name + "."))
    ]
    assert found, f"{module} is on no floor: add it to FLOORS in {__file__}"
    _, number, name = max(found)
    return number, name


def modules(src: Path) -> dict[str, str]:
    """Module name -> source, for every module under src."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path.read_text(encoding="utf-8")
    return found


def imported(source: str, known: Iterable[str]) -> set[str]:
    """The project's modules source imports (`from a import b` is a.b when that is a module)."""
    known = set(known)
    ours = {name.split(".")[0] for name in known}
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ours)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in ours:
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def graph(sources: dict[str, str]) -> dict[str, set[str]]:
    return {module: imported(source, sources) - {module} for module, source in sources.items()}


def wrong_imports(sources: dict[str, str]) -> list[str]:
    """Every import that goes up a floor, across a floor, or over the spec boundary."""
    wrong = []
    for module, targets in graph(sources).items():
        for target in sorted(targets):
            spec_module, spec_target = module.startswith(SPEC), target.startswith(SPEC)
            if spec_module or spec_target:
                allowed = spec_module == spec_target or module.startswith(SPEC_USERS)
                if not allowed:
                    wrong.append(f"{module} imports {target} (over the spec boundary)")
                continue
            (floor, home), (target_floor, target_home) = package(module), package(target)
            if target_floor < floor:
                wrong.append(f"{module} imports {target} (up a floor)")
            elif target_floor == floor and target_home != home:
                wrong.append(f"{module} imports {target} (a package beside its own)")
    return wrong


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: each strongly connected set of modules (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_goes_up_a_floor_or_across_one() -> None:
    assert wrong_imports(modules(SRC)) == []


def test_no_import_cycle() -> None:
    assert cycles(graph(modules(SRC))) == []


def test_every_package_is_on_a_floor() -> None:
    listed = {name for names in FLOORS for name in names}
    top_level = {
        ".".join(path.relative_to(SRC).with_suffix("").parts[:2])
        for path in (SRC / "pantheros").glob("*")
        if path.suffix == ".py" or (path / "__init__.py").exists()
    }
    assert top_level - listed == {"pantheros.__init__"}
    assert listed - top_level == {"pantheros"}


def test_an_upward_import_is_found_wherever_it_is() -> None:
    sources = {
        "pantheros.lab": "",
        "pantheros.machine": "",
        "pantheros.state.persist": "",
        "pantheros.commands.lab": "",
        "pantheros.storage.tree": "def f() -> None:\n    from pantheros.state import persist\n",
        "pantheros.storage.mounts": "from pantheros import machine\n",
        "pantheros.storage.record": "import typing\nif typing.TYPE_CHECKING:\n"
        "    from pantheros.lab import Lab\n",
        "pantheros.audit.checks": "import pantheros.commands.lab\n",
        "pantheros.fsutil": "from pantheros.storage import blockdev\n",
    }
    assert wrong_imports(sources) == [
        "pantheros.storage.tree imports pantheros.state.persist (up a floor)",
        "pantheros.storage.mounts imports pantheros.machine (up a floor)",
        "pantheros.storage.record imports pantheros.lab (up a floor)",
        "pantheros.audit.checks imports pantheros.commands.lab (up a floor)",
        "pantheros.fsutil imports pantheros.storage (up a floor)",
    ]


def test_packages_side_by_side_and_the_spec_boundary() -> None:
    sources = {
        "pantheros.state.diff": "from pantheros.impermanence import blank\n",
        "pantheros.impermanence.blank": "",
        "pantheros.btrfs": "from pantheros import fsutil\n",
        "pantheros.fsutil": "",
        "panther_spec.parse": "from pantheros import ui\n",
        "pantheros.ui": "",
        "pantheros.audit.report": "from panther_spec import parse\n",
        "pantheros.commands.spec": "from panther_spec import parse\n",
    }
    assert sorted(wrong_imports(sources)) == [
        "panther_spec.parse imports pantheros.ui (over the spec boundary)",
        "pantheros.audit.report imports panther_spec.parse (over the spec boundary)",
        "pantheros.btrfs imports pantheros.fsutil (a package beside its own)",
        "pantheros.state.diff imports pantheros.impermanence.blank (a package beside its own)",
    ]


def test_a_cycle_is_found_also_within_a_package_and_through_type_checking() -> None:
    sources = {
        "pantheros.cli": "from pantheros.commands import completion\n",
        "pantheros.commands.completion": "def f() -> None:\n    from pantheros.cli import p\n",
        "pantheros.state.a": "from pantheros.state import b\n",
        "pantheros.state.b": "import typing\nif typing.TYPE_CHECKING:\n"
        "    from pantheros.state.c import C\n",
        "pantheros.state.c": "import pantheros.state.a\n",
        "pantheros.state.d": "from pantheros.state import a\n",
    }
    assert cycles(graph(sources)) == [
        ["pantheros.cli", "pantheros.commands.completion"],
        ["pantheros.state.a", "pantheros.state.b", "pantheros.state.c"],
    ]
    # The first is also an upward import; the second is not: only the cycle test sees it.
    assert wrong_imports(sources) == [
        "pantheros.commands.completion imports pantheros.cli (up a floor)"
    ]


def test_the_spec_tests_stand_alone() -> None:
    """tests/spec is panther_spec's own: it imports nothing of pantheros, nor panther's helpers
    (it runs `panther spec` as a command, as a user would)."""
    tests = {
        path.name: path.read_text(encoding="utf-8") for path in (REPO / "tests/spec").glob("*.py")
    }
    known = {*modules(SRC), "tests.helpers", "tests.conftest", "tests.spec"}
    borrowed = {
        f"{name} imports {target}"
        for name, source in tests.items()
        for target in imported(source, known)
        if not target.startswith((SPEC, "tests.spec"))
    }
    assert borrowed == set()
