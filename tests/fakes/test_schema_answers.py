"""The schema walker behind the fake model's `shortest` and `longest` answers."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.schema_answers import UnboundedSchema, UnsupportedSchema, extreme_string, extreme_value

BOUNDED_PATTERNS = [
    r"^\S([\s\S]{0,28}\S)?$",
    r"^\S$",
    r"^abc$",
    r"^(ab|cde)?x{1,3}$",
    r"^\d{2,4}-[A-Z]{3}$",
    r"^[^a-z ]{3}\w{0,2}$",
    r"^(red|green|blue)( (and|or) (cat|dog)){0,2}$",
    r"^.{2,5}$",
    r"^[a-f0-9]{8}(-[a-f0-9]{4}){0,3}$",
]


@pytest.mark.parametrize("pattern", BOUNDED_PATTERNS)
def test_both_extremes_match_the_pattern(pattern: str) -> None:
    for mode in ("shortest", "longest"):
        assert re.fullmatch(pattern, extreme_string(pattern, mode)), mode


@settings(max_examples=60)
@given(data=st.data(), pattern=st.sampled_from(BOUNDED_PATTERNS))
def test_no_match_is_shorter_than_the_shortest_or_longer_than_the_longest(
    data: st.DataObject, pattern: str
) -> None:
    text = data.draw(st.from_regex(pattern, fullmatch=True))
    assert len(extreme_string(pattern, "shortest")) <= len(text) <= len(extreme_string(pattern, "longest"))


def test_the_extremes_of_a_length_pattern() -> None:
    assert extreme_string(r"^\S([\s\S]{0,28}\S)?$", "shortest") == "x"
    longest = extreme_string(r"^\S([\s\S]{0,28}\S)?$", "longest")
    assert len(longest) == 30
    assert longest == longest.strip()
    assert extreme_string(r"^(ab|cde)$", "shortest") == "ab"
    assert extreme_string(r"^(ab|cde)$", "longest") == "cde"


def test_longest_needs_a_bounded_anchored_pattern() -> None:
    with pytest.raises(UnboundedSchema, match="unbounded repeat"):
        extreme_string(r"^a+$", "longest")
    with pytest.raises(UnboundedSchema, match="not anchored"):
        extreme_string(r"^a{1,3}", "longest")
    # A pattern is searched, not matched: the shortest string holding a match is fine.
    assert extreme_string(r"a+", "shortest") == "a"


def test_regex_features_it_cannot_honour_are_refused() -> None:
    with pytest.raises(UnsupportedSchema):
        extreme_string(r"^(a)\1$", "shortest")
    with pytest.raises(UnsupportedSchema):
        extreme_string(r"^(?=a)a$", "shortest")
    with pytest.raises(UnsupportedSchema):
        extreme_string(r"^[", "shortest")


def closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def test_arrays_enums_and_nulls_at_their_extremes() -> None:
    schema = closed(
        {
            "items": {
                "type": "array",
                "minItems": 2,
                "maxItems": 4,
                "items": {"type": "integer", "minimum": -5, "maximum": 100},
            },
            "label": {"type": "string", "enum": ["Go", "Learn More", "Shop"]},
            "nothing": {"type": "null"},
            "maybe": {"anyOf": [{"type": "string", "enum": ["Apply"]}, {"type": "null"}]},
            "either": {"type": ["string", "null"], "maxLength": 3},
            "fixed": {"const": "v1"},
            "flag": {"type": "boolean"},
        }
    )
    assert extreme_value(schema, "shortest") == {
        "items": [0, 0],
        "label": "Go",
        "nothing": None,
        "maybe": None,
        "either": "",
        "fixed": "v1",
        "flag": True,
    }
    assert extreme_value(schema, "longest") == {
        "items": [100, 100, 100, 100],
        "label": "Learn More",
        "nothing": None,
        "maybe": "Apply",
        "either": "xxx",
        "fixed": "v1",
        "flag": False,
    }


def test_optional_properties_only_in_the_longest_answer() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 2}, "b": {"type": "null"}},
        "required": ["b"],
    }
    assert extreme_value(schema, "shortest") == {"b": None}
    assert extreme_value(schema, "longest") == {"a": "xx", "b": None}


def test_refs_into_defs_are_followed() -> None:
    schema = {
        "$defs": {"Word": {"type": "string", "pattern": "^[a-z]{1,4}$"}},
        **closed(
            {"words": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"$ref": "#/$defs/Word"}}}
        ),
    }
    assert extreme_value(schema, "shortest") == {"words": ["x"]}
    assert extreme_value(schema, "longest") == {"words": ["xxxx", "xxxx"]}


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "array", "items": {"type": "string"}},
        {"type": "string"},
        {"type": "string", "pattern": "^a*$"},
        {"type": "integer", "minimum": 0},
    ],
)
def test_a_schema_without_a_longest_value_says_so(schema: dict[str, Any]) -> None:
    extreme_value(schema, "shortest")
    with pytest.raises(UnboundedSchema):
        extreme_value(schema, "longest")


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "date-time"},
        {"oneOf": [{"type": "null"}]},
        {"type": "array", "maxItems": 2, "uniqueItems": True, "items": {"type": "integer"}},
        {"type": "string", "pattern": "^a{5}$", "maxLength": 3},
        {"$ref": "#/$defs/Missing"},
        {"type": "tuple"},
    ],
)
def test_keywords_it_cannot_honour_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(UnsupportedSchema):
        extreme_value(schema, "shortest")
