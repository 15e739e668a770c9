"""The shortest or the longest value a JSON schema allows, built from the schema alone.

A fake model that answers at the schema's extremes shows whether the schema itself
carries the rules: it knows nothing of platforms, prompts or limits, only the schema it
received. Supported: `type` (one or a list), `const`, `enum`, `anyOf`, `$ref` into
`$defs`, objects (`properties`, `required`), arrays (`items`, `minItems`, `maxItems`),
strings (`minLength`, `maxLength`, and `pattern` read from its regex parse tree),
integers and numbers (`minimum`, `maximum`), booleans and null.

"Shortest" and "longest" compare JSON text lengths. A schema without a longest value
(an array without `maxItems`, an unanchored pattern, an unbounded repeat) raises
`UnboundedSchema` in longest mode; a keyword this module cannot honour raises
`UnsupportedSchema` rather than answering something the schema may not allow.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable, Iterable, Mapping
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any, Literal

Mode = Literal["shortest", "longest"]

# Characters tried, in order, for a character class: printable and non-space first.
_CANDIDATES = (
    "x"
    + string.ascii_lowercase
    + string.ascii_uppercase
    + string.digits
    + string.punctuation
    + " \t\n"
    + "".join(chr(c) for c in range(0xA0, 0x250))
)
_IGNORED_KEYWORDS = {"description", "title", "examples", "default", "$comment", "additionalProperties"}


class UnsupportedSchema(ValueError):
    """The schema uses a keyword (or a regex feature) this module cannot honour."""


class UnboundedSchema(ValueError):
    """The schema allows values of any length: there is no longest one."""


def extreme_value(schema: Mapping[str, Any], mode: Mode) -> Any:
    """The shortest or longest JSON value that `schema` allows."""
    if mode not in ("shortest", "longest"):
        raise ValueError(f"mode must be 'shortest' or 'longest', not {mode!r}")
    return _Walker(schema, mode).value(schema, "#")


def extreme_string(pattern: str, mode: Mode) -> str:
    """The shortest or longest string that `pattern` (searched, as JSON Schema does) matches."""
    try:
        parsed = _parser.parse(pattern)
    except re.error as error:
        raise UnsupportedSchema(f"pattern {pattern!r} is not a regex: {error}") from error
    items = list(parsed)
    if mode == "longest" and not _anchored(items):
        raise UnboundedSchema(f"pattern {pattern!r} is not anchored at both ends: no longest match")
    text = _Regex(mode, pattern).sequence(items)
    if re.search(pattern, text) is None:  # a regex feature this walker misread
        raise UnsupportedSchema(f"could not build a match for pattern {pattern!r}")
    return text


class _Walker:
    def __init__(self, root: Mapping[str, Any], mode: Mode) -> None:
        self._root = root
        self._mode = mode
        self._depth = 0

    def value(self, schema: Mapping[str, Any], where: str) -> Any:
        self._depth += 1
        try:
            if self._depth > 64:
                raise UnboundedSchema(f"{where}: the schema recurses without end")
            return self._value(schema, where)
        finally:
            self._depth -= 1

    def _value(self, schema: Mapping[str, Any], where: str) -> Any:
        if not isinstance(schema, Mapping):
            raise UnsupportedSchema(f"{where}: a schema must be an object, not {schema!r}")
        if "$ref" in schema:
            return self.value(self._resolve(str(schema["$ref"]), where), schema["$ref"])
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            members = [m for m in schema["enum"] if self._type_allows(schema, m)]
            if not members:
                raise UnsupportedSchema(f"{where}: no enum member fits the type")
            return self._pick(members)
        if "anyOf" in schema:
            return self._pick([self.value(s, f"{where}/anyOf/{i}") for i, s in enumerate(schema["anyOf"])])
        for keyword in ("allOf", "oneOf", "not", "if", "prefixItems", "patternProperties"):
            if keyword in schema:
                raise UnsupportedSchema(f"{where}: {keyword} is not supported")
        kind = schema.get("type")
        if isinstance(kind, list):
            return self._pick([self.value({**schema, "type": t}, f"{where}({t})") for t in kind])
        builders: dict[Any, Callable[[Mapping[str, Any], str], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._number,
            "number": self._number,
            "boolean": lambda _schema, _where: self._pick([True, False]),
            "null": lambda _schema, _where: None,
        }
        if kind not in builders:
            raise UnsupportedSchema(f"{where}: type {kind!r} is not supported")
        return builders[kind](schema, where)

    def _object(self, schema: Mapping[str, Any], where: str) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        unknown = required - set(properties)
        if unknown:
            raise UnsupportedSchema(f"{where}: required properties without a schema: {sorted(unknown)}")
        # Optional properties only make an answer longer.
        return {
            name: self.value(sub, f"{where}/{name}")
            for name, sub in properties.items()
            if name in required or self._mode == "longest"
        }

    def _array(self, schema: Mapping[str, Any], where: str) -> list[Any]:
        if schema.get("uniqueItems"):
            raise UnsupportedSchema(f"{where}: uniqueItems is not supported")
        if self._mode == "shortest":
            count = int(schema.get("minItems", 0))
        elif "maxItems" in schema:
            count = int(schema["maxItems"])
        else:
            raise UnboundedSchema(f"{where}: an array without maxItems has no longest value")
        if count == 0:
            return []
        items = schema.get("items")
        if not isinstance(items, Mapping):
            raise UnsupportedSchema(f"{where}: items must be one schema")
        item = self.value(items, f"{where}/items")
        return [item] * count

    def _string(self, schema: Mapping[str, Any], where: str) -> str:
        if "format" in schema:
            raise UnsupportedSchema(f"{where}: format is not supported")
        min_length = int(schema.get("minLength", 0))
        max_length = schema.get("maxLength")
        if "pattern" in schema:
            text = extreme_string(str(schema["pattern"]), self._mode)
            if len(text) < min_length or (max_length is not None and len(text) > int(max_length)):
                raise UnsupportedSchema(f"{where}: pattern and minLength/maxLength together")
            return text
        if self._mode == "shortest":
            return "x" * min_length
        if max_length is None:
            raise UnboundedSchema(f"{where}: a string without maxLength or pattern has no longest value")
        return "x" * int(max_length)

    def _number(self, schema: Mapping[str, Any], where: str) -> int | float:
        for keyword in ("exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
            if keyword in schema:
                raise UnsupportedSchema(f"{where}: {keyword} is not supported")
        low, high = schema.get("minimum"), schema.get("maximum")
        if self._mode == "shortest":
            if (low is None or low <= 0) and (high is None or high >= 0):
                return 0
            return self._pick([v for v in (low, high) if v is not None])
        if low is None or high is None:
            raise UnboundedSchema(f"{where}: a number without minimum and maximum has no longest value")
        return self._pick([low, high])

    def _pick(self, values: Iterable[Any]) -> Any:
        ordered = list(values)
        lengths = [len(json.dumps(v, ensure_ascii=False)) for v in ordered]
        target = min(lengths) if self._mode == "shortest" else max(lengths)
        return ordered[lengths.index(target)]

    def _resolve(self, ref: str, where: str) -> Mapping[str, Any]:
        if not ref.startswith("#"):
            raise UnsupportedSchema(f"{where}: only local $refs are supported, not {ref!r}")
        node: Any = self._root
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise UnsupportedSchema(f"{where}: $ref {ref!r} points nowhere")
            node = node[part]
        if not isinstance(node, Mapping):
            raise UnsupportedSchema(f"{where}: $ref {ref!r} is not a schema")
        return node

    @staticmethod
    def _type_allows(schema: Mapping[str, Any], member: Any) -> bool:
        kind = schema.get("type")
        if kind is None:
            return True
        kinds = kind if isinstance(kind, list) else [kind]
        checks: dict[str, Callable[[Any], bool]] = {
            "string": lambda v: isinstance(v, str),
            "null": lambda v: v is None,
            "boolean": lambda v: isinstance(v, bool),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
        }
        return any(checks.get(k, lambda _v: False)(member) for k in kinds)


def _anchored(items: list[tuple[Any, Any]]) -> bool:
    starts = {sre.AT_BEGINNING, sre.AT_BEGINNING_STRING}
    ends = {sre.AT_END, sre.AT_END_STRING}
    if not items:
        return False
    first, last = items[0], items[-1]
    return first[0] is sre.AT and first[1] in starts and last[0] is sre.AT and last[1] in ends


class _Regex:
    """The shortest or longest string of a regex parse tree (`re._parser`)."""

    def __init__(self, mode: Mode, pattern: str) -> None:
        self._mode = mode
        self._pattern = pattern

    def sequence(self, items: Iterable[tuple[Any, Any]]) -> str:
        return "".join(self.node(op, av) for op, av in items)

    def node(self, op: Any, av: Any) -> str:
        if op is sre.LITERAL:
            return chr(av)
        if op is sre.NOT_LITERAL:
            return self._char(lambda ch: ord(ch) != av)
        if op is sre.ANY:
            return self._char(lambda ch: ch != "\n")
        if op is sre.IN:
            return self._char(lambda ch: _in_class(av, ch))
        if op is sre.AT:
            return ""
        if op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            low, high, sub = av
            if self._mode == "shortest":
                count = low
            elif high is sre.MAXREPEAT:
                raise UnboundedSchema(f"pattern {self._pattern!r} has an unbounded repeat: no longest match")
            else:
                count = high
            return self.sequence(sub) * count
        if op is sre.SUBPATTERN:
            return self.sequence(av[-1])
        if op is sre.ATOMIC_GROUP:
            return self.sequence(av)
        if op is sre.BRANCH:
            options = [self.sequence(branch) for branch in av[1]]
            return (min if self._mode == "shortest" else max)(options, key=len)
        raise UnsupportedSchema(f"pattern {self._pattern!r}: {op} is not supported")

    def _char(self, allowed: Callable[[str], bool]) -> str:
        for ch in _CANDIDATES:
            if allowed(ch):
                return ch
        raise UnsupportedSchema(f"pattern {self._pattern!r}: no character found for a class")


def _in_class(items: list[tuple[Any, Any]], ch: str) -> bool:
    negate = bool(items) and items[0][0] is sre.NEGATE
    found = any(_class_item(op, av, ch) for op, av in items if op is not sre.NEGATE)
    return found != negate


def _class_item(op: Any, av: Any, ch: str) -> bool:
    if op is sre.LITERAL:
        return ord(ch) == av
    if op is sre.RANGE:
        low, high = av
        return bool(low <= ord(ch) <= high)
    if op is sre.CATEGORY:
        categories: dict[Any, Callable[[str], bool]] = {
            sre.CATEGORY_DIGIT: str.isdecimal,
            sre.CATEGORY_NOT_DIGIT: lambda c: not c.isdecimal(),
            sre.CATEGORY_SPACE: str.isspace,
            sre.CATEGORY_NOT_SPACE: lambda c: not c.isspace(),
            sre.CATEGORY_WORD: lambda c: c.isalnum() or c == "_",
            sre.CATEGORY_NOT_WORD: lambda c: not (c.isalnum() or c == "_"),
        }
        if av not in categories:
            raise UnsupportedSchema(f"character category {av} is not supported")
        return categories[av](ch)
    raise UnsupportedSchema(f"{op} inside a character class is not supported")
