"""The web UI's Admin policies and limits, and what a queue's page shows of them, in a real
browser (headless Chromium driven by Playwright) against a real broker, with pika on the other
side to see each setting act.  One broker and one browser serve the whole module.

As in tests/test_webui_browser.py, every test fails on any JavaScript or console error of the
page, and the module is skipped, saying why, without Chromium or Playwright.
"""

from __future__ import annotations

import pika
import pytest

from conftest import _make
from test_management_api import Http, connect, mgmt_url, wait_for
from ui_browser import Page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def ab(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("webui-admin"), env={"BROKER_MANAGEMENT_SAMPLE_INTERVAL": "0.5"}).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


@pytest.fixture
def page(ab, chromium):
    pg = Page(chromium, ab.url)
    yield pg
    pg.close()


def ready_count(b, queue: str) -> int:
    c = connect(b)
    try:
        return c.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        c.close()


def fill_policy(form, name: str, pattern: str, apply_to: str, definition: list[tuple[str, str]]) -> None:
    form.get_by_label("Virtual host").select_option("/")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Pattern").fill(pattern)
    form.get_by_label("Apply to").select_option(apply_to)
    for key, value in definition:
        # the key's button fills the first free row and focuses its value
        form.get_by_role("button", name=f"Add key {key}", exact=True).click()
        form.page.keyboard.type(value)


def test_policy_added_in_the_ui_trims_a_queue_a_pika_client_filled(page, ab, uid):
    api = Http(ab.url)
    qname = f"pol-{uid}"
    c = connect(ab)
    ch = c.channel()
    ch.queue_declare(qname)
    for i in range(10):
        ch.basic_publish("", qname, f"m{i}".encode())
    c.close()
    wait_for(lambda: ready_count(ab, qname) == 10, what="10 messages in")

    page.login()
    page.tab("Admin")
    page.p.get_by_role("region", name="Policies", exact=True).get_by_text("No policies").wait_for()
    form = page.p.get_by_role("form", name="Add / update a policy")
    fill_policy(form, f"cap-{uid}", f"^pol-{uid}$", "queues", [("max-length", "3"), ("overflow", "drop-head")])
    assert form.locator(".def-row").nth(0).locator(".def-type").input_value() == "number"
    assert form.locator(".def-row").nth(1).locator(".def-type").input_value() == "string"
    form.get_by_role("button", name="Add / update policy").click()
    form.get_by_text(f"Policy 'cap-{uid}' saved.").wait_for()
    # stored with typed values, and acting at once: the oldest 7 are gone over AMQP
    stored = api.get(f"/api/policies/%2F/cap-{uid}").json
    assert stored["definition"] == {"max-length": 3, "overflow": "drop-head"} and stored["apply-to"] == "queues"
    assert ready_count(ab, qname) == 3
    c = connect(ab)
    got = [c.channel().basic_get(qname, auto_ack=True)[2] for _ in range(3)]
    c.close()
    assert got == [b"m7", b"m8", b"m9"]
    listed = page.p.get_by_role("table", name="Policies", exact=True)
    listed.get_by_text("max-length: 3").wait_for()

    # the queue's page names the policy and what it makes of the queue
    page.p.goto(f"{ab.url}/#/queues/%2F/{qname}")
    details = page.p.locator("main")
    details.get_by_text(f"cap-{uid}").wait_for()
    details.get_by_text('overflow: "drop-head"').wait_for()
    assert "Operator policy" in page.main()

    # edit from the list: the form takes the policy, a changed value replaces it
    page.tab("Admin")
    page.p.get_by_role("button", name=f"Edit policy cap-{uid}").click()
    assert form.get_by_label("Pattern").input_value() == f"^pol-{uid}$"
    form.locator(".def-value").nth(0).fill("1")
    form.get_by_role("button", name="Add / update policy").click()
    form.get_by_text(f"Policy 'cap-{uid}' saved.").wait_for()
    assert api.get(f"/api/policies/%2F/cap-{uid}").json["definition"] == {"max-length": 1, "overflow": "drop-head"}
    c = connect(ab)
    for i in range(3):
        c.channel().basic_publish("", qname, f"n{i}".encode())
    c.close()
    wait_for(lambda: ready_count(ab, qname) == 1, what="the new cap")
    # and Delete removes it: the queue takes messages beyond the old cap again
    page.p.get_by_role("button", name=f"Delete policy cap-{uid}").click()
    page.p.get_by_text(f"Policy 'cap-{uid}' deleted.").wait_for()
    assert api.get(f"/api/policies/%2F/cap-{uid}").status == 404
    c = connect(ab)
    for _ in range(3):
        c.channel().basic_publish("", qname, b"more")
    c.close()
    wait_for(lambda: ready_count(ab, qname) == 4, what="the cap lifted")


def test_bad_definition_shows_the_apis_error_and_stores_nothing(page, ab, uid):
    api = Http(ab.url)
    page.login()
    page.tab("Admin")
    form = page.p.get_by_role("form", name="Add / update a policy")
    fill_policy(form, f"bad-{uid}", "^x", "all", [("max-length", "-1")])
    form.get_by_role("button", name="Add / update policy").click()
    alert = form.get_by_role("alert")
    alert.wait_for()
    text = alert.inner_text()
    assert "HTTP 400" in text and "Validation failed" in text and "-1 is not a valid maximum length" in text
    # a key RabbitMQ does not know is named too
    form.locator(".def-key").nth(0).fill("no-such-key")
    form.locator(".def-type").nth(0).select_option("string")
    form.locator(".def-value").nth(0).fill("1")
    form.get_by_role("button", name="Add / update policy").click()
    form.get_by_text('{<<"no-such-key">>,<<"1">>}] are not recognised policy settings').wait_for()
    # a value that is not of its type is stopped in the page, naming the key
    form.locator(".def-key").nth(0).fill("max-length")
    form.locator(".def-type").nth(0).select_option("number")
    form.locator(".def-value").nth(0).fill("ten")
    form.get_by_role("button", name="Add / update policy").click()
    form.get_by_text("the value of 'max-length' is not a number").wait_for()
    assert api.get(f"/api/policies/%2F/bad-{uid}").status == 404
    # the browser logs each refused request as a console error: those are the expected ones
    assert page.errors and all("400" in e for e in page.errors), page.errors
    page.errors.clear()


def test_vhost_limit_set_in_the_ui_refuses_pika_until_cleared(page, ab, uid):
    api = Http(ab.url)
    vhost = f"lim-{uid}"
    page.login()
    page.tab("Admin")
    # a vhost made after the page was drawn is offered as soon as the list shows it
    api.ok("PUT", f"/api/vhosts/{vhost}")
    api.ok("PUT", f"/api/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    page.p.get_by_role("button", name="Refresh now").click()
    form = page.p.get_by_role("form", name="Set a virtual host limit")
    form.get_by_label("Virtual host").locator(f"option[value='{vhost}']").wait_for(state="attached")
    form.get_by_label("Virtual host").select_option(vhost)
    form.get_by_label("Limit").select_option("max-connections")
    form.get_by_label("Value").fill("0")
    form.get_by_role("button", name="Set limit").click()
    form.get_by_text(f"Limit max-connections of '{vhost}' set to 0.").wait_for()
    page.p.get_by_role("table", name="Virtual host limits").get_by_text(vhost).wait_for()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as e:  # pika's name for a close at Open
        connect(ab, vhost=vhost)
    assert str(e.value.args[0]) == (f'ConnectionClosedByBroker: (530) "NOT_ALLOWED - access to vhost \'{vhost}\' '
                                    "refused for user 'guest': connection limit (0) is reached\"")
    page.p.get_by_role("button", name=f"Clear max-connections of {vhost}").click()
    page.p.get_by_text(f"Limit max-connections of '{vhost}' cleared.").wait_for()
    assert api.get(f"/api/vhost-limits/{vhost}").json == []
    connect(ab, vhost=vhost).close()


def test_admin_page_fits_a_phone(chromium, ab):
    pg = Page(chromium, ab.url, width=375, height=740)
    try:
        pg.login()
        pg.tab("Admin")
        pg.p.get_by_role("form", name="Add / update a policy").get_by_role("button", name="Add key max-length", exact=True).click()
        pg.p.get_by_role("form", name="Set a user limit").wait_for()
        width = pg.p.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, width
    finally:
        pg.close()


def test_user_limit_set_in_the_ui_caps_a_users_channels(page, ab, uid):
    api = Http(ab.url)
    user = f"lim-user-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    page.login()
    page.tab("Admin")
    form = page.p.get_by_role("form", name="Set a user limit")
    form.get_by_label("User").locator(f"option[value='{user}']").wait_for(state="attached")
    form.get_by_label("User").select_option(user)
    form.get_by_label("Limit").select_option("max-channels")
    form.get_by_label("Value").fill("1")
    form.get_by_role("button", name="Set limit").click()
    form.get_by_text(f"Limit max-channels of '{user}' set to 1.").wait_for()
    assert api.get(f"/api/user-limits/{user}").json == [{"user": user, "value": {"max-channels": 1}}]
    c = connect(ab, user, "pw")
    c.channel()
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as e:
        c.channel()
    assert (e.value.reply_code, e.value.reply_text) == (
        530, f"NOT_ALLOWED - number of channels opened for user '{user}' has reached the maximum allowed user limit of 1")
    # a bad value is the API's 400, shown by the form
    form.get_by_label("Value").fill("1.5")
    form.get_by_role("button", name="Set limit").click()
    form.get_by_text("max-channels should be a number, actually was 1.5").wait_for()
    assert page.errors and all("400" in e for e in page.errors), page.errors
    page.errors.clear()


def test_exchange_page_shows_its_policy(page, ab, uid):
    api = Http(ab.url)
    api.ok("PUT", f"/api/exchanges/%2F/ex-{uid}", {"type": "fanout"})
    api.ok("PUT", f"/api/policies/%2F/ae-{uid}", {"pattern": f"^ex-{uid}$", "apply-to": "exchanges",
                                                  "definition": {"alternate-exchange": "amq.fanout"}})
    page.login()
    page.p.goto(f"{ab.url}/#/exchanges/%2F/ex-{uid}")
    page.p.locator("main").get_by_text(f"ae-{uid}", exact=True).wait_for()
    assert "Policy" in page.main()
    api.ok("DELETE", f"/api/policies/%2F/ae-{uid}")


def test_quorum_queue_page_shows_its_own_fields_and_waiting_consumer(page, ab, uid):
    """A queue of another type: its page lists what its JSON has (a quorum queue's leader,
    members, delivery limit), and single-active-consumer's waiting consumer."""
    qname = f"qq-{uid}"
    c = connect(ab)
    ch = c.channel()
    ch.queue_declare(qname, durable=True, arguments={"x-queue-type": "quorum", "x-single-active-consumer": True})
    ch.basic_qos(prefetch_count=5)
    ch.basic_consume(qname, lambda *a: None, consumer_tag=f"first-{uid}")
    ch.basic_consume(qname, lambda *a: None, consumer_tag=f"second-{uid}")
    try:
        page.login()
        page.p.goto(f"{ab.url}/#/queues/%2F/{qname}")
        consumers = page.p.get_by_role("table", name="Consumers")
        consumers.get_by_role("row", name=f"first-{uid}").get_by_text("yes (single_active)").wait_for()
        consumers.get_by_role("row", name=f"second-{uid}").get_by_text("no (waiting)").wait_for()
        assert "quorum" in page.p.locator("dl.kv").first.inner_text()
        page.p.get_by_text("All fields").click()
        more = page.p.locator("details.more")
        for name in ("leader", "members", "delivery_limit"):
            more.get_by_text(name, exact=True).wait_for()
    finally:
        c.close()


def test_operator_policy_from_the_ui_and_tags(page, ab, chromium, uid):
    """An administrator sets an operator policy that caps a queue; a policymaker sees only the
    Policies section, and no operator policies or limits."""
    api = Http(ab.url)
    qname = f"op-{uid}"
    c = connect(ab)
    ch = c.channel()
    ch.queue_declare(qname)
    ch.basic_consume(qname, lambda *a: None, consumer_tag=f"ctag-{uid}")
    page.login()
    page.tab("Admin")
    form = page.p.get_by_role("form", name="Add / update an operator policy")
    assert form.get_by_role("button", name="Add key alternate-exchange").count() == 0  # limits only
    fill_policy(form, f"ops-{uid}", f"^op-{uid}$", "queues", [("max-length", "5")])
    form.get_by_role("button", name="Add / update operator policy").click()
    form.get_by_text(f"Operator policy 'ops-{uid}' saved.").wait_for()
    assert api.get(f"/api/queues/%2F/{qname}").json["effective_policy_definition"] == {"max-length": 5}
    # the queue's page: the operator policy, and its consumer from the queue's own consumer_details
    page.p.goto(f"{ab.url}/#/queues/%2F/{qname}")
    page.p.get_by_role("table", name="Consumers").get_by_text(f"ctag-{uid}").wait_for()
    page.p.locator("main").get_by_text(f"ops-{uid}").wait_for()
    page.p.locator("main").get_by_text("max-length: 5").wait_for()
    # the queue's other fields are one click away, and stay unfolded across live updates
    page.p.get_by_text("All fields").click()
    page.p.locator("details.more").get_by_text("durable_log", exact=True).wait_for()
    c.close()
    wait_for(lambda: api.get(f"/api/queues/%2F/{qname}").json["consumers"] == 0, what="consumer gone")
    page.p.get_by_role("button", name="Refresh now").click()
    page.p.get_by_text("No consumers").wait_for()
    assert page.p.locator("details.more").get_attribute("open") is not None  # re-drawn, still unfolded

    maker = f"maker-{uid}"
    api.ok("PUT", f"/api/users/{maker}", {"password": "pw", "tags": "policymaker"})
    api.ok("PUT", f"/api/permissions/%2F/{maker}", {"configure": ".*", "write": ".*", "read": ".*"})
    other = Page(chromium, ab.url)
    try:
        other.login(maker, "pw")
        other.tab("Admin")
        other.p.get_by_role("form", name="Add / update a policy").wait_for()
        nav = other.p.get_by_role("navigation", name="Admin sections").inner_text()
        assert "Policies" in nav
        for hidden in ("Users", "Operator policies", "Limits", "Permissions"):
            assert hidden not in nav
        assert other.p.get_by_role("form", name="Add / update an operator policy").count() == 0
        assert other.p.get_by_role("form", name="Set a virtual host limit").count() == 0
    finally:
        other.close()
