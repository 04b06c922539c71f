"""Helpers shared by the tests: the real CLI, hashing, and cleanup of loops and mounts."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from pantheros import btrfs
from pantheros import manifest as manifests
from pantheros.manifest.models import RECORD_DIR
from tests.bootstep_variant import NEW_SUFFIX

REPO = Path(__file__).resolve().parent.parent


def _root_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (loop devices, mount, mkfs)"
    if not os.path.exists("/dev/loop-control"):
        return "needs /dev/loop-control (loop devices)"
    for tool in ("mkfs.btrfs", "losetup", "sgdisk", "partx"):
        if shutil.which(tool) is None:
            return f"needs {tool} (run scripts/setup)"
    with open("/proc/filesystems") as f:
        if "btrfs" not in f.read():
            return "needs a kernel with btrfs"
    return None


ROOT_REASON = _root_reason()


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _loops_backed_under(base: Path) -> list[str]:
    out = subprocess.run(
        ["losetup", "--json", "--list"], capture_output=True, text=True, check=True
    )
    if not out.stdout.strip():
        return []
    devices = json.loads(out.stdout)["loopdevices"]
    prefix = str(base.resolve()) + "/"
    return [d["name"] for d in devices if (d.get("back-file") or "").startswith(prefix)]


def _mounts_to_undo(base: Path, loops: list[str]) -> list[str]:
    """Mount points under base, or of a file system on one of our loop devices (or partitions)."""
    prefix = str(base.resolve()) + "/"
    ours = re.compile("^(" + "|".join(re.escape(Path(d).name) for d in loops) + r")(p\d+)?$")
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split(" ")
            point = fields[4]
            source = line.split(" - ", 1)[1].split(" ")[1]
            ours_by_device = bool(loops) and ours.match(Path(source).name) is not None
            if point.startswith(prefix) or point == prefix[:-1] or ours_by_device:
                points.append(point)
    return points


def cleanup_under(base: Path) -> None:
    """Unmount what lives under base or on its images, then detach the images' loop devices."""
    loops = _loops_backed_under(base)
    for point in reversed(_mounts_to_undo(base, loops)):
        subprocess.run(["umount", point], check=False)
    for point in reversed(_mounts_to_undo(base, loops)):
        subprocess.run(["umount", "--lazy", point], check=True)
    for dev in loops:
        subprocess.run(["losetup", "--detach", dev], check=True)


def panther(
    *args: str, input: str | None = None, env: dict[str, str] | None = None, user: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command line in a subprocess (as another user: see runtime_copy)."""
    argv = [sys.executable, "-m", "pantheros", *args]
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    full_env["PYTHONPATH"] = str(REPO / "src")
    cwd = None
    if user is not None:
        python = os.path.realpath(sys.executable)  # the system's, not the checkout's venv link
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", python]
        argv += ["-m", "pantheros", *args]
        full_env["PYTHONPATH"] = str(runtime_copy())
        cwd = "/"
    return subprocess.run(
        argv, capture_output=True, text=True, input=input, env=full_env, check=False, cwd=cwd
    )


_RUNTIME: list[Path] = []


def runtime_copy() -> Path:
    """panther and its runtime libraries, copied where any user may read them.

    The checkout (and its .venv) may sit under a directory only root may enter: CI clones where
    it likes, `mktemp -d` makes 0700 directories. Made once, removed when the tests end.
    """
    if _RUNTIME:
        return _RUNTIME[0]
    import atexit
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="panther-runtime-"))
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    os.chmod(base, 0o755)
    site_tree(base)
    for path in base.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    _RUNTIME.append(base)
    return base


# The import packages of the `pantheros` distribution (pyproject.toml's packages).
OWN_PACKAGES = ("pantheros", "panther_spec")


def runtime_distributions() -> list[metadata.Distribution]:
    """The distributions panther imports at run time: its requirements, recursively, read from
    the installed metadata (so a new dependency in pyproject.toml is carried without a list)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = ["pantheros"]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for requirement in dist.requires or []:
            if "extra ==" in requirement:
                continue
            todo.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return [dist for key, dist in seen.items() if key != "pantheros"]


def site_tree(dest: Path) -> None:
    """panther's packages and their runtime dependencies, importable from dest."""
    for name in OWN_PACKAGES:
        source = REPO / "src" / name
        shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for dist in runtime_distributions():
        for file in dist.files or []:
            top = file.parts[0]
            if (
                top.endswith((".dist-info", ".egg-info"))
                or top == ".."
                or "__pycache__" in file.parts
            ):
                continue
            source = Path(str(dist.locate_file(file)))
            if source.is_file():
                target = dest / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the failure is one clear line on stderr and return it."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("panther: error: "), proc.stderr
    return lines[0]


KEPT = ("persist", "nix", "log", "home")


@dataclass
class Pfs:
    """A formatted PantherOS filesystem: image, loop device, mounted top level and manifest."""

    image: Path
    device: str
    top: Path
    manifest_path: Path

    @property
    def manifest(self) -> manifests.Manifest:
        return manifests.load(self.manifest_path)

    @property
    def root(self) -> Path:
        return self.top / "root"

    @property
    def old_roots(self) -> Path:
        return self.top / "old_roots"

    def configure(self, **changes: Any) -> None:
        """Change impermanence settings in the manifest (retention keys, design, fail_policy)."""
        doc = json.loads(self.manifest_path.read_text())
        for key, value in changes.items():
            if key in ("design", "fail_policy"):
                doc["impermanence"][key] = value
            else:
                doc["impermanence"]["retention"][key] = value
        self.manifest_path.write_text(json.dumps(doc))

    def dirty(self, name: str = "etc/hostname", content: str = "changed") -> None:
        """What a running system does to its root."""
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)

    def old_root_names(self) -> list[str]:
        return sorted(p.name for p in self.old_roots.iterdir() if btrfs.is_subvolume(p))


def tree_hash(path: Path, skip: tuple[str, ...] = ()) -> str:
    """Content and metadata of a whole tree."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if os.path.join(dirpath, d) not in skip)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest.update(f"{full}:{st.st_mode}:{st.st_uid}:{st.st_gid}:{st.st_mtime_ns}".encode())
            if os.path.isfile(full) and not os.path.islink(full):
                digest.update(Path(full).read_bytes())
    return digest.hexdigest()


def kept_hashes(pfs: Pfs) -> dict[str, str]:
    # The rollback's own record in persist/.pantheros is the one thing it writes there.
    skip = (str(pfs.top / "persist" / RECORD_DIR),)
    return {name: tree_hash(pfs.top / name, skip) for name in KEPT}


def copy_image(pfs: Pfs, dest: Path) -> None:
    """The disk as it holds the filesystem right now (a power cut: only what was committed; the
    pfs fixture mounts with commit=300, so no background commit comes between)."""
    subprocess.run(["cp", "--sparse=always", str(pfs.image), str(dest)], check=True)


@contextlib.contextmanager
def mounted_image(image: Path, top: Path, manifest_path: Path) -> Iterator[Pfs]:
    """A copied image attached and its top level mounted at `top`; let go after."""
    top.mkdir()
    device = attach_partitioned(image)
    try:
        subprocess.run(["mount", "-o", "subvolid=5", f"{device}p2", str(top)], check=True)
        yield Pfs(image=image, device=device, top=top, manifest_path=manifest_path)
    finally:
        subprocess.run(["umount", str(top)], check=True)
        subprocess.run(["losetup", "--detach", device], check=True)


def subvolume_ids(pfs: Pfs) -> dict[int, str]:
    return {ref.id: ref.path for ref in btrfs.list_subvolumes(pfs.top)}


def next_root_problem(top: Path, manifest: manifests.Manifest) -> str | None:
    """What is wrong with <root>.pantheros-new, or None: it is either absent or the root stage 2
    prepared for the next boot (writable, unchanged since made, from the blank or empty: D154)."""
    new = top / (manifest.storage.root.name + NEW_SUFFIX)
    if not os.path.lexists(new):
        return None
    if not btrfs.is_subvolume(new):
        return f"{new.name} is not a subvolume"
    info = btrfs.subvolume_info(new)
    if info.readonly or info.ctransid > info.otransid:
        return f"{new.name} was left half-made (read-only or changed since made)"
    if manifest.impermanence.design.value == "blank-snapshot":
        blank = btrfs.subvolume_info(top / manifest.storage.blank_snapshot)
        if info.parent_uuid != blank.uuid:
            return f"{new.name} was not made from the blank"
    elif info.parent_uuid is not None or any(new.iterdir()):
        return f"{new.name} is not an empty subvolume"
    return None


def assert_invariants(pfs: Pfs, before: dict[str, str], ids_before: dict[int, str]) -> None:
    """Exactly one root; kept subvolumes unchanged; nothing outside old roots deleted; no
    half-made root left (the next boot's prepared root is not one)."""
    assert btrfs.is_subvolume(pfs.root), "there must always be a root subvolume"
    assert next_root_problem(pfs.top, pfs.manifest) is None
    assert kept_hashes(pfs) == before
    ids_after = subvolume_ids(pfs)
    for sid, path in ids_before.items():
        if sid not in ids_after:
            assert path.startswith(("old_roots/", "root/")) or path == "root", (
                f"subvolume {path} ({sid}) was deleted but was not an old root"
            )
    for name in ("root-blank", *KEPT):
        assert name in ids_after.values()


def attach_partitioned(image: Path) -> str:
    """Attach an image with a partition table; its partitions appear as <dev>p<N>."""
    dev = subprocess.run(
        ["losetup", "--find", "--show", "--partscan", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    subprocess.run(["partx", "--update", dev], check=False)
    return dev


def nix_eval_json(expr: str) -> Any:
    """A Nix expression's value, strictly evaluated, as JSON; fails the test with Nix's error."""
    proc = subprocess.run(
        ["nix-instantiate", "--eval", "--strict", "--json", "--readonly-mode", "-E", expr],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run_build_steps(script: str, cwd: Path, out: Path) -> None:
    """A derivation's build steps, as its builder runs them: bash, with $CC and $out set."""
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env={**os.environ, "CC": "cc", "out": str(out)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def eval_host_argv(
    module: Path,
    *args: str,
    attr: str | None = None,
    disko: str | None = None,
    nixos_modules: str | None = None,
    readonly: bool = False,
) -> list[str]:
    """nix-instantiate's argv for nix/eval.nix over the host module at `module`: with the
    nixpkgs lib of PANTHEROS_NIXPKGS_LIB, upstream impermanence where PANTHEROS_IMPERMANENCE
    names it, disko's and NixOS's own module files where given, args added, attr selected.
    readonly: paths are named, not copied into a store (disko's scripts name some)."""
    argv = ["nix-instantiate", "--eval", "--strict", "--json"]
    argv += ["--readonly-mode"] if readonly else []
    argv += [str(REPO / "nix" / "eval.nix"), "--argstr", "nixpkgsLib"]
    argv += [os.environ.get("PANTHEROS_NIXPKGS_LIB", "")]
    argv += ["--arg", "host", str(module), *args]
    impermanence = os.environ.get("PANTHEROS_IMPERMANENCE")
    if impermanence:
        argv += ["--argstr", "impermanence", impermanence]
    if disko:
        argv += ["--argstr", "disko", disko]
    if nixos_modules:
        argv += ["--argstr", "nixosModules", nixos_modules]
    if attr:
        argv += ["-A", attr]
    return argv
