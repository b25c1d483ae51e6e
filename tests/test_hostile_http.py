"""Hostile HTTP peers against a real broker: body limit, slow peers, connection cap,
what /metrics tells strangers, and the aliveness test's manners.

Each attack runs while another client does publish+get round trips over AMQP
(:class:`RoundTrips`); the tests assert that client's worst round trip stays
small, i.e. that one HTTP request never freezes the broker.  New options are
given through the environment, so that the same tests also run (and fail for
the right reason) against a broker that does not know them yet.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request

import pytest

from test_management_api import Http, connect, mgmt_url

MiB = 1024 * 1024


def metrics_base(b) -> str:
    m = re.search(r"Prometheus metrics listening on (http://\S+)/metrics", b.log_text())
    assert m, "no metrics line in the log"
    return m.group(1)


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def proc_status(pid: int, field: str) -> int:
    """A /proc/PID/status field in bytes (VmRSS, VmHWM)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def open_fds(pid: int) -> int:
    import os

    return len(os.listdir(f"/proc/{pid}/fd"))


class RoundTrips:
    """Another client: publish + basic.get round trips in a thread, worst one kept."""

    def __init__(self, b, queue: str) -> None:
        self.b = b
        self.queue = queue
        self.worst = 0.0
        self.count = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            conn = connect(self.b)
            ch = conn.channel()
            ch.queue_declare(self.queue, auto_delete=True)
            self._ready.set()
            while not self._stop.is_set():
                t0 = time.monotonic()
                ch.basic_publish("", self.queue, b"ping")
                m = None
                while m is None or m[0] is None:
                    m = ch.basic_get(self.queue, auto_ack=True)
                self.worst = max(self.worst, time.monotonic() - t0)
                self.count += 1
                time.sleep(0.01)
            conn.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    def __enter__(self) -> RoundTrips:
        self._thread.start()
        assert self._ready.wait(10), "the round-trip client did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        assert self.error is None, f"the other client failed: {self.error!r}"
        assert self.count > 0


def raw_request(host: str, port: int, head: bytes, body_chunks=(), timeout: float = 30.0) -> tuple[int, bytes]:
    """Send a request head and then body chunks on a raw socket, stopping as soon as
    the server answers; return (status, body) of the answer."""
    s = socket.create_connection((host, port), timeout=timeout)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        s.sendall(head)
        s.setblocking(False)
        answer = b""
        for chunk in body_chunks:
            try:
                answer += s.recv(65536)
            except BlockingIOError:
                pass
            if answer:
                break
            view = memoryview(chunk)
            while view:
                try:
                    n = s.send(view)
                    view = view[n:]
                except BlockingIOError:
                    time.sleep(0.001)
                    try:
                        answer += s.recv(65536)
                    except BlockingIOError:
                        pass
                    if answer:
                        break
                except (BrokenPipeError, ConnectionResetError):
                    break
            if answer:
                break
        s.setblocking(True)
        s.settimeout(timeout)
        while b"\r\n\r\n" not in answer:
            more = s.recv(65536)
            if not more:
                break
            answer += more
        head_end = answer.index(b"\r\n\r\n")
        m = re.search(rb"content-length:\s*(\d+)", answer[:head_end], re.IGNORECASE)
        body = answer[head_end + 4:]
        while m and len(body) < int(m.group(1)):
            more = s.recv(65536)
            if not more:
                break
            body += more
        return int(answer.split(b" ", 2)[1]), body
    finally:
        s.close()


def _auth_header(user: str = "guest", password: str = "guest") -> bytes:
    import base64

    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


# -- 1. body limit -----------------------------------------------------------------------------


def test_a_100mb_body_is_refused_before_it_is_read(broker_factory, uid):
    """Before: the body was read and parsed (2.75 GB resident, 6 s stall of every client).
    Now: 413 from Content-Length alone, resident memory and other clients unaffected."""
    b = broker_factory()
    host, port = host_port(mgmt_url(b))
    size = 100 * MiB
    prefix, suffix = b'{"durable": false, "arguments": {"x-pad": [', b"0]}}"
    filler = b"0," * (MiB // 2)
    n_fill = (size - len(prefix) - len(suffix)) // len(filler)
    pad = size - len(prefix) - len(suffix) - n_fill * len(filler)
    chunks = [prefix + b" " * pad] + [filler] * n_fill + [suffix]
    assert sum(map(len, chunks)) == size
    head = (f"PUT /api/queues/%2F/big-{uid} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {size}\r\n").encode() + _auth_header() + b"\r\n"
    hwm_before = proc_status(b.proc.pid, "VmHWM")
    with RoundTrips(b, f"rt-{uid}") as rt:
        t0 = time.monotonic()
        status, body = raw_request(host, port, head, chunks)
        took = time.monotonic() - t0
        time.sleep(0.5)  # the broker discards whatever was still on its way
    grew = proc_status(b.proc.pid, "VmHWM") - hwm_before
    print(f"100 MB body: {status} in {took:.2f} s; peak RSS grew {grew / MiB:.1f} MiB; "
          f"other client's worst round trip {rt.worst * 1000:.1f} ms over {rt.count}")
    assert status == 413, body[:300]
    err = json.loads(body)
    assert err["error"] == "payload_too_large"
    assert str(20 * MiB) in err["reason"] and "max-body-size" in err["reason"], err
    assert grew < 50 * MiB
    assert rt.worst < 1.0
    assert Http(mgmt_url(b)).get(f"/api/queues/%2F/big-{uid}").status == 404


def test_a_chunked_body_is_cut_at_the_limit(broker_factory, uid):
    b = broker_factory(env={"BROKER_MANAGEMENT_MAX_BODY_SIZE": "1MB"})
    host, port = host_port(mgmt_url(b))
    head = (f"PUT /api/queues/%2F/chunky-{uid} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n").encode() + _auth_header() + b"\r\n"

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    hwm_before = proc_status(b.proc.pid, "VmHWM")
    status, body = raw_request(host, port, head, [chunk(b'{"arguments":{"x-pad":[')] + [chunk(b"0," * 32768)] * 1000)
    assert status == 413, body[:300]
    assert "1000000 bytes" in json.loads(body)["reason"]
    assert proc_status(b.proc.pid, "VmHWM") - hwm_before < 30 * MiB
    # under the limit all is as before
    api = Http(mgmt_url(b))
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"properties": {}, "routing_key": "nowhere", "payload": "a" * 500_000, "payload_encoding": "string"})
    assert r.status == 200 and r.json == {"routed": False}, r
    r = api.post("/api/exchanges/%2F/amq.default/publish",
                 {"properties": {}, "routing_key": "nowhere", "payload": "a" * 1_500_000, "payload_encoding": "string"})
    assert r.status == 413, r


# -- 2. slow and idle peers --------------------------------------------------------------------


def _drip_until_closed(host: str, port: int, lines: int, every: float) -> float | None:
    """Send a request line, then one header line every `every` s; return how long the
    server kept the connection (None: still open after `lines` lines)."""
    s = socket.create_connection((host, port), timeout=5)
    t0 = time.monotonic()
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        for i in range(lines):
            s.settimeout(every)
            try:
                data = s.recv(4096)
                while data:  # an answer (408) then the close
                    data = s.recv(4096)
                return time.monotonic() - t0
            except TimeoutError:
                pass
            except ConnectionResetError:
                return time.monotonic() - t0
            try:
                s.sendall(f"X-Drip-{i}: x\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - t0
        return None
    finally:
        s.close()


@pytest.mark.parametrize("listener", ["management", "metrics"])
def test_a_header_drip_is_cut_after_the_header_timeout(broker_factory, listener):
    """Before: a peer sending a header line every few seconds was never timed out."""
    b = broker_factory(env={"BROKER_HTTP_HEADER_TIMEOUT": "2"})
    base = mgmt_url(b) if listener == "management" else metrics_base(b)
    held = _drip_until_closed(*host_port(base), lines=16, every=0.5)
    assert held is not None, "the broker still held the dripping connection after 8 s"
    assert 1.5 < held < 5, held


def test_a_slow_body_is_cut_after_the_body_timeout(broker_factory, uid):
    b = broker_factory(env={"BROKER_HTTP_BODY_TIMEOUT": "2"})
    host, port = host_port(mgmt_url(b))
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(f"PUT /api/queues/%2F/slow-{uid} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  "Content-Length: 1000\r\n".encode() + _auth_header() + b"\r\n{")
        t0 = time.monotonic()
        answer = b""
        while True:
            try:
                s.sendall(b" ")
            except (BrokenPipeError, ConnectionResetError):
                break
            s.settimeout(0.5)
            try:
                data = s.recv(4096)
            except TimeoutError:
                if time.monotonic() - t0 > 10:
                    break
                continue
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                break
        took = time.monotonic() - t0
    finally:
        s.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"body" in answer and b"2" in answer
    assert 1.5 < took < 5, took


def test_an_idle_keepalive_connection_is_closed(broker_factory):
    b = broker_factory(env={"BROKER_HTTP_KEEPALIVE_TIMEOUT": "1"})
    host, port = host_port(metrics_base(b))
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        t0 = time.monotonic()
        while True:
            data = s.recv(65536)
            if not data:
                break
            got += data
        assert got.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - t0 < 4
    finally:
        s.close()


# -- 3. connection cap -------------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_and_amqp_still_works(broker_factory, uid):
    """Before: every HTTP connection was held (3,000 dripping sockets reached the fd limit
    and AMQP connects failed).  Now: the listener holds at most the cap."""
    cap = 20
    b = broker_factory(env={"BROKER_HTTP_MAX_CONNECTIONS": str(cap)})
    host, port = host_port(mgmt_url(b))
    fds_before = open_fds(b.proc.pid)
    held = []
    try:
        for _ in range(200):
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /api/overview HTTP/1.1\r\n")  # a head that never ends
            held.append(s)
        time.sleep(0.5)
        fds = open_fds(b.proc.pid)
        print(f"200 dripping sockets: the broker holds {fds - fds_before} more descriptors (cap {cap})")
        assert fds - fds_before <= cap + 5
        refused = 0
        for s in held[cap:]:
            s.settimeout(5)
            data = s.recv(4096)
            if data.startswith(b"HTTP/1.1 503"):
                refused += 1
        assert refused == len(held) - cap
        # AMQP clients keep connecting and working
        conn = connect(b)
        ch = conn.channel()
        ch.queue_declare(f"cap-{uid}", auto_delete=True)
        ch.basic_publish("", f"cap-{uid}", b"still here")
        m = None
        while m is None or m[0] is None:
            m = ch.basic_get(f"cap-{uid}", auto_ack=True)
        assert m[2] == b"still here"
        conn.close()
    finally:
        for s in held:
            s.close()
    # once the held ones are gone, HTTP serves again
    deadline = time.monotonic() + 5
    while True:
        try:
            assert Http(mgmt_url(b)).get("/api/overview").status == 200
            break
        except (OSError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert b.log_text().count("HTTP connections open") <= 2, "refusals flood the log"


# -- 4. /metrics tells strangers no names ------------------------------------------------------


def test_metrics_are_aggregated_and_per_object_needs_a_monitoring_user(broker, uid):
    api = Http(mgmt_url(broker))
    vhost = f"secret-vh-{uid}"
    assert api.put(f"/api/vhosts/{vhost}").status in (201, 204)
    assert api.put(f"/api/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"}).status \
        in (201, 204)
    conn = connect(broker, vhost=vhost)
    ch = conn.channel()
    ch.queue_declare(f"secret-q-{uid}")
    for _ in range(3):
        ch.basic_publish("", f"secret-q-{uid}", b"x")
    base = metrics_base(broker)
    try:
        text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
        assert uid not in text
        assert 'queue="' not in text and 'vhost="' not in text
        totals = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
        assert float(totals["rabbitmq_queue_messages_ready"]) >= 3
        assert "rabbitmq_queue_consumers" in totals

        def scrape(user: str | None, password: str = "") -> tuple[int, str]:
            req = urllib.request.Request(base + "/metrics/per-object")
            if user is not None:
                import base64

                cred = base64.b64encode(f"{user}:{password}".encode()).decode()
                req.add_header("Authorization", "Basic " + cred)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()

        status, text = scrape(None)
        assert status == 401 and uid not in text
        status, text = scrape("guest", "wrong")
        assert status == 401 and uid not in text
        mgr, mon = f"mgr-{uid}", f"mon-{uid}"
        assert api.put(f"/api/users/{mgr}", {"password": "pw", "tags": "management"}).status in (201, 204)
        assert api.put(f"/api/users/{mon}", {"password": "pw", "tags": "monitoring"}).status in (201, 204)
        status, text = scrape(mgr, "pw")
        assert status == 403 and uid not in text
        status, text = scrape(mon, "pw")
        assert status == 200
        assert f'rabbitmq_queue_messages_ready{{queue="secret-q-{uid}",vhost="{vhost}"}} 3.0' in text
    finally:
        conn.close()
        api.delete(f"/api/vhosts/{vhost}")


# -- 5. the aliveness test ---------------------------------------------------------------------


def test_aliveness_needs_permissions_on_its_queue(broker, uid):
    api = Http(mgmt_url(broker))
    user = f"alive-{uid}"
    assert api.put(f"/api/users/{user}", {"password": "pw", "tags": "management"}).status in (201, 204)
    as_user = api.as_user(user, "pw")
    r = as_user.get("/api/aliveness-test/%2F")
    assert r.status == 403, r  # no permissions in the vhost at all
    api.put(f"/api/permissions/%2F/{user}", {"configure": "^app-", "write": ".*", "read": ".*"})
    r = as_user.get("/api/aliveness-test/%2F")
    assert r.status == 403, r
    assert r.json["reason"] == f"ACCESS_REFUSED - access to queue 'aliveness-test' in vhost '/' refused for user '{user}'"
    api.put(f"/api/permissions/%2F/{user}", {"configure": "^aliveness-test$", "write": "^amq\\.default$",
                                             "read": "^aliveness-test$"})
    r = as_user.get("/api/aliveness-test/%2F")
    assert r.status == 200 and r.json == {"status": "ok"}, r


def test_aliveness_never_touches_a_clients_queue_named_aliveness_test(broker, uid):
    """Before: the test used the client's queue 'aliveness-test' and deleted its messages."""
    api = Http(mgmt_url(broker))
    vhost = f"alive-vh-{uid}"
    assert api.put(f"/api/vhosts/{vhost}").status in (201, 204)
    api.put(f"/api/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = connect(broker, vhost=vhost)
    try:
        ch = conn.channel()
        ch.queue_declare("aliveness-test")
        ch.confirm_delivery()
        bodies = [f"order {i}".encode() for i in range(3)]
        for body in bodies:
            ch.basic_publish("", "aliveness-test", body)
        for _ in range(3):
            r = api.get(f"/api/aliveness-test/{vhost}")
            assert r.status == 200 and r.json == {"status": "ok"}, r
        names = [q["name"] for q in api.get(f"/api/queues/{vhost}").json]
        assert names == ["aliveness-test"]
        assert ch.queue_declare("aliveness-test", passive=True).method.message_count == 3
        got = []
        for _ in range(3):
            m = ch.basic_get("aliveness-test", auto_ack=True)
            got.append(m[2])
        assert got == bodies
    finally:
        conn.close()
        api.delete(f"/api/vhosts/{vhost}")


# -- 6. configuration --------------------------------------------------------------------------


def test_http_limits_come_from_the_config_file_and_bad_values_stop_the_start(broker_factory, tmp_path):
    from test_config import run_cli

    cfg = tmp_path / "limits.toml"
    cfg.write_text('management-max-body-size = "100KB"\nhttp-header-timeout = 3.5\nhttp-max-connections = 50\n')
    b = broker_factory(extra=["--config", str(cfg)])
    line = next(x for x in b.log_text().splitlines() if "configuration:" in x)
    for shown in ("management-max-body-size=100KB", "http-header-timeout=3.5", "http-max-connections=50"):
        assert f"{shown} (config file)" in line
    r = Http(mgmt_url(b)).post("/api/exchanges/%2F/amq.default/publish",
                               {"properties": {}, "routing_key": "nowhere", "payload": "a" * 200_000,
                                "payload_encoding": "string"})
    assert r.status == 413 and "100000 bytes" in r.json["reason"], r
    for args, env, named in (
        (["--management-max-body-size", "lots"], {}, "--management-max-body-size"),
        ([], {"BROKER_HTTP_HEADER_TIMEOUT": "0"}, "--http-header-timeout"),
        ([], {"BROKER_HTTP_MAX_CONNECTIONS": "none"}, "--http-max-connections"),
    ):
        r = run_cli(["serve", "--data-dir", str(tmp_path / "d"), *args], env=env)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert named in r.stderr, r.stderr
