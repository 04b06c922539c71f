"""A small JSON Schema validator for the subset of draft 2020-12 that the manifest schema uses.

The schema file is the single definition of a valid manifest (its layout name rules are
rendered from data/layout.json by scripts/render-layout). This validator reads it with the
standard library alone (the initrd's boot step never reads a manifest: its settings come as
arguments). The test suite checks that it agrees with the reference `jsonschema` implementation.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
from functools import cache
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}

# Keywords that carry no constraint.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "title", "description", "default", "examples", "$comment"}
)


class SchemaViolation(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _is_type(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def child_path(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]*", key):
        return f"{path}.{key}"
    return f"{path}[{show(key)}]"


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    """pattern with JSON Schema's (ECMA-262) meaning of `$`: the very end of the string.

    Python's `$` also matches before a final newline, so "host\\n" would pass `^...$`; each
    unescaped `$` outside a character class becomes `\\Z`.
    """
    out: list[str] = []
    escaped = in_class = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        elif char == "$" and not in_class:
            out.append(r"\Z")
            continue
        out.append(char)
    return re.compile("".join(out))


class _Short(reprlib.Repr):
    """Values in messages: one short line, whatever the document holds."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 2
        self.maxstring = 60
        self.maxother = 60

    def repr_int(self, x: int, level: int) -> str:
        # str() of a huge integer is slow, and refused past 4300 digits.
        return repr(x) if x.bit_length() <= 64 else f"an integer of {x.bit_length()} bits"


show = _Short().repr


def _describe(value: Any) -> str:
    for name in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, name):
            return name
    return type(value).__name__


class Validator:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.root = schema

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"unsupported $ref {ref!r}")
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part]
        assert isinstance(node, dict)
        return node

    def errors(
        self, value: Any, schema: dict[str, Any] | None = None, path: str = "$"
    ) -> Iterator[SchemaViolation]:
        """Yield every violation, outermost first."""
        if schema is None:
            schema = self.root
        if "$ref" in schema:
            yield from self.errors(value, self._resolve(schema["$ref"]), path)
        for key, rule in schema.items():
            if key in _ANNOTATIONS or key == "$ref":
                continue
            check = getattr(self, "_kw_" + key, None)
            if check is None:
                raise ValueError(f"unsupported schema keyword {key!r} at {path}")
            yield from check(value, rule, schema, path)

    def first_error(self, value: Any) -> SchemaViolation | None:
        return next(self.errors(value), None)

    # Keywords. Each returns the violations of one keyword.
    def _kw_type(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        names = [rule] if isinstance(rule, str) else list(rule)
        if not any(_is_type(value, n) for n in names):
            yield SchemaViolation(path, f"expected {' or '.join(names)}, got {_describe(value)}")

    def _kw_const(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if value != rule or type(value) is not type(rule):
            yield SchemaViolation(path, f"must be {rule!r}, got {show(value)}")

    def _kw_enum(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if value not in rule:
            choices = ", ".join(repr(c) for c in rule)
            yield SchemaViolation(path, f"must be one of {choices}, got {show(value)}")

    def _kw_pattern(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, str) and not _compiled(rule).search(value):
            yield SchemaViolation(path, f"{show(value)} does not match {rule}")

    def _kw_minLength(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, str) and len(value) < rule:
            yield SchemaViolation(path, f"must have at least {rule} character(s)")

    def _kw_maxLength(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, str) and len(value) > rule:
            yield SchemaViolation(path, f"must have at most {rule} characters")

    def _kw_minimum(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if _is_type(value, "number") and value < rule:
            yield SchemaViolation(path, f"must be at least {rule}, got {show(value)}")

    def _kw_maximum(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if _is_type(value, "number") and value > rule:
            yield SchemaViolation(path, f"must be at most {rule}, got {show(value)}")

    def _kw_minItems(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, list) and len(value) < rule:
            yield SchemaViolation(path, f"must have at least {rule} item(s)")

    def _kw_not(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if next(self.errors(value, rule, path), None) is None:
            what = f"must not match {rule['pattern']}" if "pattern" in rule else "is not allowed"
            yield SchemaViolation(path, f"{show(value)} {what}")

    def _kw_required(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, dict):
            for key in rule:
                if key not in value:
                    yield SchemaViolation(path, f"missing required property {key!r}")

    def _kw_properties(
        self, value: Any, rule: Any, _s: Any, path: str
    ) -> Iterator[SchemaViolation]:
        if isinstance(value, dict):
            for key, sub in rule.items():
                if key in value:
                    yield from self.errors(value[key], sub, child_path(path, key))

    def _kw_additionalProperties(
        self, value: Any, rule: Any, schema: dict[str, Any], path: str
    ) -> Iterator[SchemaViolation]:
        if not isinstance(value, dict):
            return
        known = schema.get("properties", {})
        for key in value:
            if key in known:
                continue
            if rule is False:
                yield SchemaViolation(child_path(path, key), "unknown property")
            elif isinstance(rule, dict):
                yield from self.errors(value[key], rule, child_path(path, key))

    def _kw_items(self, value: Any, rule: Any, _s: Any, path: str) -> Iterator[SchemaViolation]:
        if isinstance(value, list):
            for index, item in enumerate(value):
                yield from self.errors(item, rule, child_path(path, index))
