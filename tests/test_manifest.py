"""The manifest: schema, loader, typed models, and rejection with the JSON path and reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pantheros import manifest as manifests
from pantheros.errors import ManifestError, UsageError
from pantheros.manifest.models import Design, FailPolicy, Role
from pantheros.manifest.schema import first_violation, matches
from tests.helpers import one_line_error, panther


def lab_doc() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(manifests.bundled_path("lab").read_text())
    return data


@pytest.mark.parametrize("name", ["lab", "workstation", "server"])
def test_bundled_manifests_load_and_match_the_schema(name: str) -> None:
    doc = json.loads(manifests.bundled_path(name).read_text())
    jsonschema.Draft202012Validator.check_schema(manifests.schema())
    jsonschema.validate(doc, manifests.schema(), cls=jsonschema.Draft202012Validator)
    m = manifests.bundled(name)
    assert m.host == name
    assert m.storage.root.mountpoint == "/"
    assert {s.role for s in m.storage.subvolumes} >= {
        Role.ROOT,
        Role.NIX,
        Role.PERSIST,
        Role.LOG,
        Role.HOME,
    }
    assert m.storage.btrfs_mount_options == ("compress=zstd", "noatime")
    assert m.impermanence.design is Design.BLANK_SNAPSHOT


def test_workstation_uses_luks_and_server_does_not() -> None:
    assert manifests.bundled("workstation").storage.luks is not None
    assert manifests.bundled("server").storage.luks is None
    assert manifests.bundled("server").impermanence.fail_policy is FailPolicy.FAIL_CLOSED


def test_mount_options_and_order() -> None:
    st = manifests.bundled("lab").storage
    log = next(s for s in st.subvolumes if s.role is Role.LOG)
    assert st.mount_options_for(log) == ["compress=zstd", "noatime", "subvol=log"]
    order = [s.mountpoint for s in st.ordered_subvolumes()]
    assert order[0] == "/"
    assert order.index("/var/log") > order.index("/nix")


def test_mount_points_and_the_owning_subvolume() -> None:
    st = manifests.bundled("workstation").storage
    assert st.esp is not None
    assert st.luks is not None
    inner = st.mount_points(root=False)
    assert "/" not in inner
    assert st.esp.mountpoint in inner
    assert st.mount_points(esp=False) == [s.mountpoint for s in st.subvolumes]
    persist = st.by_role(Role.PERSIST)
    assert persist is not None
    assert st.owner(persist.mountpoint + "/etc/machine-id") == persist
    # A prefix of a mount point's name is not inside it.
    assert st.owner(persist.mountpoint + "x/file") == st.root
    assert st.owner(st.esp.mountpoint + "/EFI") is None
    assert st.luks.mapper_path == f"/dev/mapper/{st.luks.name}"


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value


_DELETE = object()

# (where to change, new value, JSON path in the error, words in the reason)
BAD = [
    (["version"], 2, "$.version", "unsupported manifest version"),
    (["host"], "", "$.host", "does not match"),
    (["storage"], _DELETE, "$", "missing required property 'storage'"),
    (["storage", "subvolumes", 0, "role"], "rooot", "$.storage.subvolumes[0].role", "one of"),
    (
        ["storage", "subvolumes", 1, "mountpoint"],
        "nix",
        "$.storage.subvolumes[1].mountpoint",
        "does not match",
    ),
    (["storage", "subvolumes", 1, "name"], "../escape", "$.storage.subvolumes[1].name", ""),
    (["storage", "subvolumes", 1, "name"], "root", "$.storage.subvolumes[1].name", "duplicate"),
    (
        ["storage", "subvolumes", 2, "mountpoint"],
        "/nix",
        "$.storage.subvolumes[2].mountpoint",
        "used twice",
    ),
    (
        ["storage", "btrfs", "mount_options"],
        "compress=zstd",
        "$.storage.btrfs.mount_options",
        "expected array",
    ),
    (
        ["storage", "subvolumes", 0, "colour"],
        "red",
        "$.storage.subvolumes[0].colour",
        "unknown property",
    ),
    (["storage", "old_roots"], "root", "$.storage.old_roots", "overlaps"),
    (["storage", "blank_snapshot"], "root/blank", "$.storage.blank_snapshot", "overlaps"),
    (
        ["impermanence", "retention", "keep_min"],
        0,
        "$.impermanence.retention.keep_min",
        "at least 1",
    ),
    (
        ["impermanence", "retention", "keep_min"],
        True,
        "$.impermanence.retention.keep_min",
        "expected integer",
    ),
    (["impermanence", "design"], "tmpfs", "$.impermanence.design", "one of"),
    (["impermanence", "fail_policy"], "ignore", "$.impermanence.fail_policy", "one of"),
    (["persistence", 0, "kind"], "socket", "$.persistence[0].kind", "one of"),
    (["persistence", 0, "path"], "/persist/x", "$.persistence[0].path", "not rolled back"),
    (["persistence", 0, "path"], "/var/log/x", "$.persistence[0].path", "not rolled back"),
    (["persistence", 0, "mode"], "rwx", "$.persistence[0].mode", "does not match"),
    (["security", "level"], "paranoid", "$.security.level", "one of"),
    (["security", "waivers"], {"x": {}}, "$.security.waivers.x", "missing required property"),
    # gc deletes inside the old-roots location: the blank must never lie there, nor hold it.
    (["storage", "blank_snapshot"], "old_roots/blank", "$.storage.blank_snapshot", "old-roots"),
    (["storage", "old_roots"], "root-blank/old", "$.storage.blank_snapshot", "old-roots"),
    (["storage", "old_roots"], "nix/old", "$.storage.old_roots", "overlaps subvolume 'nix'"),
    (["storage", "subvolumes", 2, "name"], "old_roots/p", "$.storage.old_roots", "overlaps"),
    # Paths are absolute and normalised: `format` must not write outside the top level.
    (
        ["storage", "subvolumes", 1, "mountpoint"],
        "/../../escaped",
        "$.storage.subvolumes[1].mountpoint",
        "must not match",
    ),
    (
        ["storage", "subvolumes", 1, "mountpoint"],
        "/nix/./store",
        "$.storage.subvolumes[1].mountpoint",
        "must not match",
    ),
    (["storage", "subvolumes", 1, "mountpoint"], "/nix/", "$.storage.subvolumes[1].mountpoint", ""),
    (["storage", "subvolumes", 1, "mountpoint"], "//nix", "$.storage.subvolumes[1].mountpoint", ""),
    (["storage", "esp", "mountpoint"], "/boot/..", "$.storage.esp.mountpoint", "must not match"),
    (["persistence", 0, "path"], "/var/../persist/x", "$.persistence[0].path", "must not match"),
    (["persistence", 0, "path"], "/var/lib\tx", "$.persistence[0].path", "does not match"),
    (["persistence", 0, "path"], "/var", "$.persistence[0].path", "holds the mount point"),
    # Numbers have bounds: a retention of 10**309 days overflowed in gc after the rollback.
    (
        ["impermanence", "retention", "max_age_days"],
        10**309,
        "$.impermanence.retention.max_age_days",
        "at most 36500, got an integer of 1027 bits",
    ),
    (
        ["impermanence", "retention", "max_count"],
        10**6,
        "$.impermanence.retention.max_count",
        "at most",
    ),
    (["storage", "min_size_mib"], 2**80, "$.storage.min_size_mib", "at most"),
    (["version"], 10**400, "$.version", "unsupported manifest version an integer of"),
    (["persistence", 0, "path"], "/var/\udc80", "$.persistence[0].path", "lone surrogate"),
]


@pytest.mark.scenario("storage-layout: Bad manifest rejected with path")
@pytest.mark.parametrize(("where", "value", "path", "words"), BAD)
def test_bad_manifest_rejected_with_path_and_reason(
    where: list[Any], value: Any, path: str, words: str
) -> None:
    doc = lab_doc()
    _set(doc, where, value)
    with pytest.raises(ManifestError) as info:
        manifests.load_document(doc, "bad.json")
    assert info.value.path == path
    assert words in info.value.reason
    assert str(info.value).startswith(f"bad.json: {path}: ")


@pytest.mark.parametrize(("where", "value", "path", "words"), BAD)
def test_schema_file_agrees_with_the_loader(
    where: list[Any], value: Any, path: str, words: str
) -> None:
    """Where the schema alone decides, plain jsonschema rejects the same documents: what the
    loader adds to it (ECMA patterns, ints for integers) only narrows."""
    doc = lab_doc()
    _set(doc, where, value)
    reference = jsonschema.Draft202012Validator(manifests.schema())
    assert (first_violation(doc, manifests.schema()) is None) == reference.is_valid(doc)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{ not json")
    with pytest.raises(ManifestError, match=r"m.json: \$: not JSON"):
        manifests.load(bad)
    with pytest.raises(UsageError, match=r"absent.json: no such manifest file \(nor a bundled"):
        manifests.load(tmp_path / "absent.json")
    assert manifests.load("server").host == "server"  # no file of that name: the bundled one


@pytest.mark.parametrize(
    ("content", "words"),
    [("{ not json", "not JSON"), ('{"version": 9}', "unsupported manifest version 9")],
)
def test_cli_rejects_bad_manifest_in_one_line(tmp_path: Path, content: str, words: str) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(content)
    target = tmp_path / "disk.img"
    target.write_bytes(b"")
    proc = panther("disk", "plan", "--manifest", str(bad), str(target))
    assert proc.returncode == 2
    assert words in one_line_error(proc)


# JSON Schema patterns are ECMA-262: `$` is the end of the string. Python's `re` (and with it the
# reference `jsonschema`) also lets `$` match before a final newline, so these are checked
# against our validator alone.
NEWLINE = [
    (["host"], "lab\n", "$.host"),
    (["storage", "subvolumes", 1, "name"], "nix\n", "$.storage.subvolumes[1].name"),
    (["storage", "blank_snapshot"], "root-blank\n", "$.storage.blank_snapshot"),
    (["storage", "btrfs", "label"], "pantheros\n", "$.storage.btrfs.label"),
    (["persistence", 0, "user"], "root\n", "$.persistence[0].user"),
    (["persistence", 0, "mode"], "0755\n", "$.persistence[0].mode"),
]


@pytest.mark.parametrize(("where", "value", "path"), NEWLINE)
def test_patterns_match_whole_strings(where: list[Any], value: Any, path: str) -> None:
    doc = lab_doc()
    _set(doc, where, value)
    with pytest.raises(ManifestError) as info:
        manifests.load_document(doc, "bad.json")
    assert info.value.path == path
    assert "does not match" in info.value.reason


@pytest.mark.parametrize(
    ("pattern", "text", "found"),
    [
        ("^a$", "a", True),
        ("^a$", "a\n", False),
        ("^[$]x$", "$x", True),
        ("^\\$$", "$", True),
        ("^\\$$", "$\n", False),
    ],
)
def test_dollar_means_the_end_of_the_string(pattern: str, text: str, found: bool) -> None:
    assert matches(pattern, text) is found
    assert (first_violation(text, {"pattern": pattern}) is None) is found


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"version": ' + "9" * 5000 + "}", "an integer of 5000 digits"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"version": NaN}', "NaN is not a JSON number"),
        ('{"version": 1, "host": Infinity}', "Infinity is not a JSON number"),
        ('{"version": 1' + ', "x": 1' * 10 + "}", "missing required property"),
    ],
)
def test_hostile_documents_give_one_line(tmp_path: Path, content: str, words: str) -> None:
    bad = tmp_path / "m.json"
    bad.write_text(content)
    proc = panther("disk", "plan", "--manifest", str(bad), str(bad))
    assert proc.returncode == 2
    line = one_line_error(proc)
    assert words in line
    assert len(line) < 300, line


def test_deep_values_are_shown_short() -> None:
    doc = lab_doc()
    deep: Any = "x"
    for _ in range(500):
        deep = [deep]
    doc["version"] = deep
    with pytest.raises(ManifestError) as info:
        manifests.load_document(doc, "bad.json")
    assert info.value.path == "$.version"
    assert len(str(info.value)) < 200


def _loaded_in_a_child(manifest: Path, cache: Path) -> list[str]:
    """Load manifest in a fresh interpreter; whether it imported jsonschema to do it."""
    code = (
        "import sys\nfrom pantheros import manifest\n"
        f"manifest.load({str(manifest)!r})\n"
        "print('jsonschema' in sys.modules)"
    )
    env = {**os.environ, "PANTHER_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_manifest_that_passed_the_schema_is_not_checked_by_jsonschema_again(
    tmp_path: Path,
) -> None:
    """D159: a pass is remembered by the document, the schema and the checker; a changed
    document is checked again, a failing one every time, and a verdict where others may write
    is not trusted."""
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    path = tmp_path / "m.json"
    doc = json.loads(manifests.bundled_path("lab").read_text())
    path.write_text(json.dumps(doc))
    assert _loaded_in_a_child(path, cache) == ["True"]  # checked, and remembered
    assert _loaded_in_a_child(path, cache) == ["False"]
    path.write_text(json.dumps(doc, indent=4))  # the same document in other words
    assert _loaded_in_a_child(path, cache) == ["False"]
    doc["host"] = "lab2"
    path.write_text(json.dumps(doc))
    assert _loaded_in_a_child(path, cache) == ["True"]
    bad = {**doc, "host": "no such host!"}
    path.write_text(json.dumps(bad))
    env = {"PANTHER_CACHE_DIR": str(cache)}
    for _ in range(2):  # never remembered: its error is jsonschema's each time
        proc = panther("disk", "plan", "--manifest", str(path), "/dev/null", env=env)
        assert proc.returncode != 0
        assert "$.host" in proc.stderr
    verdicts = cache / "manifest-verdicts"
    assert len(list(verdicts.iterdir())) == 2
    verdicts.chmod(0o777)  # others could forge a verdict here: none is read or written
    path.write_text(json.dumps(doc))
    assert _loaded_in_a_child(path, cache) == ["True"]
    assert _loaded_in_a_child(path, cache) == ["True"]


def test_a_verdict_holds_for_its_schema_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pantheros.manifest import verdicts

    monkeypatch.setenv("PANTHER_CACHE_DIR", str(tmp_path / "cache"))
    doc = json.loads(manifests.bundled_path("lab").read_text())
    schema = manifests.schema()
    assert not verdicts.passed(doc, schema)
    verdicts.record(doc, schema)
    assert verdicts.passed(doc, schema)
    stricter = {**schema, "required": [*schema["required"], "extra"]}
    assert not verdicts.passed(doc, stricter)
    assert not verdicts.passed({**doc, "version": 1.0}, schema)  # 1.0 is not 1 to a schema
