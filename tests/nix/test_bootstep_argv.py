"""The boot step's command line: what the NixOS unit renders (ExecStart, escaped) is what
`panther` runs for the same host (pantheros.impermanence.bootstep.options), for every example
host and the lab host the boot tests boot."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pantheros import manifest as manifests
from pantheros.impermanence import bootstep
from pantheros.impermanence.stage2 import default_device
from tests.helpers import REPO
from tests.nix.test_modules import BOOTSTEP, HOSTS, evaluated, host_module, needs_lib

REPORT = str(bootstep.BOOT_REPORT)


@needs_lib
@pytest.mark.parametrize("host", [*HOSTS, "lab-host"])
@pytest.mark.parametrize("policy", ["boot-dirty", "fail-closed"])
def test_exec_start_is_the_argv_panther_renders(tmp_path: Path, host: str, policy: str) -> None:
    setting = f'pantheros.impermanence.failPolicy = lib.mkForce "{policy}";'
    if host == "lab-host":
        module = f"{{ lib, ... }}: {{ imports = [ {REPO}/nix/tests/lab-host.nix ]; {setting} }}"
    else:
        module = host_module(host, setting)
    out = evaluated(tmp_path, module)
    manifest = manifests.load_document(out["manifest"], host)
    exec_start = out["initrd"]["services"]["pantheros-rollback"]["serviceConfig"]["ExecStart"]
    assert shlex.split(exec_start) == [
        f"{BOOTSTEP}/bin/{bootstep.HELPER}",
        bootstep.ENTRY,
        "--device",
        default_device(manifest),
        *bootstep.options(manifest),
        "--report",
        REPORT,
    ]
    assert "%" not in exec_start
    assert "$" not in exec_start
