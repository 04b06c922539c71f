"""The top floor: every command's handler and its printing, one module per area.

A handler takes its command's options as a frozen dataclass (and, first, what it acts on: the
Machine, the Lab or the parser), built by `pantheros.cli.dispatch`. Nothing below imports from
here (docs/architecture.md).

The area modules are imported at their first use (`commands.disk.cmd_disk_plan`, from the
parser's lambdas), so building the parser runs none of them (D14). Listed here for readers,
mypy and the tests; at run time a missing attribute is the module of that name, imported then.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pantheros.commands import (
        audit as audit,
    )
    from pantheros.commands import (
        blank as blank,
    )
    from pantheros.commands import (
        completion as completion,
    )
    from pantheros.commands import (
        disk as disk,
    )
    from pantheros.commands import (
        fleet as fleet,
    )
    from pantheros.commands import (
        host as host,
    )
    from pantheros.commands import (
        impermanence as impermanence,
    )
    from pantheros.commands import (
        install as install,
    )
    from pantheros.commands import (
        lab as lab,
    )
    from pantheros.commands import (
        lab_guest as lab_guest,
    )
    from pantheros.commands import (
        lab_vm as lab_vm,
    )
    from pantheros.commands import (
        spec as spec,
    )
    from pantheros.commands import (
        state as state,
    )


def __getattr__(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
