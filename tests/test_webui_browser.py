"""The web UI in a real browser: headless Chromium (Debian's ``chromium`` package) driven by
Playwright, against a real broker, with real AMQP clients on the other side.

Every test fails on any JavaScript error or console error of the page.  Without the
``chromium`` binary or the ``playwright`` package the tests are skipped, saying which is missing
(CI installs both: ``.ci/run``).
"""

from __future__ import annotations

import time

import pika
import pytest

from conftest import _make
from test_management_api import Http, connect, mgmt_url, wait_for
from ui_browser import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ub(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("webui-browser"), env={"BROKER_MANAGEMENT_SAMPLE_INTERVAL": "0.5"}).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def page(ub, chromium):
    pg = Page(chromium, ub.url)
    yield pg
    pg.close()


def test_login_every_tab_and_logout(page, ub):
    page.login("guest", "wrong")
    page.p.wait_for_selector("#login-status [role=alert]")
    assert "Login failed" in page.p.inner_text("#login-status")
    page.errors.clear()  # the refused /api/whoami is logged by the browser as a 401: expected here
    page.login()
    page.p.wait_for_selector("#app:not([hidden])")
    assert "guest (administrator)" in page.p.inner_text("#whoami")
    page.p.wait_for_selector("text=Totals")
    page.p.wait_for_selector("text=File descriptors")  # node figures for an administrator
    for tab, expect in (("Connections", "No connections"), ("Channels", "No channels"),
                        ("Exchanges", "amq.topic"), ("Queues", "Add a new queue"), ("Admin", "Set permission"),
                        ("Overview", "Listeners")):
        page.tab(tab)
        page.p.wait_for_selector(f"main >> text={expect}")
    assert page.p.get_by_role("link", name="Overview").get_attribute("aria-current") == "page"
    page.p.wait_for_selector("#live[data-state=live]")  # updates come over the event stream
    page.p.get_by_role("button", name="Log out").click()
    page.p.wait_for_selector("#login:not([hidden])")
    page.p.reload()
    page.p.wait_for_selector("#login:not([hidden])")  # the credentials are gone


def test_publish_from_a_queue_page_arrives_over_amqp_then_get_and_purge(page, ub, uid):
    api = Http(ub.url)
    qname = f"ui-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    page.login()
    page.tab("Queues")
    page.p.get_by_label("Filter queues by name").fill(qname)
    page.p.get_by_role("link", name=qname).click()
    page.p.wait_for_selector(f"#page-title:text-is('Queue: {qname}')")
    pub = page.p.get_by_role("form", name="Publish message")
    assert pub.locator("[name=routing_key]").input_value() == qname
    pub.get_by_label("Delivery mode").select_option("2")
    pub.get_by_label("Headers").fill("trace = abc\ncount = 3")
    pub.get_by_label("Properties").fill("content_type = text/plain\ncorrelation_id = c-1")
    pub.get_by_label("Payload", exact=True).fill("hello from the browser")
    pub.get_by_role("button", name="Publish message").click()
    pub.get_by_text("Message published.").wait_for()
    # it is really in the queue, with its properties: take it over AMQP
    c = connect(ub)
    ch = c.channel()
    m, props, body = ch.basic_get(qname, auto_ack=True)
    assert body == b"hello from the browser"
    assert props.delivery_mode == 2 and props.content_type == "text/plain" and props.correlation_id == "c-1"
    assert props.headers == {"trace": "abc", "count": 3}
    # two more from AMQP: the page sees them live, without a reload
    for i in range(2):
        ch.basic_publish("", qname, f"amqp-{i}".encode())
    page.p.locator("main dl.kv").first.get_by_text("2", exact=True).first.wait_for()
    # the browser peeks without taking
    page.p.get_by_role("button", name="Peek at messages").click()
    page.p.get_by_text("Position 2").wait_for()
    assert api.get(f"/api/queues/%2F/{qname}").json["messages_ready"] == 2
    # get with ack: one message gone
    get = page.p.get_by_role("form", name="Get messages")
    get.get_by_label("Ack mode").select_option("ack_requeue_false")
    get.get_by_role("button", name="Get message(s)").click()
    get.get_by_text("amqp-0").wait_for()
    wait_for(lambda: api.get(f"/api/queues/%2F/{qname}").json["messages_ready"] == 1, what="one left")
    page.p.get_by_role("button", name="Purge Messages").click()
    page.p.get_by_text(f"Queue '{qname}' purged.").wait_for()
    assert api.get(f"/api/queues/%2F/{qname}").json["messages_ready"] == 0
    assert ch.basic_get(qname)[0] is None
    c.close()
    page.p.get_by_role("button", name="Delete Queue").click()
    page.p.wait_for_selector("#page-title:text-is('Queues')")
    assert api.get(f"/api/queues/%2F/{qname}").status == 404


def test_admin_adds_a_user_and_a_permission_that_work_over_amqp(page, ub, uid):
    user = f"ui-user-{uid}"
    page.login()
    page.tab("Admin")
    add = page.p.get_by_role("form", name="Add a user")
    add.get_by_label("Username").fill(user)
    add.get_by_label("Password").fill("pw-1")
    add.get_by_label("Tags").fill("management")
    add.get_by_role("button", name="Add user").click()
    add.get_by_text(f"User '{user}' added.").wait_for()
    perm = page.p.get_by_role("form", name="Set permission")
    perm.get_by_label("User").locator(f"option[value='{user}']").wait_for(state="attached")
    perm.get_by_label("User").select_option(user)
    perm.get_by_label("Virtual host").select_option("/")
    perm.get_by_label("Read regexp").fill("^ui-")
    perm.get_by_role("button", name="Set permission").click()
    perm.get_by_text(f"Permission set for '{user}'").wait_for()
    page.p.get_by_role("region", name="Permissions").get_by_text("^ui-").wait_for()
    # the new user logs in over AMQP and its read permission is what was typed
    c = connect(ub, user, "pw-1")
    ch = c.channel()
    ch.queue_declare(f"ui-{uid}-ok", auto_delete=True)
    ch.basic_get(f"ui-{uid}-ok")
    ch.queue_declare(f"other-{uid}", auto_delete=True)
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        ch.basic_get(f"other-{uid}")
    assert e.value.reply_code == 403
    c.close()
    # an administrator's Admin tab has every section (policies and limits: tests/test_webui_admin.py)
    nav = page.p.get_by_role("navigation", name="Admin sections").inner_text()
    for section in ("Users", "Permissions", "Policies", "Operator policies", "Limits", "User limits"):
        assert section in nav


def test_management_user_sees_no_admin_tab_and_no_node_figures(page, ub, uid):
    api = Http(ub.url)
    user = f"mgmt-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    page.login(user, "pw")
    page.p.wait_for_selector("text=Totals")
    assert not page.p.get_by_role("link", name="Admin").is_visible()
    page.p.get_by_text("shown to users tagged monitoring or administrator").wait_for()


def test_queues_list_filters_sorts_and_pages_on_the_server(page, ub, uid):
    api = Http(ub.url)
    c = connect(ub)
    ch = c.channel()
    for i in range(25):
        ch.queue_declare(f"pg-{uid}-{i:02d}", auto_delete=True)
    ch.queue_declare(f"unlisted-{uid}", auto_delete=True)  # so that the unfiltered list is longer
    ch.basic_publish("", f"pg-{uid}-07", b"x")
    page.login()
    page.tab("Queues")
    page.p.get_by_label("Filter queues by name").fill(f"pg-{uid}")
    page.p.get_by_text("Page 1 of 2 · 25 shown").wait_for()  # the filter is applied
    requests: list[str] = []
    page.p.on("request", lambda r: requests.append(r.url))
    page.p.get_by_role("button", name="Next ›").click()
    page.p.get_by_text("Page 2 of 2 ·").wait_for()
    assert any("page%3D2" in u or "page=2" in u for u in requests)  # the broker cut the page
    page.p.get_by_title("Sort by Total").click()
    page.p.get_by_title("Sort by Total").click()  # descending
    page.p.get_by_role("button", name="‹ Previous").click()
    page.p.get_by_text("Page 1 of 2 ·").wait_for()
    first = page.p.locator("main table.list tbody tr").first
    first.get_by_text(f"pg-{uid}-07").wait_for()
    page.p.get_by_label("Regex").check()
    page.p.get_by_label("Filter queues by name").fill(f"^pg-{uid}-1[0-2]$")
    page.p.get_by_text("Page 1 of 1 · 3 shown").wait_for()
    page.p.get_by_label("Filter queues by name").fill("(unclosed")
    page.p.get_by_text("Correct the field named above").wait_for()  # the API's 400, explained
    assert api.get("/api/overview").status == 200
    c.close()


def test_exchange_page_binds_and_publishes(page, ub, uid):
    api = Http(ub.url)
    qname = f"xq-{uid}"
    api.ok("PUT", f"/api/queues/%2F/{qname}")
    page.login()
    page.p.goto(f"{ub.url}/#/exchanges/%2F/amq.topic")
    page.p.wait_for_selector("#page-title:text-is('Exchange: amq.topic')")
    bind = page.p.get_by_role("form", name="Add binding from this exchange")
    bind.get_by_label("Destination name").fill(qname)
    bind.get_by_label("Routing key").fill("orders.#")
    bind.get_by_role("button", name="Bind").click()
    page.p.locator("main").get_by_text("orders.#", exact=True).wait_for()
    pub = page.p.get_by_role("form", name="Publish message")
    pub.get_by_label("Routing key").fill("orders.eu.new")
    pub.get_by_label("Payload", exact=True).fill("topic message")
    pub.get_by_role("button", name="Publish message").click()
    pub.get_by_text("Message published.").wait_for()
    c = connect(ub)
    _m, _p, body = c.channel().basic_get(qname, auto_ack=True)
    assert body == b"topic message"
    c.close()


def test_keyboard_only_login_and_navigation(page):
    p = page.p
    p.goto(page.base + "/")
    p.wait_for_selector("#username:focus")  # the login form has the focus
    p.keyboard.type("guest")
    p.keyboard.press("Tab")
    p.keyboard.type("guest")
    p.keyboard.press("Enter")
    p.wait_for_selector("text=Totals")
    for _ in range(30):
        p.keyboard.press("Tab")
        if p.evaluate("document.activeElement.textContent") == "Queues":
            break
    p.keyboard.press("Enter")
    p.wait_for_selector("#page-title:text-is('Queues')")
    # every form field on the page has a label
    unlabelled = p.evaluate("""[...document.querySelectorAll('main input, main select, main textarea')]
        .filter(e => e.type !== 'hidden' && !(e.labels && e.labels.length)).map(e => e.name || e.id)""")
    assert unlabelled == []


def test_phone_width_has_no_horizontal_scroll(chromium, ub):
    pg = Page(chromium, ub.url, 390, 844)
    try:
        pg.login()
        for tab in ("Overview", "Queues", "Admin"):
            pg.tab(tab)
            pg.p.wait_for_timeout(300)
            width = pg.p.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (tab, width)
    finally:
        pg.close()


def test_overview_weight_and_load_time(chromium, ub, record_property):
    """Bytes transferred and time to a drawn Overview, from a cold cache (reported, loosely bounded)."""
    pg = Page(chromium, ub.url)
    try:
        sizes: list[int] = []
        pg.p.on("response", lambda r: sizes.append(len(r.body())) if "/api/events" not in r.url else None)
        pg.p.goto(ub.url + "/")
        pg.p.evaluate("sessionStorage.clear()")
        t0 = time.monotonic()
        pg.login()
        pg.p.wait_for_selector("text=File descriptors")
        login_to_overview = time.monotonic() - t0
        cdp = pg.ctx.new_cdp_session(pg.p)
        cdp.send("Network.enable")
        cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
        sizes.clear()
        transferred: list[float] = []
        cdp.on("Network.loadingFinished", lambda e: transferred.append(e["encodedDataLength"]))
        t0 = time.monotonic()
        pg.p.reload()
        pg.p.wait_for_selector("text=File descriptors")
        load = time.monotonic() - t0
        pg.p.wait_for_timeout(200)
        weight = int(sum(transferred))
        record_property("overview_bytes_transferred", weight)
        record_property("overview_load_seconds", round(load, 3))
        print(f"\nOverview: {weight} bytes transferred, {load * 1000:.0f} ms to drawn (cold cache); "
              f"login to Overview {login_to_overview * 1000:.0f} ms")
        assert 0 < weight < 100_000 and load < 10
    finally:
        pg.close()


@pytest.mark.slow  # a broker of its own and a memory alarm: about 10 s here
def test_alarm_is_shown_prominently_and_charts_start_with_history(chromium, broker_factory):
    """A broker over its memory mark: the Overview leads with the alarm and what to do about it."""
    b = broker_factory(extra=["--memory-high-watermark", "1MB"], env={"BROKER_MANAGEMENT_SAMPLE_INTERVAL": "0.5"})
    url = mgmt_url(b)
    wait_for(lambda: Http(url).get("/api/health/checks/alarms").status == 503, what="the memory alarm")
    time.sleep(1.2)  # a few samples of history
    pg = Page(chromium, url)
    try:
        pg.login()
        alarm = pg.p.locator(".alarms [role=alert]")
        alarm.wait_for()
        assert "memory alarm in effect" in alarm.inner_text().lower()
        assert "Publishers are blocked" in alarm.inner_text()
        # the alarm comes before the charts
        assert pg.p.evaluate("""document.querySelector('.alarms').compareDocumentPosition(
            document.querySelector('.charts')) & Node.DOCUMENT_POSITION_FOLLOWING""")
        # the charts were seeded from the broker's samples: lines drawn at once
        pg.p.locator("figure.chart path.line").first.wait_for(state="attached")
    finally:
        pg.close()


def test_error_and_empty_states_say_what_to_do(page, ub, uid):
    page.login()
    page.p.goto(f"{ub.url}/#/queues/%2F/missing-{uid}")
    err = page.p.locator("main [role=alert]").first
    err.wait_for()
    text = err.inner_text()
    assert "HTTP 404" in text and "It may have been deleted meanwhile" in text
    page.p.goto(f"{ub.url}/#/connections")
    page.p.get_by_text("Clients that connect over AMQP").wait_for()
