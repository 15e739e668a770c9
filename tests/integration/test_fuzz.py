"""Bad input, fuzzed against the running worker.

A corpus drawn by Hypothesis from a fixed seed (`tests/integration/fuzz_corpus.py`):
random bytes, deep and huge JSON, every field at and past its limit, unicode edge cases,
CR/LF, HTML and prompt injection in the text fields, `job_id`s repeated with other
bodies, tombstones, and valid jobs among them. It goes to `email-jobs` and `ad-jobs` of
the real worker command, on the real broker and store, with the fake provider and model.

Every message ends in exactly one state, the one the contract says:
- **sent**: its email (by content: recipient, subject, text, HTML) reached the provider once;
- **stored**: its ad copy is in `ads` and its result on `ad-results`, with one model call;
- **deduplicated**: its `job_id` was already sent or stored. The rule: the first body of a
  `job_id` to be sent (or stored) wins; a later body is not sent (an ad: its stored result
  is published again, with no model call). Bodies of one `job_id` on one key are handled
  in publish order, so the first published valid body wins;
- **dlq**: its original bytes on `<topic>.dlq` with the reason the contract gives.

Nothing else: no other email, dead letter or model call, no retry. The worker stays up
and ready, no log line holds a code, and valid jobs behind the bad ones keep flowing: the
test prints how much later they are sent than when published alone, and fails on a stall.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from typing import Any

import httpx
import pytest
from aiokafka.structs import RecordMetadata

from processors.ads.jobs import AdJob, AdResult
from processors.ads.prompt import DATA_TAG
from processors.email.jobs import EmailJobModel, SendOtpJob
from processors.email.render import EmailRenderer
from processors.email.senders import OutgoingEmail, email_params
from processors.ids import is_job_id
from streams.notifiers import ad_ready_email
from streams.producer import JobPublisher
from streams.retry import headers as h
from streams.topics import TopicNames
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import Delivery, FakeResend
from tests.integration import fuzz_corpus as fuzz
from tests.integration.conftest import KAFKA
from tests.integration.fuzz_corpus import Expected, Message
from tests.integration.kafka_tools import group_lag, records_in
from tests.integration.test_ads import model_env
from tests.integration.test_delivery_status import free_port
from tests.integration.test_log_secrets import occurrences
from tests.polling import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EMAIL_EXAMPLES = 1_000
AD_EXAMPLES = 400
PROBES = 40
STALL_S = 60.0
SETTLE_TIMEOUT_S = 180.0
EMAIL_FROM = "Acme <no-reply@example.com>"  # the worker's default EMAIL_FROM
RAW_MARKUP = ("<script>", "<img src=x", "<a href='javascript", "<style>body", "<ad_request_data>")
RENDERER = EmailRenderer(product_name="Acme")  # the worker's default PRODUCT_NAME


def content_key(job: EmailJobModel) -> str:
    """What the fake provider records of the email the worker sends for `job`."""
    email = OutgoingEmail(job.job_id, EMAIL_FROM, str(job.to), RENDERER.render(job))
    return Delivery("", job.job_id, email_params(email), 0.0).content_key


def probe(lane: str, i: int) -> SendOtpJob:
    return SendOtpJob(
        type="SEND_OTP", job_id=f"probe-{lane}-{i}", to=f"probe-{lane}-{i}@example.com", code="2468"
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


class Publishing:
    """Publishes without waiting for each acknowledgement; remembers where each record went."""

    def __init__(self, publisher: JobPublisher) -> None:
        self.producer = publisher.producer
        self.pending: list[asyncio.Future[RecordMetadata]] = []
        self.published_s: dict[str, float] = {}

    async def send(self, topic: str, value: bytes | None, key: bytes | None, *, probe_id: str = "") -> int:
        if probe_id:
            self.published_s[probe_id] = time.time()
        self.pending.append(await self.producer.send(topic, value, key=key))
        return len(self.pending) - 1

    async def placed(self) -> list[RecordMetadata]:
        return list(await asyncio.gather(*self.pending))


async def send_probes(publishing: Publishing, topics: TopicNames, lane: str) -> None:
    for i in range(PROBES):
        job = probe(lane, i)
        value = job.model_dump_json().encode()
        await publishing.send(topics.email_jobs.main, value, str(job.to).encode(), probe_id=job.job_id)


def latencies_s(fake_resend: FakeResend, publishing: Publishing, lane: str) -> list[float]:
    arrived = {d.idempotency_key: d.arrived_s for d in fake_resend.deliveries}
    ids = [probe(lane, i).job_id for i in range(PROBES)]
    return [arrived[job_id] - publishing.published_s[job_id] for job_id in ids if job_id in arrived]


async def test_every_fuzzed_message_ends_in_exactly_one_state(
    start_worker: Any,
    topics: TopicNames,
    fake_resend: FakeResend,
    fake_openai: FakeOpenAI,
    database: Any,
    worker_env: dict[str, str],
) -> None:
    started_s = time.monotonic()
    emails, ads = fuzz.email_corpus(EMAIL_EXAMPLES), fuzz.ad_corpus(AD_EXAMPLES)
    expected_emails, expected_ads = fuzz.expected_email(emails), fuzz.expected_ad(ads)
    assert fuzz.intent_mismatches(emails, expected_emails) == []
    assert fuzz.intent_mismatches(ads, expected_ads) == []
    port = free_port()
    drawn_s = time.monotonic()
    worker = start_worker(HTTP_HOST="127.0.0.1", HTTP_PORT=str(port), **model_env(fake_openai))
    ready_s = time.monotonic()
    group = worker_env["KAFKA_GROUP_ID"]

    async with JobPublisher(KAFKA) as publisher:
        # Valid codes alone, then the same number among the corpus: what the bad ones cost.
        alone = Publishing(publisher)
        await send_probes(alone, topics, "alone")
        await alone.placed()
        await eventually(
            lambda: len(latencies_s(fake_resend, alone, "alone")) == PROBES,
            timeout_s=STALL_S,
            what="the probes published alone to be sent",
        )
        publishing = Publishing(publisher)
        publishing_s = time.monotonic()
        email_slots: list[int] = []
        ad_slots: list[int] = []
        every = max(1, len(emails) // PROBES)
        for i in range(max(len(emails), len(ads))):
            if i < len(emails):
                message = emails[i]
                email_slots.append(await publishing.send(topics.email_jobs.main, message.value, message.key))
                if i % every == every - 1 and i // every < PROBES:
                    job = probe("among", i // every)
                    await publishing.send(
                        topics.email_jobs.main,
                        job.model_dump_json().encode(),
                        str(job.to).encode(),
                        probe_id=job.job_id,
                    )
            if i < len(ads):
                ad_slots.append(await publishing.send(topics.ad_jobs.main, ads[i].value, ads[i].key))
        placed = await publishing.placed()
    published_s = time.monotonic()
    email_places = [placed[slot] for slot in email_slots]
    ad_places = [placed[slot] for slot in ad_slots]

    # Settled: every probe sent, every stored ad answered, and every group caught up.
    stored_ads = sum(1 for e in expected_ads if e.state in ("stored", "deduplicated"))

    progress: dict[str, Any] = {}

    async def settled() -> bool:
        results = await records_in(KAFKA, topics.ad_results)
        progress.update(
            probes_sent=len(latencies_s(fake_resend, publishing, "among")),
            ads_answered=sum(1 for r in results if json.loads(r.record.value)["status"] == "succeeded"),
            lags=[
                await group_lag(KAFKA, group, topics.email_jobs.main),
                await group_lag(KAFKA, f"{group}.bulk", topics.email_bulk.main),
                await group_lag(KAFKA, f"{group}.ads", topics.ad_jobs.main),
                await group_lag(KAFKA, f"{group}.email-notifier", topics.ad_results),
            ],
        )
        return (
            progress["probes_sent"] == PROBES
            and progress["ads_answered"] >= stored_ads
            and not any(progress["lags"])
        )

    try:
        await eventually(settled, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.5, what="the worker")
    except AssertionError:
        raise AssertionError(f"the worker did not catch up: {progress}, {stored_ads} ads to answer") from None
    settled_s = time.monotonic()

    # The worker is alive and ready.
    assert worker.proc is not None
    assert worker.proc.poll() is None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        assert (await http.get("/readyz")).status_code == 200

    observed_emails = await email_states(emails, email_places, expected_emails, fake_resend, topics)
    ad_results = [json.loads(r.record.value) for r in await records_in(KAFKA, topics.ad_results)]
    observed_ads = await ad_states(ads, ad_places, expected_ads, ad_results, fake_openai, database, topics)
    assert sent_emails_and_their_count(fake_resend, expected_emails, ad_results) == Counter(
        (d.idempotency_key, d.content_key) for d in fake_resend.deliveries
    ), "every email sent once, and no other"
    # What a reader would notice: no markup from a field, no header broken by a line break.
    for delivery in fake_resend.deliveries:
        html, subject = delivery.body["html"], delivery.body["subject"]
        assert not any(markup in html for markup in RAW_MARKUP), delivery.idempotency_key
        assert not set(subject) & {"\r", "\n"}, delivery.idempotency_key
    assert any("&lt;script&gt;" in d.body["html"] for d in fake_resend.deliveries), "markup was sent, escaped"
    for retry in (topics.email_jobs.retry, topics.email_bulk.retry, topics.ad_jobs.retry):
        assert await records_in(KAFKA, retry) == [], f"nothing is retried ({retry})"
    notifier = topics.email_notifier
    for topic in (notifier.retry, notifier.dlq):
        assert await records_in(KAFKA, topic) == [], topic

    # Per message: the one state the contract gives.
    wrong = [
        (message, expected.state, seen)
        for message, expected, seen in zip(
            emails + ads, expected_emails + expected_ads, observed_emails + observed_ads, strict=True
        )
        if seen != [expected.state]
    ]
    assert wrong == [], f"{len(wrong)} messages in another state than expected, first: {wrong[:5]}"

    # No code in any log line, and nothing was an unexpected error.
    log = worker.log()
    codes = fuzz.otp_codes(emails)
    assert len(codes) > 100
    assert [code for code in codes if occurrences(code, log)] == []
    assert "unexpected error" not in log
    assert worker.proc.poll() is None

    # Valid jobs kept flowing: no minute without a send, from the first one published
    # among the bad ones to the last email.
    alone_s, among_s = latencies_s(fake_resend, alone, "alone"), latencies_s(fake_resend, publishing, "among")
    first_s = min(publishing.published_s.values())
    arrivals_s = sorted(d.arrived_s for d in fake_resend.deliveries if d.arrived_s >= first_s)
    longest_gap_s = max(later - earlier for earlier, later in itertools.pairwise([first_s, *arrivals_s]))
    assert longest_gap_s < STALL_S, f"no email was sent for {longest_gap_s:.1f} s"
    report = {
        "messages": {"email-jobs": len(emails), "ad-jobs": len(ads), "probes": 2 * PROBES},
        "categories": dict(Counter(m.category.split(":")[0] for m in emails + ads).most_common()),
        "states": {
            "email-jobs": dict(Counter(e.state for e in expected_emails)),
            "ad-jobs": dict(Counter(e.state for e in expected_ads)),
        },
        "dlq reasons": dict(
            Counter(f"{e.lane}:{e.reason}" for e in expected_emails + expected_ads if e.reason)
        ),
        "emails sent": fake_resend.delivery_count,
        "model calls": fake_openai.request_count,
        "probe latency alone p50/p99 s": [
            round(statistics.median(alone_s), 3),
            round(percentile(alone_s, 0.99), 3),
        ],
        "probe latency among p50/p99 s": [
            round(statistics.median(among_s), 3),
            round(percentile(among_s, 0.99), 3),
        ],
        "p99 added by bad messages s": round(percentile(among_s, 0.99) - percentile(alone_s, 0.99), 3),
        "longest gap between sends s": round(longest_gap_s, 3),
        "draw s": round(drawn_s - started_s, 1),
        "worker start s": round(ready_s - drawn_s, 1),
        "publish s": round(published_s - publishing_s, 1),
        "settle s": round(settled_s - published_s, 1),
    }
    print("fuzz report:", json.dumps(report, indent=1))


# --- emails --------------------------------------------------------------------------------------


async def email_states(
    messages: list[Message],
    places: list[RecordMetadata],
    expected: list[Expected],
    fake_resend: FakeResend,
    topics: TopicNames,
) -> list[list[str]]:
    """Every state each email message is seen in (the test wants exactly one per message)."""
    delivered = Counter((d.idempotency_key, d.content_key) for d in fake_resend.deliveries)
    delivered_ids = Counter(d.idempotency_key for d in fake_resend.deliveries)
    dead = await dead_letters_by_place(topics.email_jobs.dlq, topics.email_jobs.main)
    # Moved to `email-bulk` first: told apart by their bytes.
    bulk_dead = Counter(
        (letter.record.value, letter.reason) for letter in await records_in(KAFKA, topics.email_bulk.dlq)
    )
    states: list[list[str]] = []
    for message, place, outcome in zip(messages, places, expected, strict=True):
        seen = []
        letter = dead.pop((place.partition, place.offset), None)
        if letter is not None:
            assert letter.record.value == (message.value or b""), "the original bytes"
            assert letter.reason == outcome.reason, (message, letter.reason, outcome.reason)
            seen.append("dlq")
        moved = (message.value or b"", outcome.reason or "")
        if outcome.lane == "email-bulk" and bulk_dead[moved] > 0:
            bulk_dead[moved] -= 1
            seen.append("dlq")
        job = outcome.job
        if job is not None:
            if delivered[(job.job_id, content_key(job))] > 0:
                delivered[(job.job_id, content_key(job))] -= 1
                seen.append("sent")
            elif not seen and delivered_ids[job.job_id] > 0:
                seen.append("deduplicated")
        states.append(seen)
    assert dead == {}, f"dead letters of no message: {list(dead)[:5]}"
    assert +bulk_dead == Counter(), "email-bulk dead letters of no message"
    return states


def sent_emails_and_their_count(
    fake_resend: FakeResend, expected: list[Expected], ad_results: list[dict[str, Any]]
) -> Counter[tuple[str | None, str]]:
    """The (idempotency key, content) of every email that should have been sent: the
    corpus's, the probes', and an AD_READY email per stored ad that asked for one."""
    wanted: Counter[tuple[str | None, str]] = Counter(
        (e.job.job_id, content_key(e.job)) for e in expected if e.state == "sent"
    )
    for lane in ("alone", "among"):
        for i in range(PROBES):
            job = probe(lane, i)
            wanted[(job.job_id, content_key(job))] += 1
    notices = {}
    for result in ad_results:
        notice = ad_ready_email(AdResult.model_validate(result))
        if notice is not None:
            notices[notice.job_id] = notice  # a republished result asks again: sent once
    for notice in notices.values():
        wanted[(notice.job_id, content_key(notice))] += 1
    return wanted


async def dead_letters_by_place(dlq: str, origin: str) -> dict[tuple[int, int], Any]:
    """Dead letters by the partition and offset of the record they came from."""
    out = {}
    for letter in await records_in(KAFKA, dlq):
        headers = letter.record.headers
        assert headers[h.ORIGIN_TOPIC] == origin
        place = (int(headers[h.ORIGIN_PARTITION]), int(headers[h.ORIGIN_OFFSET]))
        assert place not in out, f"two dead letters of one record {place}"
        out[place] = letter
    return out


# --- ads -----------------------------------------------------------------------------------------


def prompt_data(job: AdJob) -> str:
    data = {
        "product": job.product.model_dump(mode="json"),
        "audience": job.audience,
        "tone": job.tone,
        "language": job.language,
    }
    return json.dumps(data, sort_keys=True)


def data_in_prompt(user: str) -> str:
    """The JSON between the data tags of a user message; the tags must each appear once."""
    assert user.count(f"<{DATA_TAG}>") == 1, user
    assert user.count(f"</{DATA_TAG}>") == 1, user
    inside = user.split(f"<{DATA_TAG}>", 1)[1].split(f"</{DATA_TAG}>", 1)[0]
    return json.dumps(json.loads(inside), sort_keys=True)


def identity(value: bytes | None) -> str | None:
    """The job_id a dead-lettered ad message names, when it also names a valid user_id."""
    try:
        data = json.loads(value or b"")
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    job_id, user_id = data.get("job_id"), data.get("user_id")
    if isinstance(job_id, str) and isinstance(user_id, str) and is_job_id(job_id) and is_job_id(user_id):
        return job_id
    return None


async def ad_states(
    messages: list[Message],
    places: list[RecordMetadata],
    expected: list[Expected],
    results: list[dict[str, Any]],
    fake_openai: FakeOpenAI,
    database: Any,
    topics: TopicNames,
) -> list[list[str]]:
    """Every state each ad message is seen in; checks the results, documents and prompts."""
    stored_jobs = {e.job.job_id: e.job for e in expected if e.state == "stored"}
    documents = {doc["_id"]: doc async for doc in database["ads"].find({})}
    succeeded_docs = {job_id for job_id, doc in documents.items() if doc["status"] == "succeeded"}
    assert succeeded_docs == set(stored_jobs), "one succeeded `ads` document per stored job, no other"
    for job_id in succeeded_docs:
        assert len(documents[job_id]["variants"]) == stored_jobs[job_id].variants
    # The others record dead-lettered jobs (an oversized job that decodes, say).
    dead_ids = {identity(m.value) for m, e in zip(messages, expected, strict=True) if e.state == "dlq"}
    assert set(documents) - succeeded_docs <= dead_ids - {None}

    # One model call per stored job, with the job's fields inside the data tags, and
    # nowhere else: not in the system message, not around the tags.
    by_data = {prompt_data(job): job for job in stored_jobs.values()}
    calls: Counter[str] = Counter()
    for request in fake_openai.requests:
        system, user = (m["content"] for m in request.messages)
        data = data_in_prompt(user)
        job = by_data[data]
        outside = system + user.split(f"<{DATA_TAG}>")[0] + user.split(f"</{DATA_TAG}>")[1]
        for text in (job.product.name, job.product.description, job.audience, job.tone):
            assert len(text) < 12 or text not in outside, (job.job_id, text)
        calls[data] += 1
    assert calls == Counter(prompt_data(job) for job in stored_jobs.values()), "one model call per stored job"

    succeeded = Counter(r["job_id"] for r in results if r["status"] == "succeeded")
    for result in results:
        if result["status"] == "succeeded":
            assert result["product_name"] == stored_jobs[result["job_id"]].product.name, "the stored copy"
    dead = await dead_letters_by_place(topics.ad_jobs.dlq, topics.ad_jobs.main)
    failed_wanted: Counter[str] = Counter()
    states: list[list[str]] = []
    for message, place, outcome in zip(messages, places, expected, strict=True):
        seen = []
        letter = dead.pop((place.partition, place.offset), None)
        if letter is not None:
            assert letter.record.value == (message.value or b""), "the original bytes"
            assert letter.reason == outcome.reason, (message, letter.reason, outcome.reason)
            seen.append("dlq")
            named = identity(message.value)
            if named is not None:
                failed_wanted[named] += 1  # the user is told, on `ad-results`
        job = outcome.job
        if job is not None and succeeded[job.job_id] > 0:
            succeeded[job.job_id] -= 1
            seen.append(
                "stored" if job.job_id in stored_jobs and stored_jobs[job.job_id] is job else "deduplicated"
            )
        states.append(seen)
    assert dead == {}, f"dead letters of no message: {list(dead)[:5]}"
    assert +succeeded == Counter(), "a succeeded result of no message"
    assert Counter(r["job_id"] for r in results if r["status"] == "failed") == failed_wanted
    return states


# --- what the parser can't read --------------------------------------------------------------


async def test_json_the_parser_cannot_read_is_dead_lettered_once(
    start_worker: Any, topics: TopicNames, fake_openai: FakeOpenAI
) -> None:
    """JSON nested past the recursion limit, and (ad) a number of more than 4,300 digits.
    The decoder calls them `invalid-json` (processors/decoding.py); every other place that
    parses the bytes must survive them too."""
    messages = fuzz.parser_breaker_corpus(24)
    start_worker(SHUTDOWN_GRACE_S="2", **model_env(fake_openai))
    async with JobPublisher(KAFKA) as publisher:
        publishing = Publishing(publisher)
        for message in messages:
            topic = topics.email_jobs.main if message.topic == fuzz.EMAIL else topics.ad_jobs.main
            await publishing.send(topic, message.value, message.key)
        placed = await publishing.placed()

    async def dead_letters() -> int:
        letters = [
            *await records_in(KAFKA, topics.email_jobs.dlq),
            *await records_in(KAFKA, topics.ad_jobs.dlq),
        ]
        return len(letters) >= len(messages)

    await eventually(dead_letters, timeout_s=20, interval_s=0.5, what="a dead letter per message")
    dead = {
        fuzz.EMAIL: await dead_letters_by_place(topics.email_jobs.dlq, topics.email_jobs.main),
        fuzz.AD: await dead_letters_by_place(topics.ad_jobs.dlq, topics.ad_jobs.main),
    }
    emails = [m for m in messages if m.topic == fuzz.EMAIL]
    reasons = [e.reason for e in fuzz.expected_email(emails)]
    reasons += [e.reason for e in fuzz.expected_ad(messages[len(emails) :])]
    assert set(reasons) == {"invalid-json", "oversized"}
    for message, place, reason in zip(messages, placed, reasons, strict=True):
        letter = dead[message.topic].pop((place.partition, place.offset))
        assert letter.reason == reason
        assert letter.record.value == message.value
    assert dead == {fuzz.EMAIL: {}, fuzz.AD: {}}
