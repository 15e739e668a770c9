"""The README's configuration table names every variable the settings read."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings

from streams.settings import Settings, _env_name

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text("utf-8")
    missing = []
    for name in Settings.GROUPS:
        group: type[BaseSettings] = Settings.model_fields[name].annotation  # type: ignore[assignment]
        for field in group.model_fields:
            variable = _env_name(group, field)
            if f"`{variable}`" not in text and not _in_a_family(variable, text):
                missing.append(variable)
    assert missing == []


def _in_a_family(variable: str, text: str) -> bool:
    """A row may name a family at once: `NOTIFIER_RETRY_MAX_ATTEMPTS`, `_BASE_MS`, ..."""
    parts = variable.split("_")
    return any(
        f"`{'_'.join(parts[:i])}_" in text and f"`_{'_'.join(parts[i:])}`" in text
        for i in range(1, len(parts))
    )
