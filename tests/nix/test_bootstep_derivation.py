"""nix/bootstep.nix's own build steps, run here with bash and cc on the files the initrd runs.

Nix cannot build here (no nixpkgs), so the derivation is evaluated with a stdenv whose
mkDerivation returns its arguments, and its phases run in the order stdenv runs them, with the
two stdenv helpers they call (runHook, substituteInPlace --replace-fail) defined minimally.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import REPO, nix_eval_json, run_build_steps

NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
BOOT = REPO / "src" / "pantheros" / "data" / "boot"

pytestmark = pytest.mark.skipif(
    not NIXPKGS_LIB
    or not Path(NIXPKGS_LIB, "lib").is_dir()
    or not shutil.which("nix-instantiate")
    or not shutil.which("cc"),
    reason="needs nix-instantiate, PANTHEROS_NIXPKGS_LIB (a nixpkgs lib checkout) and cc",
)

STDENV_HELPERS = r"""
set -euo pipefail
runHook() { :; }
substituteInPlace() {
  [[ $# == 4 && $2 == --replace-fail ]] || { echo "unsupported: $*" >&2; return 2; }
  python3 - "$1" "$3" "$4" <<'PY'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if old not in text:
    sys.exit(f"substituteInPlace: {old!r} not found in {path}")
open(path, "w").write(text.replace(old, new))
PY
}
"""


def phases(bash: str) -> dict[str, str]:
    expr = f"""
      let
        lib = import {NIXPKGS_LIB}/lib;
        drv = import {REPO}/nix/bootstep.nix {{
          inherit lib;
          stdenv.mkDerivation = args: args;
          bashInteractive = "{bash}";
        }};
      in {{ inherit (drv) buildPhase installPhase postFixup installCheckPhase; }}
    """
    found: dict[str, str] = nix_eval_json(expr)
    return found


def test_the_derivation_builds_and_checks_the_boot_step(tmp_path: Path) -> None:
    bash = shutil.which("bash")
    assert bash is not None
    # The derivation names <bashInteractive>/bin/bash: point it at this machine's bash.
    prefix = str(Path(bash).parent.parent)
    steps = phases(prefix)
    src = tmp_path / "src"
    shutil.copytree(BOOT, src, ignore=shutil.ignore_patterns("pantheros-btrfs"))
    out = tmp_path / "out"
    script = STDENV_HELPERS + "\n".join(
        steps[p] for p in ["buildPhase", "installPhase", "postFixup", "installCheckPhase"]
    )
    run_build_steps(script, src, out)
    assert sorted(p.name for p in (out / "bin").iterdir()) == [
        "pantheros-btrfs",
        "pantheros-rollback",
    ]
    first = (out / "bin" / "pantheros-rollback").read_text().splitlines()[0]
    assert first == f"#!{prefix}/bin/bash"
    assert os.access(out / "bin" / "pantheros-btrfs", os.X_OK)
