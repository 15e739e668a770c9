"""Text for the AsyncAPI document: source-wrapped paragraphs as clean YAML strings."""

from __future__ import annotations


def prose(text: str) -> str:
    """Join the lines of each paragraph; keep blank lines between paragraphs."""
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))
