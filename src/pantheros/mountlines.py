"""The kernel's mount table as fields, read with os alone (mounttable builds its entries from
them). Loading nothing more is the point: the audit's walk reads what it prunes from here before
the rest of panther has loaded (pantheros.audit.walkstart).
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not loaded for this
if TYPE_CHECKING:
    from collections.abc import Iterator

MOUNTINFO = "/proc/self/mountinfo"

# One mount: its id, its parent's, major:minor, its root inside the file system, its mount point,
# its options, the file system type, the source, the super block's options.
Fields = tuple[int, int, str, str, str, tuple[str, ...], str, str, tuple[str, ...]]


def read(path: str = MOUNTINFO) -> Iterator[Fields]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    return parse(text)


def parse(text: str) -> Iterator[Fields]:
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split(" ")
        if len(fields) < 6:
            continue
        fstype, source, super_opts = [*right.split(" "), "", "", ""][:3]
        yield (
            int(fields[0]),
            int(fields[1]),
            fields[2],
            unescape(fields[3]),
            unescape(fields[4]),
            tuple(fields[5].split(",")),
            fstype,
            unescape(source),
            tuple(super_opts.split(",")),
        )


def unescape(field: str) -> str:
    """The kernel writes space, tab, newline and backslash as \\ and three octal digits."""
    if "\\" not in field:
        return field
    head, *rest = field.split("\\")
    parts = [head]
    for part in rest:
        code = part[:3]
        if len(code) == 3 and all(c in "01234567" for c in code):
            parts.append(chr(int(code, 8)) + part[3:])
        else:
            parts.append("\\" + part)
    return "".join(parts)
