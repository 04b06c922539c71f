"""nix/package.nix's own build step for the audit's file walker, run here with cc.

Nix cannot build here (no nixpkgs), so the package is evaluated with a buildPythonApplication
that returns its arguments; its postInstall runs in a copy of the sources, as the build's does,
and the wrapper's PANTHER_WALKER must name what it installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO, nix_eval_json, run_build_steps

NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")

pytestmark = pytest.mark.skipif(
    not NIXPKGS_LIB
    or not Path(NIXPKGS_LIB, "lib").is_dir()
    or not shutil.which("nix-instantiate")
    or not shutil.which("cc"),
    reason="needs nix-instantiate, PANTHEROS_NIXPKGS_LIB (a nixpkgs lib checkout) and cc",
)


def package() -> dict[str, object]:
    tools = "btrfs-progs cryptsetup gptfdisk util-linux dosfstools coreutils acl"
    expr = f"""
      let
        lib = import {NIXPKGS_LIB}/lib;
        drv = import {REPO}/nix/package.nix ({{
          inherit lib;
          python3Packages = {{
            buildPythonApplication = args: args;
            setuptools = "setuptools";
            jsonschema = "jsonschema";
            shtab = "shtab";
          }};
          pantheros-bootstep = "/bootstep";
        }} // lib.genAttrs (lib.splitString " " "{tools}") (name: "/" + name));
      in {{
        inherit (drv) postInstall makeWrapperArgs;
        out = builtins.placeholder "out";
      }}
    """
    found: dict[str, object] = nix_eval_json(expr)
    return found


def test_the_package_builds_the_walker_its_wrapper_names(tmp_path: Path) -> None:
    found = package()
    args = found["makeWrapperArgs"]
    assert isinstance(args, list)
    at = args.index("PANTHER_WALKER")
    assert args[at - 1] == "--set"
    installed = str(args[at + 1])
    assert installed.startswith(str(found["out"]) + "/")

    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "pantheros" / "data" / "audit", src / "pantheros/data/audit")
    out = tmp_path / "out"
    run_build_steps(str(found["postInstall"]), tmp_path, out)
    walker = out / installed.removeprefix(str(found["out"]) + "/")
    assert os.access(walker, os.X_OK)
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "s").write_text("")
    (tree / "bin" / "s").chmod(0o4755)
    walked = subprocess.run([walker, str(tree)], capture_output=True, check=True)
    assert walked.stdout == f"s {tree}/bin/s\0".encode()
