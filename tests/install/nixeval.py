"""Evaluate a host as the install tests need it: PantherOS's modules, upstream impermanence and
nix-community/disko's own module (from the checkouts named by PANTHEROS_NIXPKGS_LIB,
PANTHEROS_IMPERMANENCE and PANTHEROS_DISKO), through nix/eval.nix.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, eval_host_argv

NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
IMPERMANENCE = os.environ.get("PANTHEROS_IMPERMANENCE")
DISKO = os.environ.get("PANTHEROS_DISKO")
NIXOS_MODULES = os.environ.get("PANTHEROS_NIXOS_MODULES")


def lib_reason() -> str | None:
    """Why a host cannot be evaluated here (without disko), or None."""
    if shutil.which("nix-instantiate") is None:
        return "needs nix-instantiate (Debian nix-bin)"
    if not NIXPKGS_LIB or not Path(NIXPKGS_LIB, "lib").is_dir():
        return "needs PANTHEROS_NIXPKGS_LIB (a nixpkgs lib checkout; CI has none)"
    return None


def disko_reason() -> str | None:
    """Why a host cannot be evaluated with disko's module here, or None."""
    found = lib_reason()
    if found:
        return found
    if not DISKO or not Path(DISKO, "lib", "default.nix").is_file():
        return "needs PANTHEROS_DISKO (a nix-community/disko checkout, DEVELOPERS.md; CI has none)"
    return None


def real_reason() -> str | None:
    """Why NixOS's own module files cannot be evaluated here, or None."""
    if not NIXOS_MODULES or not Path(NIXOS_MODULES, "nixos", "modules").is_dir():
        return (
            "needs PANTHEROS_NIXOS_MODULES (NixOS's module files, DEVELOPERS.md); "
            "CI has none, so the stand-in alone is evaluated"
        )
    return None


# The stand-in's evaluation, and NixOS's own module files' where they are given.
EVALUATORS = [
    pytest.param(False, id="stand-in"),
    pytest.param(
        True,
        id="nixos",
        marks=pytest.mark.skipif(real_reason() is not None, reason=real_reason() or ""),
    ),
]


def evaluate(
    directory: Path,
    host: str,
    attr: str | None = None,
    *,
    disko: bool = True,
    real: bool = False,
    check: bool = True,
    args: tuple[str, ...] = (),
) -> Any:
    """The evaluation of the host module whose text is host (nix/eval.nix's output, or its
    attribute attr): with disko's module imported unless disko is False, over NixOS's own
    module files when real, with args added to nix-instantiate's. check=False: a failed
    evaluation gives its stderr instead of raising."""
    module = directory / "host.nix"
    module.write_text(host)
    argv = eval_host_argv(
        module,
        *args,
        attr=attr,
        disko=str(DISKO) if disko else None,
        nixos_modules=str(NIXOS_MODULES) if real else None,
        readonly=True,
    )
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        if not check:
            return proc.stderr
        raise AssertionError(f"evaluation failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout)


def example_host(name: str, *extra: str, imports: tuple[Path, ...] = ()) -> str:
    """A module importing hosts/NAME (and imports), with extra definitions (each a line of
    Nix)."""
    lines = "\n  ".join(extra)
    modules = " ".join(str(p) for p in (REPO / "hosts" / name, *imports))
    return f"{{ lib, ... }}:\n{{\n  imports = [ {modules} ];\n  {lines}\n}}\n"
