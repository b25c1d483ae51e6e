"""Peeking at a stream over HTTP (the web UI's message browser), against a real broker with
messages published by pika: offset forms (numbers, first, last, next, intervals, ISO times),
paging by ``next_offset``, the caps (100 messages, 1 MiB of payload), reading across segments
and past retention, read permission, and 400s naming ``offset``.  A peek takes nothing: a
consumer afterwards still starts where it asks and sees every message."""

from __future__ import annotations

import datetime
import time

import pika
import pytest

from test_management_api import Http, connect, mgmt_url, wait_for

STREAM = {"x-queue-type": "stream"}


@pytest.fixture
def api(broker) -> Http:
    return Http(mgmt_url(broker))


def make_stream(broker, name: str, bodies: list[bytes], confirm: bool = True, **args) -> None:
    """Declare the stream ``name`` and publish ``bodies`` to it (with confirms unless told)."""
    c = connect(broker)
    ch = c.channel()
    ch.queue_declare(name, durable=True, arguments=dict(STREAM, **args))
    if confirm:
        ch.confirm_delivery()
    for i, body in enumerate(bodies):
        ch.basic_publish("", name, body, pika.BasicProperties(content_type="text/plain", headers={"i": i}))
    c.close()


def peek(api: Http, name: str, **body):
    r = api.post(f"/api/queues/%2F/{name}/peek", body)
    assert r.status == 200, r
    return r.json


def offsets(answer) -> list[int]:
    return [m["offset"] for m in answer["messages"]]


def test_peek_from_each_offset_form_and_page_on(api, broker, uid):
    name = f"sp-{uid}"
    before = int(time.time() * 1000)
    make_stream(broker, name, [f"m{i}".encode() for i in range(50)])
    a = peek(api, name, offset=10, count=10)
    assert offsets(a) == list(range(10, 20)) and a["offset"] == 10 and a["next_offset"] == 20
    assert (a["first_offset"], a["last_offset"]) == (0, 49)
    m = a["messages"][0]
    assert m["payload"] == "m10" and m["payload_bytes"] == 3 and not m["payload_truncated"]
    assert m["properties"]["headers"] == {"i": 10, "x-stream-offset": 10}
    assert m["properties"]["content_type"] == "text/plain" and m["routing_key"] == name
    assert before - 1000 <= m["timestamp"] <= time.time() * 1000 + 1000
    # the next page starts at next_offset, and the last page ends at the stream's end
    b = peek(api, name, offset=a["next_offset"], count=40)
    assert offsets(b) == list(range(20, 50)) and b["next_offset"] == 50
    assert offsets(peek(api, name, offset="first", count=3)) == [0, 1, 2]
    assert offsets(peek(api, name)) == [0]  # count 1 from the first message by default
    last = peek(api, name, offset="last", count=5)
    assert offsets(last) == [49] and last["next_offset"] == 50
    nxt = peek(api, name, offset="next", count=5)
    assert nxt["messages"] == [] and nxt["offset"] == nxt["next_offset"] == 50
    assert offsets(peek(api, name, offset="45", count=100)) == list(range(45, 50))
    past = peek(api, name, offset=10**12, count=5)  # clamped to the end, as a consumer's would be
    assert past["messages"] == [] and past["offset"] == 50
    assert offsets(peek(api, name, offset="1h", count=2)) == [0, 1]  # published within the hour
    future = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)).isoformat()
    assert peek(api, name, offset=future, count=2)["messages"] == []
    # nothing was taken or moved: the queue's figures are the same, a consumer reads from 0
    q = api.get(f"/api/queues/%2F/{name}").json
    assert q["messages"] == 50 and q["consumers"] == 0
    c = connect(broker)
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    got: list[int] = []

    def on_message(ch_, method, props, _body):
        got.append(props.headers["x-stream-offset"])
        ch_.basic_ack(method.delivery_tag)
        if len(got) == 50:
            ch_.stop_consuming()

    ch.basic_consume(name, on_message, arguments={"x-stream-offset": "first"})
    c.call_later(10, ch.stop_consuming)
    ch.start_consuming()
    assert got == list(range(50))
    c.close()


def test_peek_from_a_time_starts_at_the_first_message_appended_since(api, broker, uid):
    name = f"sp-time-{uid}"
    make_stream(broker, name, [b"old"] * 5)
    time.sleep(0.05)
    between = datetime.datetime.now(datetime.UTC)
    time.sleep(0.05)
    c = connect(broker)
    ch = c.channel()
    ch.confirm_delivery()
    for _ in range(3):
        ch.basic_publish("", name, b"new")
    c.close()
    a = peek(api, name, offset=between.isoformat(), count=10)
    assert offsets(a) == [5, 6, 7] and {m["payload"] for m in a["messages"]} == {"new"}
    naive = between.replace(tzinfo=None).isoformat()  # without a zone: UTC
    assert offsets(peek(api, name, offset=naive, count=10)) == [5, 6, 7]


def test_peek_is_capped_in_count_and_payload_bytes(api, broker, uid):
    name = f"sp-big-{uid}"
    big = b"x" * (600 * 1024)
    make_stream(broker, name, [big, big, big, b"y" * (5 << 20)])
    a = peek(api, name, offset=0, count=4)
    assert sum(len(m["payload"]) for m in a["messages"]) == 1 << 20
    assert [m["payload_truncated"] for m in a["messages"]] == [False, True, True, True]
    assert [m["payload_bytes"] for m in a["messages"]] == [len(big)] * 3 + [5 << 20]
    assert a["next_offset"] == 4
    # a 5 MiB message alone comes cut to the 1 MiB cap, or to the truncate asked for
    assert len(peek(api, name, offset=3, count=1)["messages"][0]["payload"]) == 1 << 20
    cut = peek(api, name, offset=0, count=2, truncate=10, encoding="base64")["messages"]
    assert [m["payload"] for m in cut] == ["eHh4eHh4eHh4eA=="] * 2 and cut[0]["payload_encoding"] == "base64"
    r = api.post(f"/api/queues/%2F/{name}/peek", {"count": 101})
    assert r.status == 400 and "'count' must be at most 100" in r.json["reason"]


def test_peek_reads_across_segments_and_past_retention(api, broker, uid):
    """Small segments (16 KiB) and a length limit: a page spans segments, and an offset that
    retention dropped starts at the oldest message kept."""
    name = f"sp-seg-{uid}"
    make_stream(broker, name, [f"{i:05d}".encode() + b"." * 100 for i in range(2000)], confirm=False,
                **{"x-stream-max-segment-size-bytes": 16384, "x-max-length-bytes": 65536})
    wait_for(lambda: api.get(f"/api/queues/%2F/{name}").json.get("last_offset") == 1999, what="2000 appended")
    q = api.get(f"/api/queues/%2F/{name}").json
    first, last = q["first_offset"], q["last_offset"]
    assert first > 0 and last == 1999 and q["segments"] > 3
    a = peek(api, name, offset=0, count=100)
    assert a["offset"] == first and offsets(a) == list(range(first, first + 100))
    assert [m["payload"][:5] for m in a["messages"]] == [f"{i:05d}" for i in range(first, first + 100)]
    tail = peek(api, name, offset=last - 150, count=100)
    assert offsets(tail) == list(range(last - 150, last - 50))


def test_peek_shows_a_message_with_a_big_header(api, broker, uid):
    name = f"sp-hdr-{uid}"
    c = connect(broker)
    ch = c.channel()
    ch.queue_declare(name, durable=True, arguments=STREAM)
    ch.confirm_delivery()
    ch.basic_publish("", name, b"after the header", pika.BasicProperties(headers={"pad": "p" * 9000}))
    c.close()
    m = peek(api, name)["messages"][0]
    assert m["payload"] == "after the header" and m["properties"]["headers"]["pad"] == "p" * 9000


@pytest.mark.parametrize("bad", [-1, True, 1.5, "yesterday", "x" * 100, "2026-13-01", {"a": 1}, [0], "", "1h0"])
def test_a_bad_offset_is_refused_naming_the_field(api, broker, uid, bad):
    name = f"sp-bad-{uid}"
    make_stream(broker, name, [b"a"])
    r = api.post(f"/api/queues/%2F/{name}/peek", {"offset": bad})
    assert r.status == 400 and r.json["reason"].startswith("'offset' must be a stream offset"), r


def test_peek_needs_read_permission_and_the_stream(api, broker, uid):
    name = f"sp-perm-{uid}"
    make_stream(broker, name, [b"secret"])
    user = f"sp-noread-{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "management"})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": "^$"})
    r = api.as_user(user, "pw").post(f"/api/queues/%2F/{name}/peek", {"offset": "first"})
    assert r.status == 403 and "access to queue" in r.json["reason"]
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": "^$", "write": "^$", "read": ".*"})
    r = api.as_user(user, "pw").post(f"/api/queues/%2F/{name}/peek", {})
    assert r.status == 200 and r.json["messages"][0]["payload"] == "secret"
    assert api.post(f"/api/queues/%2F/no-such-{uid}/peek", {}).status == 404
    api.ok("DELETE", f"/api/users/{user}")
