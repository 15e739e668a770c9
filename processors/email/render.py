"""Rendering an email job into subject, HTML and text with Jinja2 templates.

Layout: ``email/<TYPE>/{subject.txt,body.html,body.txt}`` in the templates folder (by
default ``processors/templates/``), extending ``email/base.{html,txt}``. HTML is
autoescaped; text is not (it is not HTML). Undefined variables are errors, never
silently empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateError

from processors.email.jobs import EmailJobModel
from processors.errors import PermanentError
from processors.templates import TEMPLATES_DIR


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str

    def __repr__(self) -> str:  # the body may hold an OTP code or a link token
        return (
            f"RenderedEmail(subject={self.subject!r}, "
            f"html=<{len(self.html)} chars>, text=<{len(self.text)} chars>)"
        )


class EmailRenderer:
    def __init__(self, templates_dir: Path = TEMPLATES_DIR, *, product_name: str = "Acme") -> None:
        loader = FileSystemLoader(templates_dir / "email")
        self._html = Environment(
            loader=loader, autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
        )
        # Plain text is not HTML: escaping it would show `&lt;` to the reader.
        self._text = Environment(
            loader=loader,
            autoescape=False,  # noqa: S701
            undefined=StrictUndefined,
            keep_trailing_newline=True,
        )
        self._product_name = product_name

    def render(self, job: EmailJobModel) -> RenderedEmail:
        context = {"job": job, "product_name": self._product_name}
        try:
            subject = self._text.get_template(f"{job.type}/subject.txt").render(context)
            text = self._text.get_template(f"{job.type}/body.txt").render(context)
            html = self._html.get_template(f"{job.type}/body.html").render(
                context | {"subject": " ".join(subject.split())}
            )
        except TemplateError as error:
            # A broken template fails every job of its type the same way: no retry can help.
            raise PermanentError(
                f"template for {job.type} failed: {type(error).__name__}",
                error_class="TemplateError",
            ) from error
        return RenderedEmail(subject=" ".join(subject.split()), html=html, text=text.strip() + "\n")
