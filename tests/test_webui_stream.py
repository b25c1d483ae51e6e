"""A stream's page in the web UI, in a real browser (headless Chromium driven by Playwright)
against a real broker, the stream filled by pika: the message browser reads from an offset
and pages by offset, showing each message's offset and timestamp; a classic queue's page
keeps its browser.

As in tests/test_webui_browser.py, every test fails on any JavaScript or console error of the
page, and the module is skipped, saying why, without Chromium or Playwright.
"""

from __future__ import annotations

import re

import pika
import pytest

from test_management_api import Http, connect, mgmt_url
from ui_browser import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture
def page(broker, chromium):
    pg = Page(chromium, mgmt_url(broker))
    yield pg
    pg.close()


def open_queue(page: Page, name: str) -> None:
    page.tab("Queues")
    page.p.get_by_label("Filter queues by name").fill(name)
    page.p.get_by_role("link", name=name, exact=True).click()
    page.p.wait_for_selector(f"#page-title:text-is('Queue: {name}')")


def shown_offsets(page: Page) -> list[int]:
    browser = page.p.get_by_role("region", name="Message browser")
    return [int(t.removeprefix("Offset ")) for t in browser.locator("article h4").all_inner_texts()]


def test_stream_page_browses_from_an_offset_and_pages_by_offset(page, broker, uid):
    name = f"ui-stream-{uid}"
    c = connect(broker)
    ch = c.channel()
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(50):
        ch.basic_publish("", name, f"event {i}".encode(), pika.BasicProperties(headers={"n": i}))
    c.close()
    page.login()
    open_queue(page, name)
    browser = page.p.get_by_role("region", name="Message browser")
    reader = browser.get_by_role("form", name="Read from offset")
    reader.get_by_label("Offset").fill("10")
    reader.get_by_role("button", name="Read from offset").click()
    browser.get_by_role("heading", name="Offset 19", exact=True).wait_for()
    assert shown_offsets(page) == list(range(10, 20))
    first = browser.locator("article").first
    assert "event 10" in first.inner_text()
    assert re.search(r"Timestamp\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.inner_text())
    assert "Offsets 10–19; the stream holds offsets 0–49" in browser.inner_text()
    # Next pages on from the answer's next_offset, Previous goes back a page
    browser.get_by_role("button", name="Next ›").click()
    browser.get_by_role("heading", name="Offset 29", exact=True).wait_for()
    assert shown_offsets(page) == list(range(20, 30))
    browser.get_by_role("button", name="‹ Previous").click()
    browser.get_by_role("heading", name="Offset 10", exact=True).wait_for()
    assert shown_offsets(page) == list(range(10, 20))
    # last: the newest message, and nothing further to page to
    reader.get_by_label("Offset").fill("last")
    reader.get_by_role("button", name="Read from offset").click()
    browser.get_by_role("heading", name="Offset 49", exact=True).wait_for()
    assert shown_offsets(page) == [49]
    assert browser.get_by_role("button", name="Next ›").is_disabled()
    assert browser.get_by_role("button", name="‹ Previous").is_enabled()
    # a bad offset: the broker's 400 text under the browser
    reader.get_by_label("Offset").fill("yesterday")
    reader.get_by_role("button", name="Read from offset").click()
    browser.get_by_role("alert").get_by_text("'offset' must be a stream offset").wait_for()
    page.errors[:] = [e for e in page.errors if "status of 400" not in e]  # the refused POST, expected
    # a stream's messages cannot be got or purged: the page offers neither, only Delete
    assert page.p.get_by_role("form", name="Get messages").count() == 0
    assert page.p.get_by_role("button", name="Purge Messages").count() == 0
    assert page.p.get_by_role("button", name="Delete Queue").count() == 1
    # browsing took nothing and left no consumer behind
    q = Http(mgmt_url(broker)).get(f"/api/queues/%2F/{name}").json
    assert q["messages"] == 50 and q["consumers"] == 0


def test_a_classic_queue_keeps_its_browser(page, broker, uid):
    name = f"ui-classic-{uid}"
    api = Http(mgmt_url(broker))
    api.ok("PUT", f"/api/queues/%2F/{name}", {"auto_delete": False, "durable": False})
    api.ok("POST", "/api/exchanges/%2F/amq.default/publish", {"routing_key": name, "payload": "hi", "properties": {}})
    page.login()
    open_queue(page, name)
    browser = page.p.get_by_role("region", name="Message browser")
    page.p.locator("main dl.kv").first.get_by_text("classic", exact=True).wait_for()  # the details arrived
    browser.get_by_role("button", name="Peek at messages").click()
    browser.get_by_text("Position 1").wait_for()
    assert browser.get_by_role("form", name="Read from offset").count() == 0
    assert page.p.get_by_role("form", name="Get messages").count() == 1
    assert page.p.get_by_role("button", name="Purge Messages").count() == 1
    api.ok("DELETE", f"/api/queues/%2F/{name}")
