"""End to end in a browser: an ad job becomes copy on the user's live page and an email."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

import httpx
from pydantic import SecretStr
from selenium.webdriver.common.by import By

from live.links import token_url
from streams.producer import JobPublisher
from streams.settings import REPO_ROOT
from streams.topics import TopicNames
from tests.browser import chromium, require_browser
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.resend_server import FakeResend
from tests.integration.test_ads import ad_job, model_env, results_for
from tests.polling import eventually

SECRET = "test-ws-secret-0f3a9c"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_ad_job_shows_on_the_users_page_and_arrives_by_email(
    start_worker: Any,
    publisher: JobPublisher,
    topics: TopicNames,
    fake_openai: FakeOpenAI,
    fake_resend: FakeResend,
    worker_env: dict[str, str],
    run_id: str,
    tmp_path: Any,
) -> None:
    require_browser()
    start_worker(**model_env(fake_openai))
    port = free_port()
    env = {**os.environ, **worker_env, "WS_TOKEN_SECRET": SECRET}
    log = (tmp_path / "ws.log").open("wb")
    notifier = subprocess.Popen(
        [sys.executable, "-m", "live", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(healthy, timeout_s=30, what="the WebSocket notifier")
        with chromium() as browser:
            browser.get(token_url("u-ada", base, secret=SecretStr(SECRET), ttl_s=600))
            await eventually(
                lambda: browser.find_element(By.ID, "state").get_attribute("data-state") == "open",
                timeout_s=20,
                what="the page to connect",
            )
            ada = ad_job(f"{run_id}-live", "Live lamp", email="ada@example.com", user_id="u-ada")
            other = ad_job(f"{run_id}-other", "Secret lamp", user_id="u-bob")
            # Another user's result goes out first; it must never reach this page.
            await publisher.ad(other, topic=topics.ad_jobs.main)
            await eventually(lambda: results_for(topics, other.job_id), timeout_s=30, what="bob's result")
            published_at_s = time.time()
            await publisher.ad(ada, topic=topics.ad_jobs.main)

            cards = await eventually(
                lambda: browser.find_elements(By.CSS_SELECTOR, f"article[data-job-id='{ada.job_id}']"),
                timeout_s=30,
                what="the result on the page",
            )
            shown_at_s = int(cards[0].get_attribute("data-received-at") or 0) / 1000
            headlines = [h.text for h in cards[0].find_elements(By.CSS_SELECTOR, ".headline")]
            assert len(headlines) == 2
            assert all(0 < len(h) <= 30 for h in headlines)
            print(f"\npublish -> WebSocket page: {(shown_at_s - published_at_s) * 1000:.0f} ms")

            [email] = await eventually(
                lambda: fake_resend.deliveries, timeout_s=30, what="the AD_READY email"
            )
            assert email.body["to"] == ["ada@example.com"]
            for headline in headlines:
                assert headline in email.body["text"]
            assert not browser.find_elements(By.CSS_SELECTOR, f"article[data-job-id='{other.job_id}']")
            assert "Secret lamp" not in browser.page_source
    finally:
        notifier.terminate()
        notifier.wait(timeout=15)
        log.close()
