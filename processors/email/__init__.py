"""Transactional email: contracts, rendering, senders, the delivery ledger, the service."""

from processors.email.jobs import (
    EMAIL_TYPES,
    AdReadyJob,
    EmailJob,
    EmailJobModel,
    SendOtpJob,
    VerificationLinkJob,
    WelcomeEmailJob,
    decode_email_job,
)
from processors.email.ledger import DeliveryLedger
from processors.email.render import EmailRenderer, RenderedEmail
from processors.email.senders import EmailSender, OutboxSender, OutgoingEmail, ResendSender
from processors.email.service import EmailOutcome, EmailService

__all__ = [
    "EMAIL_TYPES",
    "AdReadyJob",
    "DeliveryLedger",
    "EmailJob",
    "EmailJobModel",
    "EmailOutcome",
    "EmailRenderer",
    "EmailSender",
    "EmailService",
    "OutboxSender",
    "OutgoingEmail",
    "RenderedEmail",
    "ResendSender",
    "SendOtpJob",
    "VerificationLinkJob",
    "WelcomeEmailJob",
    "decode_email_job",
]
