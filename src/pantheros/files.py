"""The one way panther reads and writes a file of a machine: its records, and the files it reads.

Reading (`read_bytes`, `read_json`): only a regular file is read, and never beyond a size cap.
The file is first opened with O_PATH (which opens no device and waits for no FIFO writer), its
type checked on that descriptor, and only then reopened for reading, without blocking; a FIFO,
a device, a socket or a directory is refused in one line naming the file, never read.

Where the path is panther's own (`beneath=BASE`: a record, a journal, the pins, the login
warning), it is reached from BASE with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
RESOLVE_NO_XDEV): no symlink, no mount and no `..` on the way, the record itself included.
panther never makes a symlink there, so one found there was planted, and it is refused rather
than followed (not even inside the machine). Such a record must also be one panther could have
written: owned by root (or by the user running panther) and not writable by everyone.
A path a user names (`beneath=None`: `--manifest`, `--host-file`, an ignore file) is opened as
given, symlinks followed (on NixOS /etc is links into the store), with the same checks.

Writing (`replace_file`, `write_json`, `remove_file`) goes through a descriptor of the parent
directory reached the same way (missing directories made on the way, never through a link), so
a record never lands outside BASE; see `replace_file` for why a crash leaves it whole.

JSON (`parse_json`): strict, UTF-8, no NaN or Infinity, no number that is not finite, no integer
longer than any record holds, no text that is not Unicode; nesting too deep to parse is one
error line like any other bad document, never a traceback.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pantheros.errors import ExitCode, PantherError, UsageError

# Larger than any record or configuration file panther reads; a link to /dev/zero or a huge
# planted file is refused before it is read, not read until memory runs out.
MAX_BYTES = 16 << 20
# No record holds a number this long; Python itself refuses 4,300 digits with a long message.
MAX_DIGITS = 40

# openat2(2): Python has no wrapper. 437 on every architecture NixOS runs on (not alpha).
_SYS_OPENAT2 = 437
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
STRICT = RESOLVE_NO_XDEV | RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str | bytes | os.PathLike[str], flags: int, resolve: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    fd = _libc.syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dirfd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            raise PantherError("this kernel lacks openat2 (Linux 5.6 or newer is needed)")
        raise OSError(err, os.strerror(err), os.fsdecode(path))
    return int(fd)


class Unreadable(PantherError):
    """A file panther will not read (not a regular file, too large, a symlink or a mount on
    its way, not panther's), or cannot. `reason` is the line without the file's name."""

    def __init__(self, shown: str, reason: str, *, refused: bool = True) -> None:
        code = ExitCode.REFUSED if refused else ExitCode.FAILURE
        super().__init__(f"{shown}: {reason}", exit_code=code)
        self.reason = reason


class BadRecord(UsageError):
    """A file panther reads whose content is not what it must be: nothing in it is used."""


_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
}


def kind(mode: int) -> str:
    """A file type in words: `a FIFO`, `a directory`, ..."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def _shown(path: Path, what: str, known_as: str | None = None) -> str:
    """The file in messages: what it is, and its path, or the name it is known by (a path in
    a private mount of the top level means nothing to the user: `/persist/.pantheros/...`)."""
    named = known_as or str(path)
    return f"{what} {named}" if what else named


def _relative(path: Path, beneath: Path) -> str:
    try:
        rel = path.relative_to(beneath)
    except ValueError:
        raise PantherError(f"{path} is not under {beneath}") from None
    if not rel.parts or ".." in rel.parts:
        raise PantherError(f"{path} is not a file under {beneath}")
    return str(rel)


def _way_refused(exc: OSError, shown: str) -> Unreadable:
    """What openat2 said about the way to a record, as one line."""
    why = {
        errno.ELOOP: "a symlink",
        errno.EXDEV: "a mount point",
        errno.ENOTDIR: "something that is not a directory",
    }.get(exc.errno or 0)
    if why is not None:
        return Unreadable(shown, f"{why} on its way, where panther follows none")
    return Unreadable(shown, f"cannot open: {exc.strerror}", refused=False)


def _open_path(path: Path, beneath: Path | None, shown: str) -> int | None:
    """An O_PATH descriptor of path (None when it does not exist)."""
    try:
        if beneath is None:
            return os.open(path, os.O_PATH | os.O_CLOEXEC)
        base = os.open(beneath, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if path == beneath:
            return base
        try:
            return openat2(base, _relative(path, beneath), os.O_PATH | os.O_NOFOLLOW, STRICT)
        finally:
            os.close(base)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if beneath is None:
            raise Unreadable(shown, f"cannot open: {exc.strerror}", refused=False) from None
        raise _way_refused(exc, shown) from None


def _check(st: os.stat_result, shown: str, *, ours: bool) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(shown, f"{kind(st.st_mode)}, not a regular file: not read")
    if ours and st.st_uid not in (0, os.geteuid()):
        raise Unreadable(shown, f"owned by uid {st.st_uid}, not by root: not panther's, not used")
    if ours and st.st_mode & stat.S_IWOTH:
        raise Unreadable(shown, "writable by everyone: not panther's, not used")


def open_regular(path: str | bytes | os.PathLike[str]) -> int | None:
    """A read descriptor of the regular file at path (not followed if it is a symlink); None when
    it is anything else now (a FIFO, a device: opened with O_PATH first, so no driver is
    asked to open and no FIFO is waited on). OSError when it cannot be opened at all."""
    pathfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(pathfd).st_mode):
            return None
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        return os.open(f"/proc/self/fd/{pathfd}", flags)
    finally:
        os.close(pathfd)


def open_beneath(path: Path, *, beneath: Path, what: str = "") -> int:
    """An O_PATH descriptor of path (a directory or a file), reached from beneath without a
    symlink, a mount or `..` on the way, the last component included: what a mount is made on
    or from (mounts.mount takes it), so that nothing swapped in meanwhile is followed."""
    shown = _shown(path, what)
    fd = _open_path(path, beneath, shown)
    if fd is None:
        raise Unreadable(shown, "does not exist", refused=False)
    if stat.S_ISLNK(os.fstat(fd).st_mode):
        os.close(fd)
        raise Unreadable(shown, "a symlink (panther mounts on and from none)")
    return fd


@contextlib.contextmanager
def open_directory(path: Path, *, beneath: Path) -> Iterator[int]:
    """A descriptor of the existing directory path, reached as `open_beneath` reaches it."""
    fd = _directory(path, beneath, create=False, shown=str(path))
    if fd is None:
        raise Unreadable(str(path), "does not exist", refused=False)
    try:
        yield fd
    finally:
        os.close(fd)


def make_directories(path: Path, *, beneath: Path) -> None:
    """Make the directory path and its missing parents (0755) under beneath, never through a
    symlink or a mount."""
    fd = _directory(path, beneath, create=True, shown=str(path))
    if fd is not None:
        os.close(fd)


def read_bytes(
    path: Path,
    *,
    beneath: Path | None,
    what: str = "",
    known_as: str | None = None,
    limit: int = MAX_BYTES,
) -> bytes | None:
    """The content of the regular file at path, or None when there is none.

    beneath: the directory panther's own path starts from (no symlink or mount after it), or
    None for a path a user named. Anything but a regular file, or a file past limit, is
    refused with one line naming it (`what`: the file in words, "the rollback record";
    known_as: the name to show instead of path).
    """
    shown = _shown(path, what, known_as)
    pathfd = _open_path(path, beneath, shown)
    if pathfd is None:
        return None
    try:
        _check(os.fstat(pathfd), shown, ours=beneath is not None)
        # Reopening the O_PATH descriptor reads exactly the inode that was checked.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(f"/proc/self/fd/{pathfd}", flags)
        except OSError as exc:
            raise Unreadable(shown, f"cannot read: {exc.strerror}", refused=False) from None
    finally:
        os.close(pathfd)
    try:
        data = read_at_most(fd, limit)
    except OSError as exc:
        raise Unreadable(shown, f"cannot read: {exc.strerror}", refused=False) from None
    finally:
        os.close(fd)
    if data is None:
        raise Unreadable(shown, f"larger than {limit // (1 << 20)} MiB: not read")
    return data


def read_at_most(fd: int, limit: int) -> bytes | None:
    """What the open file fd holds, or None when that is more than limit bytes (read no further)."""
    chunks = []
    size = 0
    while size <= limit:
        chunk = os.read(fd, min(1 << 20, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return None if size > limit else b"".join(chunks)


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} is not a finite number")
    return value


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise ValueError(f"an integer of {digits} digits")
    return int(text)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(data: bytes | str) -> Any:
    """A JSON document, strictly; ValueError with a short reason (one line) when it is not one."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(
            text, parse_constant=_no_constant, parse_float=_finite, parse_int=_bounded_int
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise ValueError("not JSON panther reads: nested too deeply") from None
    _require_text(value)
    return value


def _require_text(value: Any) -> None:
    """Every string must be real Unicode (a lone surrogate is no name and no line of text).

    Iterative: a document as deep as the parser allows would overflow a recursive walk."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("holds a lone surrogate (\\ud800...), not Unicode text") from None
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def read_json(
    path: Path, *, beneath: Path | None, what: str = "", known_as: str | None = None
) -> Any:
    """The JSON document in the file at path (read as `read_bytes` does); None when absent."""
    data = read_bytes(path, beneath=beneath, what=what, known_as=known_as)
    if data is None:
        return None
    try:
        return parse_json(data)
    except ValueError as exc:
        shown = _shown(path, what, known_as)
        raise BadRecord(f"{shown} is not valid: {exc}; nothing in it is used") from None


def _directory(path: Path, beneath: Path | None, *, create: bool, shown: str) -> int | None:
    """A descriptor of the directory path (None when missing and not create).

    Under beneath, each component is opened without following a symlink or crossing a mount,
    and a missing one is made (0755) when create is set. shown: the file it is for, in errors.
    """
    if beneath is None:
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
    parts = Path(_relative(path, beneath)).parts if path != beneath else ()
    if create:
        os.makedirs(beneath, exist_ok=True)  # the base is trusted: the caller's own directory
    fd = os.open(beneath, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    try:
        for part in parts:
            try:
                child = openat2(fd, part, flags, STRICT)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                child = openat2(fd, part, flags, STRICT)
            except NotADirectoryError as exc:
                # O_NOFOLLOW|O_DIRECTORY says ENOTDIR for a symlink too: name which it is.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from exc
                raise
            os.close(fd)
            fd = child
    except OSError as exc:
        os.close(fd)
        raise _way_refused(exc, shown) from None
    return fd


@contextlib.contextmanager
def _in_directory(path: Path, beneath: Path | None, shown: str) -> Iterator[int]:
    try:
        fd = _directory(path.parent, beneath, create=beneath is not None, shown=shown)
    except OSError as exc:
        raise PantherError(f"cannot write {shown}: {exc.strerror}") from None
    if fd is None:
        raise PantherError(f"cannot write {shown}: {path.parent} does not exist")
    try:
        yield fd
    finally:
        os.close(fd)


def replace_file(
    path: Path, content: bytes, *, beneath: Path | None, known_as: str | None = None
) -> None:
    """Replace path with content (mode 0644): after a crash, the whole old or new file.

    Written to a fresh private name in the same directory (O_EXCL: nobody pre-creates or
    follows it) and flushed to disk before the rename, and the directory after it, so the
    rename never lands ahead of the data. beneath: as for `read_bytes`; the directories on
    the way are made when missing.
    """
    shown = known_as or str(path)
    with _in_directory(path, beneath, shown) as directory:
        while True:
            # Hidden, and named after the record (`.pantheros-pins.json.<hex>.tmp`: what a
            # killed write leaves is known for what it is by whoever lists the directory).
            dot = "" if path.name.startswith(".") else "."
            tmp = f"{dot}{path.name}.{os.urandom(6).hex()}.tmp"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(tmp, flags, 0o600, dir_fd=directory)
                break
            except FileExistsError:
                continue
            except OSError as exc:
                raise PantherError(f"cannot write {shown}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                # Readable like any record panther writes (created 0600).
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.rename(tmp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
            os.fsync(directory)
        except BaseException as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=directory)
            if isinstance(exc, OSError):
                raise PantherError(f"cannot write {shown}: {exc.strerror}") from None
            raise


def write_json(
    path: Path,
    data: object,
    *,
    beneath: Path | None,
    known_as: str | None = None,
    sort_keys: bool = False,
) -> None:
    """Replace path with data as indented JSON, as `replace_file` does."""
    text = json.dumps(data, indent=2, sort_keys=sort_keys) + "\n"
    replace_file(path, text.encode("utf-8"), beneath=beneath, known_as=known_as)


def remove_file(path: Path, *, beneath: Path, known_as: str | None = None) -> None:
    """Remove panther's file at path (a symlink there goes itself); absent is fine."""
    shown = known_as or str(path)
    try:
        directory = _directory(path.parent, beneath, create=False, shown=shown)
    except OSError as exc:
        raise PantherError(f"cannot remove {shown}: {exc.strerror}") from None
    if directory is None:
        return
    try:
        os.unlink(path.name, dir_fd=directory)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise PantherError(f"cannot remove {shown}: {exc.strerror}") from None
    finally:
        os.close(directory)
