"""The management API under seeded random hostile requests, end to end against a real broker.

Every route of the API (taken from its router, so new routes are fuzzed too) gets
requests with wrong methods, hostile path segments, bad query strings, bad
credentials, bodies that are not JSON or have fields of the wrong type or missing,
huge headers and huge declared bodies (``tests/http_fuzz.py`` makes them).  Each
must be answered within a second with a 2xx or the right 4xx in RabbitMQ's error
shape: never a 5xx, a hang or a dropped connection.  Meanwhile a canary AMQP client
publishes persistent messages with confirms and gets them back; afterwards it has
lost nothing, the definitions export still imports, and a restart recovers the same
definitions.  Each failure prints a reproducer (``seed:index`` and the request bytes);
``benchmarks/fuzz_http.py`` runs the same generators for longer.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from conftest import _make
from http_fuzz import (
    FUZZ_PASSWORD,
    FUZZ_USER,
    Canary,
    Case,
    CaseMaker,
    RawClient,
    api_routes,
    run_cases,
    setup_requests,
)
from test_management_api import Http, mgmt_url

ANSWER_WITHIN = 1.0  # seconds, for every request
CANARY_WORST = 3.0  # seconds, the canary's worst publish-confirm-get round trip (generous: 2 shared cores)


@pytest.fixture
def fuzzed(tmp_path):
    """A private broker (the fuzzing changes users, vhosts, policies...) set up for the fuzzer."""
    b = _make(tmp_path, extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    guest = Http(b.url)
    for method, path, body in setup_requests():
        guest.ok(method, path, body)
    yield b
    b.stop()


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _definitions(api: Http) -> dict:
    r = api.get("/api/definitions")
    assert r.status == 200, r
    d = r.json
    d.pop("rabbit_version", None)
    d.pop("rabbitmq_version", None)
    return {k: sorted(json.dumps(x, sort_keys=True) for x in v) if isinstance(v, list) else v for k, v in d.items()}


def _check_after(b, canary: Canary) -> None:
    """The canary lost nothing and stayed quick; the definitions export re-imports and survives a restart."""
    canary.stop()
    assert canary.error is None, f"the canary failed: {canary.error!r}"
    assert canary.received > 10, "the canary made almost no round trips"
    assert not canary.lost, f"the canary lost messages {canary.lost[:20]}"
    assert canary.worst < CANARY_WORST, f"the canary's worst round trip took {canary.worst:.2f} s"
    api = Http(b.url, FUZZ_USER, FUZZ_PASSWORD)
    alarms = api.get("/api/health/checks/alarms")
    assert alarms.status == 200, f"an alarm is raised after the fuzzing (e.g. metadata unsaved): {alarms}"
    before = _definitions(api)
    raw = api.get("/api/definitions").json
    r = api.post("/api/definitions", raw)
    assert r.status in (200, 201, 204), f"the broker's own export does not re-import: {r}"
    assert _definitions(api) == before, "re-importing the export changed the definitions"
    b.stop()
    b.start()
    b.url = mgmt_url(b)
    api = Http(b.url, FUZZ_USER, FUZZ_PASSWORD)
    assert _definitions(api) == before, "the definitions differ after a restart"
    log = b.log_text()
    assert "Traceback" not in log, log[log.index("Traceback") - 500:][:4000]


def _fuzz(b, seed: int, count: int, big: bool = False) -> None:
    host, port = _host_port(b.url)
    canary = Canary("127.0.0.1", b.port).start()
    report = run_cases(host, port, CaseMaker(api_routes(), seed), range(count), threads=3,
                       answer_within=ANSWER_WITHIN, big=big)
    print(f"{report.requests} requests in {report.seconds:.1f} s, slowest {report.slowest:.2f} s; "
          f"statuses {report.histogram()}; canary {canary.received} round trips")
    assert report.requests == count
    assert not report.failures, f"{len(report.failures)} bad answers:\n" + "\n".join(report.failures[:30])
    assert len([s for s in report.statuses if 200 <= s < 300]) >= 1, "nothing valid was ever accepted"
    _check_after(b, canary)


def test_every_route_is_fuzzed():
    """The generators reach every route and every method the router has."""
    routes = api_routes()
    assert len(routes) > 50
    maker = CaseMaker(routes, seed=1)
    seen = {(c.route, c.method) for c in (maker.make(i) for i in range(6000)) if "method" not in c.attacks}
    missing = [(p, m) for p, ms in routes for m in ms if (p, m) not in seen]
    assert not missing, f"never fuzzed: {missing}"


def test_http_fuzz(fuzzed):
    _fuzz(fuzzed, seed=20240, count=8000)


@pytest.mark.slow
def test_http_fuzz_big(fuzzed):
    """Bigger, with huge headers and bodies sent in full."""
    _fuzz(fuzzed, seed=777, count=12000, big=True)


# -- what the fuzzer found: one regression test each --------------------------------------

@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A private broker for the regression tests (they change little)."""
    b = _make(tmp_path_factory.mktemp("http-fuzz-regressions"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


def _raw(b, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
         user: str = "guest", password: str = "guest"):
    """Send one request as raw bytes (no client library tidies it up); the answer and its JSON."""
    import base64

    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    case = Case("regression", method, target, [("Authorization", f"Basic {auth}"), *(headers or [])], body, None)
    host, port = _host_port(b.url)
    client = RawClient(host, port, timeout=10.0)
    try:
        ans = client.send(case)
    finally:
        client.close()
    assert ans.problem is None, ans.problem
    try:
        doc = json.loads(ans.body) if ans.body else None
    except ValueError:
        doc = None
    return ans, doc


def test_body_in_an_encoding_it_is_not_in_is_400(plain):
    """``Content-Encoding: gzip`` on a body that is not gzip was a 500 (aiohttp's decoding error)."""
    ans, doc = _raw(plain, "PUT", "/api/queues/%2F/gz-q", [("Content-Encoding", "gzip"),
                                                        ("Content-Type", "application/json")], b'{"durable":true}')
    assert ans.status == 400, ans
    assert doc["error"] == "bad_request" and "request body" in doc["reason"], doc
    assert Http(plain.url).get("/api/queues/%2F/gz-q").status == 404  # nothing was half done


def test_a_newline_in_a_path_is_answered_by_the_api(plain):
    """``%0A`` in a path segment fell through the catch-all route (``.*`` stops at a newline):
    aiohttp answered a plain-text 404 before login and name checks ran."""
    ans, doc = _raw(plain, "GET", "/api/queues/%2F/a%0Ab")
    assert ans.status == 404 and doc == {"error": "Object Not Found", "reason": "Not Found"}, ans
    ans, doc = _raw(plain, "GET", "/api/queues/%2F/a%0Ab", password="wrong")
    assert ans.status == 401 and doc["error"] == "not_authorized", ans
    ans, doc = _raw(plain, "PUT", "/api/queues/%2F/a%0Ab", [("Content-Type", "application/json")], b"{}")
    assert ans.status in (201, 204), ans  # a newline is allowed in an AMQP queue name
    ans, doc = _raw(plain, "DELETE", "/api/queues/%2F/a%0Ab")
    assert ans.status == 204, ans


@pytest.mark.parametrize("word", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(plain, word):
    """Python's parser took ``NaN`` / ``Infinity`` in bodies; JSON has neither: 400 before any handler."""
    body = b'{"arguments": {"x-message-ttl": ' + word.encode() + b"}}"
    ans, doc = _raw(plain, "PUT", "/api/queues/%2F/nan-q", [("Content-Type", "application/json")], body)
    assert ans.status == 400, ans
    assert doc == {"error": "bad_request", "reason": f"invalid JSON: {word} is not a JSON value"}, doc
    assert Http(plain.url).get("/api/queues/%2F/nan-q").status == 404


def test_malformed_requests_do_not_flood_the_log(plain):
    """Each request head aiohttp's parser refuses was logged as an ERROR with a traceback: any
    peer could write a dozen lines to the broker's log per request.  Now: 400, and at most one
    warning line a minute with a count."""
    host, port = _host_port(plain.url)
    before = len(plain.log_text())
    bad = [b"FOO@ /api/overview HTTP/1.1\r\n\r\n", b"GET /api/overview?q=\xc3\xa9 HTTP/1.1\r\n\r\n",
           b"GET /api/overview HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(200)) + b"\r\n",
           b"POST /api/definitions HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for i in range(40):
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(bad[i % len(bad)])
            assert s.recv(100)[8:13] == b" 400 ", bad[i % len(bad)]  # HTTP/1.0 when the method line is bad
    time.sleep(0.3)
    log = plain.log_text()[before:]
    assert "Traceback" not in log, log[:3000]
    lines = [ln for ln in log.splitlines() if "malformed request" in ln]
    assert 1 <= len(lines) <= 2, log[:3000]


def test_an_unread_body_that_cannot_be_decoded_is_not_logged_as_a_crash(plain):
    """A GET with a broken gzip body: the answer goes out, then aiohttp reads the body away,
    fails, and logged 'Unhandled exception' with a traceback (per request)."""
    before = len(plain.log_text())
    for _ in range(10):
        ans, doc = _raw(plain, "GET", "/api/overview", [("Content-Encoding", "gzip")], b'{"not":"gzip"}')
        assert ans.status == 200, ans
    time.sleep(0.3)
    log = plain.log_text()[before:]
    assert "Traceback" not in log and "Unhandled exception" not in log, log[:3000]
    # at most one line a minute (an earlier test may have used this minute's line)
    assert len([ln for ln in log.splitlines() if "request body is malformed" in ln]) <= 1, log[:3000]


def test_a_lone_surrogate_is_refused_before_it_reaches_durable_metadata(plain):
    """``"\\ud800"`` is a valid JSON escape but no UTF-8 string: a user created with that tag could
    not be saved, and every durable change after it answered 500 (metadata unsaved) until restart."""
    api = Http(plain.url)
    for path, body in [("/api/users/surrogate-u", b'{"password": "pw", "tags": "\\ud800"}'),
                       ("/api/vhosts/surrogate-vh", b'{"description": "a\\uDFFFb"}'),
                       ("/api/queues/%2F/surrogate-q", b'{"arguments": {"x-\\ud83d": 1}}')]:
        ans, doc = _raw(plain, "PUT", path, [("Content-Type", "application/json")], body)
        assert ans.status == 400, (path, ans)
        assert doc["error"] == "bad_request" and "lone surrogate" in doc["reason"], doc
        field = json.loads(body.replace(b"\\u", b"u")).popitem()[0]
        assert f"'{field}'" in doc["reason"], doc
    # a pair of surrogate escapes is one real character, and durable changes still work
    ans, _ = _raw(plain, "PUT", "/api/vhosts/surrogate-ok", [("Content-Type", "application/json")],
                  b'{"description": "\\ud83d\\udc07"}')
    assert ans.status in (201, 204), ans
    assert api.get("/api/vhosts/surrogate-ok").json["description"] == "\U0001f407"
    assert api.ok("PUT", "/api/queues/%2F/after-surrogates", {"durable": True}).status in (201, 204)
    assert not api.get("/api/nodes").json[0].get("metadata_alarm"), "the metadata alarm was raised"
    api.delete("/api/vhosts/surrogate-ok")
    api.delete("/api/queues/%2F/after-surrogates")


@pytest.mark.parametrize("kind", ["policies", "operator-policies"])
def test_a_huge_integer_in_a_policy_is_a_400(plain, kind):
    """``"priority": 10**400`` was a 500 (math.isfinite() of an int that big raises)."""
    huge = "1" + "0" * 400
    for body in ('{"pattern": "^x", "definition": {"max-length": 1}, "priority": HUGE}',
                 '{"pattern": "^x", "definition": {"max-length": HUGE}}',
                 '{"pattern": "^x", "definition": {"message-ttl": -HUGE}}'):
        body = body.replace("HUGE", huge)
        ans, doc = _raw(plain, "PUT", f"/api/{kind}/%2F/huge", [("Content-Type", "application/json")],
                        body.encode())
        assert ans.status == 400, (body[:80], ans)
        assert doc["error"] == "bad_request", doc
    assert Http(plain.url).get(f"/api/{kind}/%2F/huge").status == 404


def test_a_vhost_an_import_creates_survives_a_restart(tmp_path):
    """An imported item naming a missing vhost created it behind the broker's back: no log line,
    and saved only because something else marked the metadata changed.  Now it is created like any
    vhost; it is logged and survives a crash right after the answer."""
    b = _make(tmp_path, extra=["--management-port", "0"]).start()
    try:
        b.url = mgmt_url(b)
        api = Http(b.url)
        # the queue itself is refused: the vhost is all the import changes
        doc = {"queues": [{"name": "implicit-q", "vhost": "implicit-vh", "durable": True, "auto_delete": False,
                           "arguments": {"x-max-length": "many"}}]}
        assert api.post("/api/definitions", doc).status == 400
        assert api.get("/api/vhosts/implicit-vh").status == 200
        assert "vhost 'implicit-vh' created" in b.log_text()
        before = _definitions(api)
        b.kill9()  # no saving on the way out: only what was saved before the answer
        b.start()
        b.url = mgmt_url(b)
        api = Http(b.url)
        assert api.get("/api/vhosts/implicit-vh").status == 200, "the imported vhost was not saved"
        after = _definitions(api)
        assert after["vhosts"] == before["vhosts"]
    finally:
        b.stop()


def test_a_deleted_default_vhost_stays_deleted_after_a_restart(tmp_path):
    """The default vhost ``/`` came back at every start (it was created unless present, not only
    on a blank node): the definitions after a restart differed from those before it."""
    b = _make(tmp_path, extra=["--management-port", "0"]).start()
    try:
        b.url = mgmt_url(b)
        api = Http(b.url)
        api.ok("PUT", "/api/vhosts/other-vh", {})
        assert api.delete("/api/vhosts/%2F").status == 204
        before = _definitions(api)
        b.stop()
        b.start()
        b.url = mgmt_url(b)
        api = Http(b.url)
        assert api.get("/api/vhosts/%2F").status == 404, "the deleted default vhost came back"
        assert _definitions(api) == before
    finally:
        b.stop()


def test_a_broken_or_slow_upload_form_is_a_4xx(tmp_path):
    """``POST /api/definitions`` as an upload form (the web UI's import): a body without the
    boundary its header names was a 500, and a form body that never arrived held the request
    for ever (the form was read without the body timeout)."""
    b = _make(tmp_path, extra=["--management-port", "0", "--http-body-timeout", "1"]).start()
    try:
        b.url = mgmt_url(b)
        ans, doc = _raw(b, "POST", "/api/definitions", [("Content-Type", "multipart/form-data; boundary=zz")],
                        b'{"queues": []}')
        assert ans.status == 400 and doc["error"] == "bad_request" and "upload form" in doc["reason"], ans
        host, port = _host_port(b.url)
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST /api/definitions HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n"
                      b"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: 1000\r\n\r\n--zz\r\n")
            t0 = time.monotonic()
            answer = s.recv(4096)
            assert answer.startswith(b"HTTP/1.1 408"), answer
            assert time.monotonic() - t0 < 5
        assert "Traceback" not in b.log_text()
    finally:
        b.stop()
