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

from tests.helpers import REPO

NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
IMPERMANENCE = os.environ.get("PANTHEROS_IMPERMANENCE")
DISKO = os.environ.get("PANTHEROS_DISKO")


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


def evaluate(directory: Path, host: str, attr: str | None = None, *, disko: bool = True) -> Any:
    """The evaluation of the host module whose text is host (nix/eval.nix's output, or its
    attribute attr), with disko's module imported unless disko is False."""
    module = directory / "host.nix"
    module.write_text(host)
    argv = [
        "nix-instantiate",
        "--eval",
        "--strict",
        "--json",
        # Paths in disko's scripts (disk-deactivate) are named, not copied into a store.
        "--readonly-mode",
        str(REPO / "nix" / "eval.nix"),
        "--argstr",
        "nixpkgsLib",
        str(NIXPKGS_LIB),
        "--arg",
        "host",
        str(module),
    ]
    if IMPERMANENCE:
        argv += ["--argstr", "impermanence", IMPERMANENCE]
    if disko:
        argv += ["--argstr", "disko", str(DISKO)]
    if attr:
        argv += ["-A", attr]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise AssertionError(f"evaluation failed:\n{proc.stderr[-6000:]}")
    return json.loads(proc.stdout)


def example_host(name: str, *extra: str) -> str:
    """A module importing hosts/NAME, with extra definitions (each a line of Nix)."""
    lines = "\n  ".join(extra)
    return f"{{ lib, ... }}:\n{{\n  imports = [ {REPO}/hosts/{name} ];\n  {lines}\n}}\n"
