"""`asyncapi.yaml` is generated from the code; it must not drift from it."""

from __future__ import annotations

import functools

import yaml

from streams.app import create_app
from streams.services import Services
from streams.settings import REPO_ROOT, KafkaSettings, Settings
from tests.streams.apps import RecordingAds, RecordingEmail


@functools.cache
def generated() -> str:
    """What `make asyncapi` writes, for an app built here with the default topic names."""
    app = create_app(
        Settings(kafka=KafkaSettings(topic_prefix="")), Services(email=RecordingEmail(), ads=RecordingAds())
    )
    assert app.schema is not None
    yaml_text: str = app.schema.to_specification().to_yaml()
    return yaml_text


def test_committed_asyncapi_matches_the_code() -> None:
    committed = (REPO_ROOT / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed == generated(), "asyncapi.yaml is stale: run `make asyncapi` and commit it"


def test_every_message_has_a_description_and_a_complete_example() -> None:
    document = yaml.safe_load(generated())
    assert document["info"]["title"] == "Kafka job worker"
    assert set(document["servers"]) == {"local", "production"}
    schemas = document["components"]["schemas"]
    for name in ("SendOtpJob", "WelcomeEmailJob", "VerificationLinkJob", "AdReadyJob", "AdJob", "AdResult"):
        schema = schemas[name]
        assert schema.get("description"), name
        assert schema.get("examples"), name
        for field, spec in schema["properties"].items():
            assert spec.get("description") or "$ref" in spec or "allOf" in spec, f"{name}.{field}"
