"""The manifest's JSON Schema, checked by `jsonschema` (draft 2020-12), with what D43 adds.

The schema file is the single definition of a valid manifest (its layout name rules are
rendered from data/layout.json by scripts/render-layout); `jsonschema` walks it. Two
keywords are adjusted: a `pattern` keeps JSON Schema's (ECMA-262) meaning of `$`, the very end
of the string (Python's `$` also matches before a final newline), and an `integer` is an int,
never a float such as 3.0. A violation becomes one line: the JSON path and a short reason.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError


class SchemaViolation(Exception):
    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


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


def matches(pattern: str, text: str) -> bool:
    """Whether text matches a schema pattern, as JSON Schema reads it."""
    return _compiled(pattern).search(text) is not None


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


def _pattern(
    validator: Any, pattern: str, instance: Any, _schema: dict[str, Any]
) -> Iterator[ValidationError]:
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string") and not matches(pattern, instance):
        yield ValidationError(f"{show(instance)} does not match {pattern}")


def _is_integer(_checker: Any, value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@cache
def _validator_class() -> Any:
    """Draft 2020-12 with our `pattern` and `integer`. Imported at the first manifest checked:
    `panther --version` and `--help` do without jsonschema's start-up (about 0.1 s)."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    return jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        base,
        validators={"pattern": _pattern},
        type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer),
    )


def _describe(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    if value is None:
        return "null"
    return names.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)


def _violation(error: ValidationError, base: str = "$") -> SchemaViolation:
    """One line for the error jsonschema found: where (a JSON path below base) and why."""
    path = base
    for key in error.absolute_path:
        path = child_path(path, key)
    rule: Any = error.validator_value
    value: Any = error.instance
    match error.validator:
        case "type":
            names = [rule] if isinstance(rule, str) else list(rule)
            reason = f"expected {' or '.join(names)}, got {_describe(value)}"
        case "const":
            reason = f"must be {rule!r}, got {show(value)}"
        case "enum":
            reason = f"must be one of {', '.join(repr(c) for c in rule)}, got {show(value)}"
        case "minimum" | "maximum":
            word = "least" if error.validator == "minimum" else "most"
            reason = f"must be at {word} {rule}, got {show(value)}"
        case "minLength":
            reason = f"must have at least {rule} character(s)"
        case "maxLength":
            reason = f"must have at most {rule} characters"
        case "minItems":
            reason = f"must have at least {rule} item(s)"
        case "not":
            what = f"must not match {rule['pattern']}" if "pattern" in rule else "is not allowed"
            reason = f"{show(value)} {what}"
        case "required":
            missing = next(key for key in rule if key not in value)
            reason = f"missing required property {missing!r}"
        case "additionalProperties":
            node: Any = error.schema
            known = node.get("properties", {})
            path = child_path(path, next(key for key in value if key not in known))
            reason = "unknown property"
        case _:  # "pattern" (ours), and any keyword the schema may come to use
            reason = error.message
    return SchemaViolation(path, reason)


def first_violation(
    doc: Any, schema: dict[str, Any], *, definition: str | None = None, base: str = "$"
) -> SchemaViolation | None:
    """The first violation, in the schema's order (its keywords as written, outermost first).

    definition: check doc against that one of the schema's `$defs` only; base: the JSON path
    doc has where it came from (what the violation's path starts with)."""
    if definition is not None:
        schema = {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    error = next(_validator_class()(schema).iter_errors(doc), None)
    return None if error is None else _violation(error, base)
