"""Typed models of the manifest. Built only from a document the schema has accepted."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any


class Role(StrEnum):
    ROOT = "root"
    NIX = "nix"
    PERSIST = "persist"
    LOG = "log"
    HOME = "home"
    OTHER = "other"


class Design(StrEnum):
    BLANK_SNAPSHOT = "blank-snapshot"
    EMPTY_SUBVOLUME = "empty-subvolume"


class FailPolicy(StrEnum):
    FAIL_CLOSED = "fail-closed"
    BOOT_DIRTY = "boot-dirty"


def _data(name: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(
        (Path(__file__).resolve().parent.parent / "data" / name).read_text()
    )
    return found


# The layout's name rules and defaults: one table, read by nix/modules/storage.nix too and
# rendered into the schema and the boot step by scripts/render-layout.
LAYOUT: dict[str, Any] = _data("layout.json")
DEFAULT_MOUNT_OPTIONS: tuple[str, ...] = tuple(LAYOUT["defaults"]["btrfs_mount_options"])
ESP_MOUNT_OPTIONS: tuple[str, ...] = tuple(LAYOUT["defaults"]["esp_mount_options"])
NEEDED_FOR_BOOT_ROLES: frozenset[str] = frozenset(LAYOUT["defaults"]["needed_for_boot_roles"])
PARTITION_LABEL: str = LAYOUT["defaults"]["partition_label"]

# PantherOS's own records (the last rollback, persist's journals) on the persist subvolume.
RECORD_DIR = ".pantheros"


@dataclass(frozen=True)
class Esp:
    size_mib: int
    label: str
    mountpoint: str
    mount_options: tuple[str, ...] = ESP_MOUNT_OPTIONS


@dataclass(frozen=True)
class Luks:
    name: str
    label: str | None = None
    allow_discards: bool = False

    @property
    def mapper_path(self) -> str:
        """The opened mapping's device node."""
        return mapper_path(self.name)


@dataclass(frozen=True)
class Subvolume:
    name: str
    mountpoint: str
    role: Role
    mount_options: tuple[str, ...] = ()
    needed_for_boot: bool = False


@dataclass(frozen=True)
class Storage:
    btrfs_label: str
    subvolumes: tuple[Subvolume, ...]
    blank_snapshot: str
    old_roots: str
    btrfs_mount_options: tuple[str, ...] = DEFAULT_MOUNT_OPTIONS
    device: str | None = None
    esp: Esp | None = None
    partition_label: str = PARTITION_LABEL
    luks: Luks | None = None
    min_size_mib: int | None = None

    def by_role(self, role: Role) -> Subvolume | None:
        return next((s for s in self.subvolumes if s.role is role), None)

    @property
    def root(self) -> Subvolume:
        subvolume = self.by_role(Role.ROOT)
        assert subvolume is not None, "validated manifests have a root subvolume"
        return subvolume

    def mount_options_for(self, subvolume: Subvolume) -> list[str]:
        """Full option list: the filesystem-wide options, then the subvolume's own, then subvol=."""
        options = [*self.btrfs_mount_options]
        options += [o for o in subvolume.mount_options if o not in options]
        return [*options, f"subvol={subvolume.name}"]

    def ordered_subvolumes(self) -> list[Subvolume]:
        """Subvolumes in mount order: parents before children."""
        return sorted(self.subvolumes, key=lambda s: (mount_depth(s.mountpoint), s.mountpoint))

    def mount_points(self, *, root: bool = True, esp: bool = True) -> list[str]:
        """Where the manifest mounts something: the subvolumes' mount points (without "/" when
        root=False), then the ESP's (unless esp=False)."""
        points = [s.mountpoint for s in self.subvolumes if root or s.mountpoint != "/"]
        return [*points, self.esp.mountpoint] if esp and self.esp else points

    def owner(self, path: str) -> Subvolume | None:
        """The subvolume whose mount holds path (None: the ESP, or no subvolume at all)."""
        mount = owning_mount(path, self.mount_points())
        return next((s for s in self.subvolumes if s.mountpoint == mount), None)

    def not_persistable(self, path: str) -> str | None:
        """Why path cannot be a persistence entry here (the rules the manifest's own entries
        follow, and the NixOS module asserts), or None: on the rolled-back root, not / itself,
        holding no mount point."""
        owner = self.owner(path)
        if path == "/":
            return "is the whole root"
        if owner is None or owner.role is not Role.ROOT:
            where = f"the {owner.name} subvolume" if owner else "the ESP"
            return f"lies on {where}, which is not rolled back"
        inner = [m for m in self.mount_points() if m.startswith(path.rstrip("/") + "/")]
        return f"holds the mount point {inner[0]}" if inner else None


@dataclass(frozen=True)
class Retention:
    keep_min: int
    max_age_days: int | None = None
    max_count: int | None = None
    min_free_percent: int | None = None


@dataclass(frozen=True)
class Impermanence:
    enable: bool
    design: Design
    retention: Retention
    fail_policy: FailPolicy


@dataclass(frozen=True)
class PersistenceEntry:
    path: str
    kind: str  # directory | file
    user: str
    group: str
    mode: str

    @classmethod
    def with_defaults(cls, path: str, kind: str, given: Mapping[str, Any]) -> PersistenceEntry:
        """The entry, with the owner and mode the NixOS module gives where given names none."""
        defaults = _entry_defaults()
        return cls(
            path=path,
            kind=kind,
            user=given.get("user", defaults["user"]),
            group=given.get("group", defaults["group"]),
            mode=given.get("mode", defaults["mode"][kind]),
        )


@cache
def _entry_defaults() -> dict[str, Any]:
    """One table, two readers: nix/modules/impermanence.nix reads the same file."""
    return _data("persistence-defaults.json")


@dataclass(frozen=True)
class FirstBootEntry:
    """A directory made when the disk is laid out, or a file the installer stages, on the
    persistent subvolume (its path as the running system sees it)."""

    path: str
    user: str
    group: str
    mode: str
    uid: int | None = None  # None: allocated at the first boot, unknown to the installer
    gid: int | None = None
    required: bool = False
    what: str = ""
    login: str | None = None  # the user whose password hash the file is

    @property
    def mode_bits(self) -> int:
        return int(self.mode, 8)


@dataclass(frozen=True)
class FirstBoot:
    """What must or may exist on the persistent subvolume before the first boot (D134)."""

    directories: tuple[FirstBootEntry, ...] = ()
    files: tuple[FirstBootEntry, ...] = ()


@dataclass(frozen=True)
class Security:
    level: str
    waivers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    version: int
    host: str
    storage: Storage
    impermanence: Impermanence
    persistence: tuple[PersistenceEntry, ...]
    security: Security
    source: str = "<manifest>"
    first_boot: FirstBoot = field(default_factory=FirstBoot)

    @property
    def persist(self) -> Subvolume | None:
        return self.storage.by_role(Role.PERSIST)


def mount_depth(mountpoint: str) -> int:
    return 0 if mountpoint == "/" else mountpoint.rstrip("/").count("/")


def owning_mount(path: str, mount_points: list[str]) -> str | None:
    """The deepest of mount_points that contains path (None when none does)."""
    inside = [m for m in mount_points if m == "/" or path == m or path.startswith(m + "/")]
    return max(inside, key=mount_depth) if inside else None


def mapper_path(name: str) -> str:
    """The device node of the device-mapper mapping called name (an opened LUKS volume)."""
    return f"/dev/mapper/{name}"


def build(doc: dict[str, Any], source: str) -> Manifest:
    """Turn a schema-valid document into models."""
    st = doc["storage"]
    esp = st.get("esp")
    luks = st.get("luks")
    storage = Storage(
        btrfs_label=st["btrfs"]["label"],
        btrfs_mount_options=tuple(st["btrfs"].get("mount_options", DEFAULT_MOUNT_OPTIONS)),
        subvolumes=tuple(
            Subvolume(
                name=s["name"],
                mountpoint=s["mountpoint"],
                role=Role(s["role"]),
                mount_options=tuple(s.get("mount_options", ())),
                needed_for_boot=s.get("needed_for_boot", s["role"] in NEEDED_FOR_BOOT_ROLES),
            )
            for s in st["subvolumes"]
        ),
        blank_snapshot=st["blank_snapshot"],
        old_roots=st["old_roots"],
        device=st.get("device"),
        esp=None
        if esp is None
        else Esp(
            size_mib=esp["size_mib"],
            label=esp["label"],
            mountpoint=esp["mountpoint"],
            mount_options=tuple(esp.get("mount_options", ESP_MOUNT_OPTIONS)),
        ),
        partition_label=st.get("partition_label", PARTITION_LABEL),
        luks=None
        if luks is None
        else Luks(
            name=luks["name"],
            label=luks.get("label"),
            allow_discards=luks.get("allow_discards", False),
        ),
        min_size_mib=st.get("min_size_mib"),
    )
    im = doc["impermanence"]
    ret = im["retention"]
    impermanence = Impermanence(
        enable=im["enable"],
        design=Design(im["design"]),
        fail_policy=FailPolicy(im["fail_policy"]),
        retention=Retention(
            keep_min=ret["keep_min"],
            max_age_days=ret.get("max_age_days"),
            max_count=ret.get("max_count"),
            min_free_percent=ret.get("min_free_percent"),
        ),
    )
    persistence = tuple(
        PersistenceEntry.with_defaults(e["path"], e["kind"], e) for e in doc["persistence"]
    )
    sec = doc["security"]
    security = Security(
        level=sec["level"],
        waivers={k: v["reason"] for k, v in sec.get("waivers", {}).items()},
    )
    return Manifest(
        version=doc["version"],
        host=doc["host"],
        storage=storage,
        impermanence=impermanence,
        persistence=persistence,
        security=security,
        source=source,
        first_boot=_first_boot(doc.get("first_boot")),
    )


def _first_boot(doc: dict[str, Any] | None) -> FirstBoot:
    if doc is None:
        return FirstBoot()

    def entry(e: dict[str, Any]) -> FirstBootEntry:
        return FirstBootEntry(
            path=e["path"],
            user=e["user"],
            group=e["group"],
            mode=e["mode"],
            uid=e.get("uid"),
            gid=e.get("gid"),
            required=e.get("required", False),
            what=e.get("what", ""),
            login=e.get("login"),
        )

    return FirstBoot(
        directories=tuple(entry(e) for e in doc["directories"]),
        files=tuple(entry(e) for e in doc["files"]),
    )
