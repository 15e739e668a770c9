"""Every email type renders from its templates: subject, HTML and a readable text part."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter

from processors.email.jobs import EmailJob, EmailJobModel
from processors.email.render import EmailRenderer
from processors.templates import TEMPLATES_DIR

ADAPTER: TypeAdapter[EmailJobModel] = TypeAdapter(EmailJob)

SAMPLES = {
    "SEND_OTP": {"type": "SEND_OTP", "job_id": "r-1", "to": "ada@example.com", "code": "482913"},
    "WELCOME_EMAIL": {"type": "WELCOME_EMAIL", "job_id": "r-2", "to": "ada@example.com", "name": "Ada"},
    "VERIFICATION_LINK": {
        "type": "VERIFICATION_LINK",
        "job_id": "r-3",
        "to": "ada@example.com",
        "name": "Ada",
        "verification_url": "https://app.example.com/verify?token=tok123&u=7",
        "expires_in_hours": 1,
    },
    "AD_READY": {
        "type": "AD_READY",
        "job_id": "r-4",
        "to": "ada@example.com",
        "product_name": "Lumen lamp",
        "platform": "GOOGLE_SEARCH",
        "headlines": ["Glare-free light", "Read all night"],
        "ad_job_id": "ad-42",
    },
}
SUBJECTS = {
    "SEND_OTP": "Your Acme sign-in code",
    "WELCOME_EMAIL": "Welcome to Acme, Ada",
    "VERIFICATION_LINK": "Verify your email address for Acme",
    "AD_READY": "Your ad copy for Lumen lamp is ready",
}


@pytest.fixture(scope="module")
def renderer() -> EmailRenderer:
    return EmailRenderer(TEMPLATES_DIR, product_name="Acme")


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_type_renders_subject_html_and_text(renderer: EmailRenderer, kind: str) -> None:
    email = renderer.render(ADAPTER.validate_python(SAMPLES[kind]))
    assert email.subject == SUBJECTS[kind]
    assert "\n" not in email.subject
    assert email.html.lstrip().startswith("<!doctype html>")
    assert "<" not in email.text, "the text part must read well without HTML"
    assert "Acme" in email.text


def test_otp_code_and_expiry_are_in_both_parts_but_not_the_subject(renderer: EmailRenderer) -> None:
    email = renderer.render(ADAPTER.validate_python(SAMPLES["SEND_OTP"]))
    assert "482913" in email.html
    assert "482913" in email.text
    assert "482913" not in email.subject
    assert "expires in 10 minutes" in email.text


def test_verification_link_is_in_both_parts_and_the_url_is_escaped_in_html(renderer: EmailRenderer) -> None:
    email = renderer.render(ADAPTER.validate_python(SAMPLES["VERIFICATION_LINK"]))
    assert "https://app.example.com/verify?token=tok123&u=7" in email.text
    assert 'href="https://app.example.com/verify?token=tok123&amp;u=7"' in email.html
    assert "expires in 1 hour." in email.text


def test_user_supplied_name_is_escaped_in_html_but_not_in_text(renderer: EmailRenderer) -> None:
    job = ADAPTER.validate_python({**SAMPLES["WELCOME_EMAIL"], "name": "<script>alert(1)</script>"})
    email = renderer.render(job)
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "Welcome, <script>alert(1)</script>!" in email.text


def test_ad_ready_lists_every_headline(renderer: EmailRenderer) -> None:
    email = renderer.render(ADAPTER.validate_python(SAMPLES["AD_READY"]))
    for headline in SAMPLES["AD_READY"]["headlines"]:
        assert f"- {headline}" in email.text
        assert f"<li>{headline}</li>" in email.html


def test_rendered_email_repr_hides_the_body(renderer: EmailRenderer) -> None:
    email = renderer.render(ADAPTER.validate_python(SAMPLES["SEND_OTP"]))
    assert "482913" not in repr(email)
