"""Rendering a `.properties` template: `@NAME@` tokens replaced, none left over, none unused."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

TOKEN = re.compile(r"@([A-Z][A-Z0-9_]*)@")


class TemplateError(ValueError):
    pass


def render_properties(template: str, values: Mapping[str, str]) -> str:
    """Replace every `@NAME@` with `values[NAME]`.

    Comment lines (`#` or `!`) may mention tokens that have no value. A token without a
    value on a setting line, or a value that no setting line uses, is an error: both mean
    the template and its caller disagree.
    """
    used: set[str] = set()
    missing: set[str] = set()
    for line in template.splitlines():
        if line.lstrip().startswith(("#", "!")):
            continue
        for name in TOKEN.findall(line):
            (used if name in values else missing).add(name)
    if missing:
        raise TemplateError(f"no value for {', '.join(sorted(missing))}")
    unused = set(values) - used
    if unused:
        raise TemplateError(f"the template has no setting that uses {', '.join(sorted(unused))}")
    rendered = TOKEN.sub(lambda m: values.get(m.group(1), m.group(0)), template)
    return rendered.rstrip("\n") + "\n"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
