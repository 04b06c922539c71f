"""One source for each layout rule: src/pantheros/data/layout.json.

The Nix module reads the table, the manifest's schema and the boot step's name check are
rendered from it (scripts/render-layout), and Python's defaults come from it. A property test
feeds the same names to the Nix option type (when PANTHEROS_NIXPKGS_LIB is given: one
nix-instantiate evaluation per batch), the schema and the boot step's own check, and requires one
verdict for each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pantheros.impermanence import bootstep
from pantheros.manifest import models
from pantheros.manifest.schema import first_violation
from tests.helpers import REPO

DATA = REPO / "src" / "pantheros" / "data"
TABLE = json.loads((DATA / "layout.json").read_text())
SCHEMA = json.loads((DATA / "manifest.schema.json").read_text())
SCRIPT = DATA / "boot" / bootstep.SCRIPT
NIXPKGS_LIB = os.environ.get("PANTHEROS_NIXPKGS_LIB")
HAVE_NIX = bool(
    NIXPKGS_LIB and Path(NIXPKGS_LIB, "lib").is_dir() and shutil.which("nix-instantiate")
)
# Which option of nix/modules/storage.nix has which rule of the table.
NIX_OPTIONS = {
    "subvolume": "oldRoots",
    "btrfs_label": "label",
    "partition_label": "partitionLabel",
    "luks_name": "luks.name",
    "luks_label": "luks.label",
    "esp_label": "esp.label",
}
SCHEMA_DEFS = {
    "subvolume": "name",
    "btrfs_label": "btrfsLabel",
    "partition_label": "partitionLabel",
    "luks_name": "luksName",
    "luks_label": "luksLabel",
    "esp_label": "espLabel",
}


def test_the_generated_files_are_current() -> None:
    """The schema's $defs and the boot step's block are what scripts/render-layout writes."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "render-layout"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_python_reads_the_defaults_and_roles_from_the_table() -> None:
    defaults = TABLE["defaults"]
    assert list(models.DEFAULT_MOUNT_OPTIONS) == defaults["btrfs_mount_options"]
    assert list(models.Esp(1, "E", "/boot").mount_options) == defaults["esp_mount_options"]
    assert set(models.NEEDED_FOR_BOOT_ROLES) == set(defaults["needed_for_boot_roles"])
    assert [r.value for r in models.Role] == TABLE["roles"]
    assert SCHEMA["$defs"]["role"] == {"enum": TABLE["roles"]}


def test_a_subvolume_without_needed_for_boot_takes_it_from_its_role() -> None:
    doc = json.loads((DATA / "manifests" / "lab.json").read_text())
    for sub in doc["storage"]["subvolumes"]:
        sub.pop("needed_for_boot", None)
    built = models.build(doc, "lab.json")
    wanted = set(TABLE["defaults"]["needed_for_boot_roles"])
    assert {s.role.value for s in built.storage.subvolumes if s.needed_for_boot} == {
        s.role.value for s in built.storage.subvolumes if s.role.value in wanted
    }


# --- the three verdicts ---------------------------------------------------------------------


def schema_verdicts(rule: str, names: list[str]) -> list[bool]:
    definition = SCHEMA_DEFS[rule]
    return [first_violation(name, SCHEMA, definition=definition) is None for name in names]


def _name_check() -> str:
    """The boot step's own name check, cut from the shipped script (its generated block and
    name_ok), so thousands of names go through one bash."""
    text = SCRIPT.read_text()
    start = text.index("# --- name rules: generated")
    end = text.index("# --- end of the name rules ---")
    return text[start:end]


def helper_verdicts(names: list[str]) -> list[bool]:
    """The helper's copy of the check (its `rollback` takes the usual boot itself, D155)."""
    helper = bootstep.artifact_dir() / bootstep.HELPER
    proc = subprocess.run(
        [str(helper), "name-ok", *names], capture_output=True, text=True, check=True
    )
    return [c == "1" for c in proc.stdout.strip()]


def bootstep_verdicts(names: list[str]) -> list[bool]:
    program = (
        "export LC_ALL=C\n"
        + _name_check()
        + "while IFS= read -r -d '' n; do\n"
        + '  if name_ok "$n"; then printf 1; else printf 0; fi\n'
        + "done\n"
    )
    data = b"".join(n.encode("utf-8", "surrogateescape") + b"\0" for n in names)
    proc = subprocess.run(["bash", "-c", program], input=data, capture_output=True, check=True)
    out = proc.stdout.decode()
    assert len(out) == len(names), proc.stderr
    return [c == "1" for c in out]


def nix_verdicts(rule: str, names: list[str], tmp: Path) -> list[bool]:
    source = tmp / "names.json"
    source.write_text(json.dumps(names))
    option = NIX_OPTIONS[rule]
    expr = f"""
      let
        lib = import {NIXPKGS_LIB}/lib;
        eval = lib.evalModules {{
          modules = [ {REPO}/nix/modules/storage.nix {{ _module.check = false; }} ];
        }};
        check = eval.options.pantheros.storage.{option}.type.check;
      in map check (builtins.fromJSON (builtins.readFile {source}))
    """
    proc = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "-E", expr],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    found: list[bool] = json.loads(proc.stdout)
    return found


# Names near every edge of the rule: allowed characters and others, `.` and `..`, empty and
# repeated slashes, components and whole paths around their length limits, control characters,
# non-ASCII (U+2028 among them) and a lone surrogate (a byte that is not UTF-8).
ALLOWED = "abzAZ09@_.+-"
OTHER = " \t\n\r\\/*$'\"é\u2028\x7f:;,="
RULE = TABLE["names"]["subvolume"]


def _component() -> st.SearchStrategy[str]:
    long = RULE["component_max"]
    return st.one_of(
        st.sampled_from([".", "..", "", "...", ".a", "a."]),
        st.text(alphabet=ALLOWED, min_size=1, max_size=12),
        st.text(alphabet=ALLOWED + OTHER, min_size=0, max_size=6),
        st.integers(long - 2, long + 2).map(lambda n: "a" * n),
    )


def _names() -> st.SearchStrategy[str]:
    joined = st.lists(_component(), min_size=1, max_size=7).map("/".join)
    near_max = st.integers(RULE["max"] - 3, RULE["max"] + 3).map(
        lambda n: "/".join(["b" * 150] * (n // 151)) + "/" + "c" * (n - 151 * (n // 151))
    )
    return st.one_of(
        joined,
        joined.map(lambda s: "/" + s),
        joined.map(lambda s: s + "/"),
        near_max,
        st.text(alphabet=ALLOWED + OTHER + "\udcff", max_size=30),
    )


def _labels(rule: dict[str, Any]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(alphabet="aZ09_-. /é\n", max_size=8),
        st.integers(rule["max"] - 1, rule["max"] + 1).map(lambda n: "A" * n),
        st.text(alphabet="AZ09_-az", min_size=0, max_size=12),
    )


BATCH = 150


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(names=st.lists(_names(), min_size=BATCH, max_size=BATCH))
def test_nix_the_schema_and_the_boot_step_give_one_verdict(
    tmp_path: Path, names: list[str]
) -> None:
    """Issue 19: `oldRoots = ".."` evaluated in Nix and stopped the boot; now every name gets
    one verdict from all of them, the helper's copy too (3,000 names over the examples)."""
    schema = schema_verdicts("subvolume", names)
    step = bootstep_verdicts(names)
    disagree = [(n, s, b) for n, s, b in zip(names, schema, step, strict=True) if s != b]
    assert not disagree, disagree[:5]
    argv_names = [n for n in names if "\x00" not in n]  # an argument cannot hold a NUL
    by_step = dict(zip(names, step, strict=True))
    helper = helper_verdicts(argv_names)
    assert helper == [by_step[n] for n in argv_names]
    nix_names = [n for n in names if "\udcff" not in n and "\x00" not in n]
    if HAVE_NIX and nix_names:
        nix = nix_verdicts("subvolume", nix_names, tmp_path)
        by_schema = dict(zip(names, schema, strict=True))
        disagree_nix = [(n, v) for n, v in zip(nix_names, nix, strict=True) if v != by_schema[n]]
        assert not disagree_nix, disagree_nix[:5]


@pytest.mark.skipif(not HAVE_NIX, reason="needs nix-instantiate and PANTHEROS_NIXPKGS_LIB")
@pytest.mark.parametrize("rule", sorted(set(NIX_OPTIONS) - {"subvolume"}))
@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_labels_get_one_verdict_from_nix_and_the_schema(
    tmp_path: Path, rule: str, data: st.DataObject
) -> None:
    labels = data.draw(st.lists(_labels(TABLE["names"][rule]), min_size=60, max_size=60))
    assert nix_verdicts(rule, labels, tmp_path) == schema_verdicts(rule, labels)


EDGES = ["root", "old_roots", "a/b", "@home", "a.b", "..", "a/..", "./a", "", "/a", "a/", "a//b"]
EDGE_VERDICTS = [True, True, True, True, True, False, False, False, False, False, False, False]


def test_the_schema_and_the_boot_step_agree_on_the_edges() -> None:
    assert schema_verdicts("subvolume", EDGES) == EDGE_VERDICTS
    assert bootstep_verdicts(EDGES) == helper_verdicts(EDGES) == EDGE_VERDICTS
    long = ["a" * RULE["component_max"], "a" * (RULE["component_max"] + 1)]
    assert schema_verdicts("subvolume", long) == bootstep_verdicts(long) == [True, False]
    assert helper_verdicts(long) == [True, False]


@pytest.mark.skipif(not HAVE_NIX, reason="needs nix-instantiate and PANTHEROS_NIXPKGS_LIB")
def test_old_roots_dot_dot_is_refused_at_evaluation(tmp_path: Path) -> None:
    """What used to evaluate, install, and stop a fail-closed machine at boot."""
    assert nix_verdicts("subvolume", ["..", "a/..", "old_roots/.", "old_roots"], tmp_path) == [
        False,
        False,
        False,
        True,
    ]
