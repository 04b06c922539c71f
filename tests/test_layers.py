"""The package's layers: a module imports only from its own layer or those below it.

Read from the source with `ast` (every import, also inside functions and `if TYPE_CHECKING`),
so an upward import fails here before a reader or a circular import finds it.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

SRC = REPO / "src"

# Lowest first. Entry points (cli, completion, __main__, every `*.commands`, the handler modules
# of `spec progress` and `spec trace`, and the pytest plugin) are above them all: they may
# import anything.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "pantheros",
        "pantheros.errors",
        "pantheros.ui",
        "pantheros.process",
        "pantheros.btrfs",
        "pantheros.locking",
        "pantheros.manifest",
        "pantheros.sendstream",
    ),
    ("pantheros.storage", "pantheros.fsutil"),
    ("pantheros.lab",),
    ("pantheros.machine",),
    ("pantheros.impermanence", "pantheros.state", "pantheros.audit", "pantheros.spec"),
)
TOP = len(LAYERS)
ENTRY_POINTS = {
    "pantheros.cli",
    "pantheros.completion",
    "pantheros.__main__",
    "pantheros.spec.progress",
    "pantheros.spec.trace",
    "pantheros.spec.pytest_trace",
}


def layer(module: str) -> int:
    """The layer of module: that of its longest listed prefix."""
    if (
        module in ENTRY_POINTS
        or module.endswith(".commands")
        or module.startswith("pantheros.commands")
    ):
        return TOP
    found = [
        (len(prefix), number)
        for number, prefixes in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert found, f"{module} has no layer: add it to LAYERS in {__file__}"
    return max(found)[1]


def modules(src: Path) -> dict[str, str]:
    """Module name -> source, for every module under src."""
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path.read_text(encoding="utf-8")
    return found


def imported(source: str, known: set[str]) -> set[str]:
    """The pantheros modules source imports (`from a import b` is a.b when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "pantheros")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "pantheros":
                continue
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return found


def upward_imports(sources: dict[str, str]) -> list[str]:
    known = set(sources)
    return sorted(
        f"{module} imports {target}"
        for module, source in sources.items()
        for target in imported(source, known)
        if layer(target) > layer(module)
    )


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    assert upward_imports(modules(SRC)) == []


def test_an_upward_import_is_found_wherever_it_is() -> None:
    sources = {
        "pantheros.lab": "",
        "pantheros.machine": "",
        "pantheros.state.persist": "",
        "pantheros.storage.tree": "def f() -> None:\n    from pantheros.state import persist\n",
        "pantheros.storage.mounts": "from pantheros import machine\n",
        "pantheros.storage.record": "import typing\nif typing.TYPE_CHECKING:\n"
        "    from pantheros.lab import Lab\n",
        "pantheros.lab.commands": "from pantheros.state import persist\n",
    }
    assert upward_imports(sources) == [
        "pantheros.storage.mounts imports pantheros.machine",
        "pantheros.storage.record imports pantheros.lab",
        "pantheros.storage.tree imports pantheros.state.persist",
    ]
