"""The JSON schema the model answers in, built per job for OpenAI's strict Structured Outputs.

Strict mode decodes only tokens that keep the answer valid against the schema, so the
schema carries every rule it can express:

- exactly `job.variants` variants (`minItems` = `maxItems`);
- `call_to_action`: the platform's button labels as an `enum`, or `null` where the
  platform has no button;
- `headline` and `body`: a `pattern` that allows 1 to N characters with no leading or
  trailing whitespace. OpenAI's supported schema subset lists `pattern` (and `format`)
  for strings but not `minLength`/`maxLength`, so the limit is a bounded repeat.

What a schema cannot say (double-width CJK counting, the prompt's content rules) is still
checked after the answer by `copy_violations`, with one repair round.
"""

from __future__ import annotations

import json
import math
from typing import Any

from processors.ads.jobs import AdJob
from processors.ads.platforms import PlatformLimits, limits_for

SCHEMA_NAME = "AdCopySet"
# Output tokens per character of the longest answer, as an upper bound on average: English
# runs at about 4 characters a token, CJK at about 1. Copy dense with emoji or rare
# characters (2 or more tokens each) could still hit the cap: `LengthLimit`. OpenAI counts
# the cap against the tokens-per-minute limit when it admits a request, so it is kept tight.
OUTPUT_TOKENS_PER_CHAR = 1.0
OUTPUT_TOKENS_MARGIN = 64


def text_pattern(max_chars: int) -> str:
    """A regex for 1 to `max_chars` characters that neither start nor end with whitespace."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    if max_chars == 1:
        return r"^\S$"
    # First character non-space; then optionally up to max_chars - 2 of anything and a last non-space.
    return rf"^\S([\s\S]{{0,{max_chars - 2}}}\S)?$"


def answer_schema(limits: PlatformLimits, variants: int) -> dict[str, Any]:
    """The JSON schema of an answer: `variants` variants within `limits`."""
    if variants < 1:
        raise ValueError("variants must be at least 1")
    call_to_action: dict[str, Any]
    if limits.call_to_actions:
        call_to_action = {
            "type": "string",
            "enum": list(limits.call_to_actions),
            "description": "The call-to-action button label.",
        }
    else:
        call_to_action = {"type": "null", "description": "Always null: the platform has no button."}
    variant = {
        "type": "object",
        "properties": {
            "headline": {
                "type": "string",
                "description": f"The {limits.headline_label}, at most {limits.headline_chars} characters.",
                "pattern": text_pattern(limits.headline_chars),
            },
            "body": {
                "type": "string",
                "description": f"The {limits.body_label}, at most {limits.body_chars} characters.",
                "pattern": text_pattern(limits.body_chars),
            },
            "call_to_action": call_to_action,
        },
        "required": ["headline", "body", "call_to_action"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "variants": {
                "type": "array",
                "description": f"Exactly {variants} ad copy variants.",
                "items": variant,
                "minItems": variants,
                "maxItems": variants,
            }
        },
        "required": ["variants"],
        "additionalProperties": False,
    }


def response_format(job: AdJob) -> dict[str, Any]:
    """The `json_schema` response format for `job`: name, strict flag and schema."""
    return {
        "name": SCHEMA_NAME,
        "strict": True,
        "schema": answer_schema(limits_for(job.platform), job.variants),
    }


def longest_answer_chars(job: AdJob) -> int:
    """Characters of the longest answer the job's schema allows, as compact JSON."""
    limits = limits_for(job.platform)
    longest_cta = max(limits.call_to_actions, key=len) if limits.call_to_actions else None
    variant = {
        "headline": "x" * limits.headline_chars,
        "body": "x" * limits.body_chars,
        "call_to_action": longest_cta,
    }
    return len(json.dumps({"variants": [variant] * job.variants}))


def max_output_tokens(job: AdJob) -> int:
    """The output token cap for one call: the longest allowed answer, with a margin."""
    return math.ceil(longest_answer_chars(job) * OUTPUT_TOKENS_PER_CHAR) + OUTPUT_TOKENS_MARGIN
