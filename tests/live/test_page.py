"""The notifier page in headless Chromium: it connects, and shows its user's results only.

Needs Debian's `chromium` and `chromium-driver`. Skipped when /usr/bin/chromium is absent,
except on CI (`CI` set), where a missing browser fails the test.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import CHROMIUM, chromium
from tests.live.conftest import Notifier, Results, ad_result, token_for

WAIT_S = 20.0
POLL_S = 0.02

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
        reason=f"{CHROMIUM} not installed (apt-get install chromium chromium-driver)",
    ),
]


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with chromium(capture_console=True) as driver:
        yield driver


async def wait_until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """Poll the page (in a thread: WebDriver calls block) until `condition` is truthy."""
    wait = WebDriverWait(driver, WAIT_S, poll_frequency=POLL_S)
    return await asyncio.to_thread(wait.until, condition, f"timed out after {WAIT_S:.0f}s waiting for {what}")


def card_for(job_id: str) -> Callable[[WebDriver], Any]:
    def find(driver: WebDriver) -> Any:
        cards = driver.find_elements(By.CSS_SELECTOR, f'article.result[data-job-id="{job_id}"]')
        return cards[0] if cards else False

    return find


async def test_the_page_shows_its_users_results_as_they_arrive(
    browser: webdriver.Chrome, notifier: Notifier, results: Results
) -> None:
    await asyncio.to_thread(browser.get, f"{notifier.base_url}/?token={token_for('user-a')}")
    await wait_until(
        browser,
        lambda d: d.find_element(By.ID, "state").get_attribute("data-state") == "open",
        "the page to connect",
    )
    assert "token" not in browser.current_url  # removed from the address bar once read

    # Bob's result goes first on the same partition: once Alice's shows, Bob's was handled.
    await results.publish(ad_result("user-b", "b-1", headline="Bob's private headline"))
    headline = "Lamps <b>that</b> fold & glow"  # markup must show as text, not render
    published_at_s = time.time()
    await results.publish(ad_result("user-a", "a-1", headline=headline))
    card = await wait_until(browser, card_for("a-1"), "Alice's result on the page")
    seen_at_s = time.time()

    latency_ms = int(card.get_attribute("data-received-at")) - published_at_s * 1000
    print(
        f"\nKafka publish -> page shows the result: {latency_ms:.0f} ms "
        f"(test saw it after {(seen_at_s - published_at_s) * 1000:.0f} ms)"
    )
    assert card.find_element(By.CSS_SELECTOR, ".headline").text == headline
    assert card.find_elements(By.CSS_SELECTOR, ".headline b") == []
    assert card.find_element(By.CSS_SELECTOR, ".body").text == "Some body copy."
    assert card.find_element(By.CSS_SELECTOR, ".cta").text == "Shop now"
    assert card.find_element(By.CSS_SELECTOR, ".status").text.lower() == "succeeded"

    await results.publish(ad_result("user-b", "b-2", headline="Bob's private headline"))
    await results.publish(
        ad_result("user-a", "a-2", status="failed", variants=None, error="the model refused <script>")
    )
    failed = await wait_until(browser, card_for("a-2"), "Alice's failed result on the page")
    assert failed.find_element(By.CSS_SELECTOR, ".error").text == "the model refused <script>"
    assert failed.find_element(By.CSS_SELECTOR, ".status").text.lower() == "failed"

    page_text = browser.find_element(By.TAG_NAME, "body").text
    assert "Bob's private headline" not in page_text
    assert browser.find_elements(By.CSS_SELECTOR, 'article.result[data-job-id^="b-"]') == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "article.result")) == 2
    # No script errors and no Content-Security-Policy violations.
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


async def test_the_page_says_when_its_link_is_invalid(browser: webdriver.Chrome, notifier: Notifier) -> None:
    await asyncio.to_thread(browser.get, f"{notifier.base_url}/?token=not-a-token")

    await wait_until(
        browser,
        lambda d: "link invalid or expired" in d.find_element(By.ID, "state").text,
        "the page to report the invalid link",
    )
    assert "malformed" in browser.find_element(By.ID, "state").text
