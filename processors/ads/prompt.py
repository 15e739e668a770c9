"""The model's instructions, rendered from ``processors/templates/ads/prompt.*.j2``.

Everything the user wrote travels as one JSON document between ``<ad_request_data>``
tags, and the system prompt says that content is data, never instructions. The JSON
escapes ``<``, ``>`` and ``&``, so user text cannot close the tag early.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from processors.ads.jobs import AdJob
from processors.ads.platforms import limits_for
from processors.templates import TEMPLATES_DIR

DATA_TAG = "ad_request_data"
DEFAULT_TEMPLATES_DIR = TEMPLATES_DIR

# Escaped as JSON unicode escapes: the model reads the same text, but no tag can form.
_NEUTRALISE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def untrusted_json(data: Any) -> str:
    """JSON of user data that cannot contain a tag delimiter."""
    return json.dumps(data, ensure_ascii=False, indent=2).translate(_NEUTRALISE)


@dataclass(frozen=True)
class RenderedPrompt:
    system: str
    user: str


class AdPrompt:
    """Renders the system and user messages for a job, and the repair message."""

    def __init__(self, templates_dir: Path = DEFAULT_TEMPLATES_DIR) -> None:
        # Text for a model, not HTML: escaping would show `&lt;` to the model.
        self._env = Environment(
            loader=FileSystemLoader(templates_dir / "ads"),
            autoescape=False,  # noqa: S701
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._env.filters["untrusted_json"] = untrusted_json

    def render(self, job: AdJob) -> RenderedPrompt:
        context = {
            "job": job,
            "limits": limits_for(job.platform),
            "data_tag": DATA_TAG,
            "data": {
                "product": job.product.model_dump(mode="json"),
                "audience": job.audience,
                "tone": job.tone,
                "language": job.language,
            },
        }
        return RenderedPrompt(
            system=self._env.get_template("prompt.system.j2").render(context),
            user=self._env.get_template("prompt.user.j2").render(context),
        )

    def repair(self, job: AdJob, violations: Sequence[str]) -> str:
        """The follow-up message that asks the model to fix its previous answer."""
        context = {"job": job, "limits": limits_for(job.platform), "violations": list(violations)}
        return self._env.get_template("prompt.repair.j2").render(context)
