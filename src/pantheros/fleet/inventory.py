"""The hosts of a fleet: a plain hosts file (TOML or JSON), colmena's and deploy-rs's node lists,
and `--on` selection.

Every value that reaches an `ssh` argv is checked here, once: a name, address or user that
starts with `-` would be read by ssh as an option, and a name becomes part of a SARIF category.
A bad inventory is one line naming the file, the key and the reason, and nothing runs.
"""

from __future__ import annotations

import difflib
import fnmatch
import getpass
import json
import re
import shlex
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pantheros import process
from pantheros.errors import CommandFailed, ToolMissing, UsageError

# A host's name: a row of the report, part of a SARIF category (`pantheros-audit/<name>/`).
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@+-]{0,127}")
# A DNS name, an IPv4 or IPv6 address, an ssh_config Host alias: never an option, never spaced.
ADDRESS = re.compile(r"[A-Za-z0-9_.:%\[\]][A-Za-z0-9_.:%\[\]-]{0,252}")
USER = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]{0,63}")
TAG = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
SSH_OPTION = re.compile(r"[A-Za-z][A-Za-z0-9]*[= ]\S.*")

HOST_KEYS = (
    "name",
    "address",
    "user",
    "port",
    "tags",
    "identity",
    "ssh_options",
    "panther",
    "become",
)
# Other names people give these keys (ssh_config's, Ansible's), read as the key they mean.
ALIASES = {"host": "address", "hostname": "address", "identity_file": "identity"}
DEFAULT_KEYS = tuple(k for k in HOST_KEYS if k not in ("name", "address", "tags"))
DEFAULT_FILES = ("fleet.toml", "fleet.json")


@dataclass(frozen=True)
class Host:
    """One host of the fleet and how to reach it.

    `address` is None for a node its deployer reaches only locally (colmena's `targetHost =
    null`): it stays in the report as a row that says so.
    """

    name: str
    address: str | None
    user: str | None = None
    port: int | None = None
    tags: tuple[str, ...] = ()
    identity: str | None = None
    ssh_options: tuple[str, ...] = ()  # each passed as `-o KEY=VALUE`
    ssh_args: tuple[str, ...] = ()  # raw ssh arguments (deploy-rs's sshOpts)
    panther: str = "panther"  # the command on the host
    become: tuple[str, ...] = ()  # run panther through this (sudo) when the login is not root
    source: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "user": self.user,
            "port": self.port,
            "tags": list(self.tags),
        }


@dataclass
class Inventory:
    hosts: list[Host] = field(default_factory=list)

    def add(self, hosts: Iterable[Host]) -> None:
        seen = {h.name: h for h in self.hosts}
        for host in hosts:
            if host.name in seen:
                raise UsageError(
                    f"host {host.name!r} is named twice ({seen[host.name].source} and "
                    f"{host.source}): give each host one name"
                )
            seen[host.name] = host
            self.hosts.append(host)

    def select(self, selectors: Sequence[str]) -> list[Host]:
        """The hosts `--on` names: a name, a tag (`@tag` says it is one), or a glob of names;
        several given or comma-separated add up. None: every host."""
        words = [w.strip() for s in selectors for w in s.split(",") if w.strip()]
        if not words:
            return list(self.hosts)
        tags = {t for h in self.hosts for t in h.tags}
        chosen: set[str] = set()
        for word in words:
            matched = _matching(self.hosts, word, tags)
            if not matched:
                raise UsageError(_unknown_selector(word, self.hosts, tags))
            chosen.update(matched)
        return [h for h in self.hosts if h.name in chosen]


def _matching(hosts: Sequence[Host], word: str, tags: set[str]) -> set[str]:
    if word.startswith("@"):
        return {h.name for h in hosts if word[1:] in h.tags}
    if any(c in word for c in "*?["):
        return {h.name for h in hosts if fnmatch.fnmatchcase(h.name, word)}
    return {h.name for h in hosts if h.name == word or word in h.tags}


def _unknown_selector(word: str, hosts: Sequence[Host], tags: set[str]) -> str:
    names = [h.name for h in hosts]
    close = difflib.get_close_matches(word.lstrip("@"), [*names, *sorted(tags)], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listed = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    tagged = ", ".join(sorted(tags)[:8]) or "none"
    return (
        f"--on {word}: no host or tag of that name{hint} (hosts: {listed or 'none'}; "
        f"tags: {tagged})"
    )


# The hosts file


class _Reader:
    """Checks values of one document and says where a bad one is."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, reason: str) -> UsageError:
        return UsageError(f"inventory {self.source}: {where}: {reason}")

    def string(self, value: Any, where: str, pattern: re.Pattern[str], what: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, f"must be a string ({what}), not {_shown(value)}")
        if not pattern.fullmatch(value):
            raise self.fail(where, f"{_shown(value)} is not a valid {what}")
        return value

    def port(self, value: Any, where: str) -> int:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            raise self.fail(where, f"must be an integer from 1 to 65535, not {_shown(value)}")
        return value

    def strings(self, value: Any, where: str) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(where, f"must be a list of strings, not {_shown(value)}")
        return list(value)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def load_file(path: str) -> list[Host]:
    """The hosts of a hosts file: TOML (`.toml`) or JSON (`.json`; else by its first character)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"inventory {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"inventory {path}: is a directory, not a hosts file") from None
    except UnicodeDecodeError:
        raise UsageError(f"inventory {path}: not UTF-8 text") from None
    as_json = path.endswith(".json") or (
        not path.endswith(".toml") and text.lstrip().startswith("{")
    )
    try:
        doc: Any = json.loads(text) if as_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"inventory {path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"inventory {path}: not TOML: {exc}") from None
    return parse_document(doc, path, base=Path(path).resolve().parent)


def parse_document(doc: Any, source: str, base: Path) -> list[Host]:
    r = _Reader(source)
    if isinstance(doc, list):  # a JSON list of hosts, as `hosts` would hold it
        doc = {"hosts": doc}
    if not isinstance(doc, dict):
        raise r.fail("$", "must be a table with `hosts` (and optionally `defaults`)")
    unknown = set(doc) - {"hosts", "defaults"}
    if unknown:
        raise r.fail(sorted(unknown)[0], "unknown key (known: hosts, defaults)")
    defaults = doc.get("defaults", {})
    if not isinstance(defaults, dict):
        raise r.fail("defaults", "must be a table")
    defaults = _unaliased(r, defaults, "defaults")
    _known(r, defaults, DEFAULT_KEYS, "defaults")
    raw = doc.get("hosts")
    entries: list[tuple[str, dict[str, Any]]] = []
    if isinstance(raw, dict):
        for name, entry in raw.items():
            if not isinstance(entry, dict):
                raise r.fail(f"hosts.{name}", "must be a table of the host's settings")
            if "name" in entry and entry["name"] != name:
                raise r.fail(f"hosts.{name}.name", "differs from the table's own name")
            entries.append((f"hosts.{name}", {"name": name, **_unaliased(r, entry, name)}))
    elif isinstance(raw, list):
        for index, entry in enumerate(raw):
            if not isinstance(entry, dict):
                raise r.fail(f"hosts[{index}]", "must be a table of the host's settings")
            entries.append((f"hosts[{index}]", _unaliased(r, entry, f"hosts[{index}]")))
    else:
        raise r.fail("hosts", "missing: a table of hosts by name, or a list of hosts")
    if not entries:
        raise r.fail("hosts", "names no host")
    return [_host(r, where, {**defaults, **entry}, set(entry), base) for where, entry in entries]


def _unaliased(r: _Reader, entry: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in entry.items():
        meant = ALIASES.get(key, key)
        if meant in out:
            raise r.fail(f"{where}.{key}", f"says again what `{meant}` says: give one")
        out[meant] = value
    return out


def _known(r: _Reader, entry: Mapping[str, Any], keys: Sequence[str], where: str) -> None:
    for key in entry:
        if key not in keys:
            close = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise r.fail(f"{where}.{key}", f"unknown key{hint} (known: {', '.join(keys)})")


def _host(r: _Reader, where: str, entry: dict[str, Any], own: set[str], base: Path) -> Host:
    """The host of entry (its own keys over the defaults; `own`: the keys it gave itself)."""
    _known(r, entry, HOST_KEYS, where)
    if "name" not in entry:
        raise r.fail(where, "has no `name`")
    name = r.string(entry["name"], f"{where}.name", NAME, "host name")
    if "address" not in entry:
        raise r.fail(where, "has no `address` (the SSH host name or IP address)")
    address = r.string(entry["address"], f"{where}.address", re.compile(r".+"), "address")
    user = entry.get("user")
    if "@" in address:
        named, address = address.rsplit("@", 1)
        if "user" in own and entry["user"] != named:
            raise r.fail(f"{where}.address", f"names user {named!r} but `user` says otherwise")
        user = named
    if address.startswith("[") and address.endswith("]"):  # [2001:db8::1]: ssh wants it bare
        address = address[1:-1]
    address = r.string(address, f"{where}.address", ADDRESS, "SSH host name or address")
    if user is not None:
        user = r.string(user, f"{where}.user", USER, "user name")
    port = r.port(entry["port"], f"{where}.port") if "port" in entry else None
    given_tags = entry.get("tags", [])
    if isinstance(given_tags, str):  # "web, prod"
        given_tags = [t for t in re.split(r"[,\s]+", given_tags) if t]
    tags = tuple(
        r.string(t, f"{where}.tags", TAG, "tag") for t in r.strings(given_tags, f"{where}.tags")
    )
    identity = None
    if "identity" in entry:
        given = r.string(entry["identity"], f"{where}.identity", re.compile(r".+"), "path")
        resolved = base / Path(given).expanduser()
        if not resolved.is_file():
            raise r.fail(f"{where}.identity", f"{given}: no such file")
        identity = str(resolved)
    options = tuple(
        r.string(o, f"{where}.ssh_options", SSH_OPTION, "ssh option (KEY=VALUE)")
        for o in r.strings(entry.get("ssh_options", []), f"{where}.ssh_options")
    )
    panther = entry.get("panther", "panther")
    if not isinstance(panther, str) or not panther or panther.startswith("-"):
        raise r.fail(f"{where}.panther", "must be the command's name or absolute path")
    become: Any = entry.get("become", [])
    if isinstance(become, str):
        become = shlex.split(become)
    become = r.strings(become, f"{where}.become")
    return Host(
        name=name,
        address=address,
        user=user,
        port=port,
        tags=tags,
        identity=identity,
        ssh_options=options,
        panther=panther,
        become=tuple(become),
        source=r.source,
    )


# colmena and deploy-rs

# What `nix eval` keeps of each node, so that nothing else is evaluated: not the systems (a
# deploy-rs profile's `path` is a whole NixOS build) and not colmena's keys (secret text).
COLMENA_APPLY = (
    "builtins.mapAttrs (name: d: { targetHost = d.targetHost or name; "
    "targetPort = d.targetPort or null; targetUser = d.targetUser or null; "
    "tags = d.tags or [ ]; privilegeEscalationCommand = d.privilegeEscalationCommand or null; })"
)
DEPLOY_RS_APPLY = (
    "deploy: let pick = builtins.intersectAttrs { hostname = 0; sshUser = 0; user = 0; "
    "sudo = 0; sshOpts = 0; }; in pick deploy // { nodes = builtins.mapAttrs (name: node: "
    "pick node // { profiles = builtins.mapAttrs (_: pick) (node.profiles or { }); }) "
    "(deploy.nodes or { }); }"
)
NIX_FEATURES = ["--extra-experimental-features", "nix-command flakes"]


def nix_eval_argv(kind: str, flake: str) -> list[str]:
    """The `nix eval` that prints a flake's node list: colmena's `colmenaHive.deploymentConfig`
    or deploy-rs's `deploy`, unless FLAKE names its attribute (`.#attr`) itself."""
    default = {"colmena": "colmenaHive.deploymentConfig", "deploy-rs": "deploy"}[kind]
    ref = flake if "#" in flake else f"{flake}#{default}"
    apply = COLMENA_APPLY if kind == "colmena" else DEPLOY_RS_APPLY
    return ["nix", *NIX_FEATURES, "eval", "--json", ref, "--apply", apply]


def load_nodes(kind: str, given: str) -> list[Host]:
    """colmena's or deploy-rs's nodes from a JSON file (`-` reads stdin), else from the flake
    reference given, with `nix eval --json`."""
    if given == "-" or Path(given).is_file():
        source = "stdin" if given == "-" else given
        try:
            text = sys.stdin.read() if given == "-" else Path(given).read_text(encoding="utf-8")
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"{kind} nodes {source}: not JSON: {exc.msg} at line {exc.lineno} (give the "
                f"output of `{' '.join(shlex.quote(a) for a in nix_eval_argv(kind, '.'))}`)"
            ) from None
    else:
        source = given
        argv = nix_eval_argv(kind, given)
        try:
            proc = process.run(argv, check=True)
        except ToolMissing:
            raise ToolMissing(
                f"--{kind} {given}: not a file, and nix is not installed to evaluate it as a "
                "flake (install nix-bin, or give the JSON of `nix eval --json` as a file)"
            ) from None
        except CommandFailed as exc:
            raise UsageError(
                f"--{kind} {given}: nix eval failed: {exc.args[0].removeprefix('nix failed: ')}"
            ) from None
        doc = json.loads(proc.stdout)
    return colmena_hosts(doc, source) if kind == "colmena" else deploy_rs_hosts(doc, source)


def colmena_hosts(doc: Any, source: str) -> list[Host]:
    """Hosts from colmena's deployment options by node (`colmenaHive.deploymentConfig`)."""
    r = _Reader(f"colmena nodes {source}")
    if not isinstance(doc, dict) or not doc:
        raise r.fail("$", "must map each node's name to its `deployment` options")
    hosts = []
    for name, d in doc.items():
        if not isinstance(d, dict):
            raise r.fail(name, "must be the node's deployment options")
        r.string(name, name, NAME, "host name")
        address = d.get("targetHost", name)
        if address is not None:
            address = r.string(address, f"{name}.targetHost", ADDRESS, "SSH host name")
        port = d.get("targetPort")
        if port is not None:
            port = r.port(port, f"{name}.targetPort")
        user = d.get("targetUser", "root")
        if user is not None:
            user = r.string(user, f"{name}.targetUser", USER, "user name")
        escalate = d.get("privilegeEscalationCommand") or ["sudo", "-H", "--"]
        hosts.append(
            Host(
                name=name,
                address=address,
                user=user,
                port=port,
                tags=tuple(
                    r.string(t, f"{name}.tags", TAG, "tag")
                    for t in r.strings(d.get("tags", []), f"{name}.tags")
                ),
                become=tuple(r.strings(escalate, f"{name}.privilegeEscalationCommand"))
                if user not in (None, "root")
                else (),
                source=r.source,
            )
        )
    return hosts


def deploy_rs_hosts(doc: Any, source: str) -> list[Host]:
    """Hosts from deploy-rs's `deploy` (or its `deploy.nodes`): settings of the system profile
    over the node's over the top level's, as deploy-rs reads them."""
    r = _Reader(f"deploy-rs nodes {source}")
    if not isinstance(doc, dict):
        raise r.fail("$", "must be `deploy` (with `nodes`) or `deploy.nodes`")
    nodes = doc.get("nodes")
    top: dict[str, Any] = doc
    if not isinstance(nodes, dict) or "hostname" in nodes:
        nodes, top = doc, {}
    if not nodes:
        raise r.fail("nodes", "names no node")
    hosts = []
    for name, node in nodes.items():
        if not isinstance(node, dict):
            raise r.fail(f"nodes.{name}", "must be the node's settings")
        r.string(name, f"nodes.{name}", NAME, "host name")
        profiles = node.get("profiles") or {}
        system = profiles.get("system") if isinstance(profiles, dict) else None
        layers = [s for s in (system, node, top) if isinstance(s, dict)]

        def first(key: str, layers: list[dict[str, Any]] = layers) -> Any:
            return next((s[key] for s in layers if s.get(key) is not None), None)

        if "hostname" not in node:
            raise r.fail(f"nodes.{name}", "has no `hostname`")
        address = r.string(node["hostname"], f"nodes.{name}.hostname", ADDRESS, "host name")
        ssh_user = first("sshUser")
        if ssh_user is not None:
            ssh_user = r.string(ssh_user, f"nodes.{name}.sshUser", USER, "user name")
        ssh_opts = first("sshOpts") or []
        args = r.strings(ssh_opts, f"nodes.{name}.sshOpts")
        # panther runs as root: through deploy-rs's sudo when it logs in as someone else.
        login = ssh_user or getpass.getuser()
        sudo = first("sudo") or "sudo -u"
        if not isinstance(sudo, str):
            raise r.fail(f"nodes.{name}.sudo", "must be a string such as 'sudo -u'")
        hosts.append(
            Host(
                name=name,
                address=address,
                user=ssh_user,
                ssh_args=tuple(args),
                become=() if login == "root" else (*shlex.split(sudo), "root"),
                source=r.source,
            )
        )
    return hosts


def load(
    files: Sequence[str], colmena: Sequence[str], deploy_rs: Sequence[str], cwd: Path | None = None
) -> Inventory:
    """Every host the sources name; with none given, fleet.toml or fleet.json here."""
    inventory = Inventory()
    if not (files or colmena or deploy_rs):
        here = cwd or Path.cwd()
        found = [name for name in DEFAULT_FILES if (here / name).is_file()]
        if not found:
            raise UsageError(
                "no inventory: give --inventory FILE, --colmena or --deploy-rs "
                f"(or put {' or '.join(DEFAULT_FILES)} here)"
            )
        files = [str(here / found[0])]
    for path in files:
        inventory.add(load_file(path))
    for given in colmena:
        inventory.add(load_nodes("colmena", given))
    for given in deploy_rs:
        inventory.add(load_nodes("deploy-rs", given))
    return inventory
