"""Sample jobs for integration tests."""

from __future__ import annotations

from processors.email.jobs import EmailJobModel, SendOtpJob, VerificationLinkJob, WelcomeEmailJob

SUBJECTS = {
    "SEND_OTP": "Your Acme sign-in code",
    "VERIFICATION_LINK": "Verify your email address for Acme",
}


def mixed_job(i: int, run_id: str) -> EmailJobModel:
    to = f"user{i % 37}@example.com"
    match i % 3:
        case 0:
            return SendOtpJob(type="SEND_OTP", job_id=f"{run_id}-{i}", to=to, code=f"{100000 + i}")
        case 1:
            return WelcomeEmailJob(type="WELCOME_EMAIL", job_id=f"{run_id}-{i}", to=to, name=f"User {i}")
        case _:
            return VerificationLinkJob(
                type="VERIFICATION_LINK",
                job_id=f"{run_id}-{i}",
                to=to,
                verification_url=f"https://app.example.com/verify?token=t{i}",
            )


def expected_subject(job: EmailJobModel) -> str:
    if isinstance(job, WelcomeEmailJob):
        return f"Welcome to Acme, {job.name}"
    return SUBJECTS[job.type]
