"""Hostile requests for the management API: seeded generators, a raw HTTP client, and the verdict.

Shared by ``tests/test_http_fuzz.py`` (a few thousand requests in CI) and
``benchmarks/fuzz_http.py`` (as many as fit in N minutes).

Theory of operation
-------------------
The routes come from the management router itself
(``broker.management.server.ROUTES``), so a route added later is fuzzed
without touching this file.  :class:`CaseMaker` turns ``(seed, index)`` into
one :class:`Case` -- the same pair always gives the same request bytes, which
is the reproducer -- by picking a route and one or more *attacks*: a method
the route does not have, a path segment that is badly percent-encoded, NUL,
a slash, not UTF-8 or overlong, a bad query string, bad credentials, a body
that is not JSON, a valid body with one field of the wrong type or missing,
huge headers or a huge declared body.  Path segments are drawn from names that
exist (so handlers run past their lookups) and from hostile ones.

:class:`RawClient` writes the request bytes exactly as made (no client
library normalises the path or the headers) over a keep-alive socket and reads
one answer.  :func:`verdict` says what is wrong with that answer, if
anything: no answer in time, a dropped connection, a 5xx, an error body that is
not RabbitMQ's ``{"error": ..., "reason": ...}``, a status the attack rules
out (e.g. a wrong method that is not 405), or a 400 for a mutated body field
whose reason does not name the field.
"""

from __future__ import annotations

import base64
import json
import random
import socket
import time
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# names the fuzzer must never touch: its own login and the canary's
FUZZ_USER, FUZZ_PASSWORD = "fuzz-admin", "fuzz-admin-pw"
CANARY_USER, CANARY_PASSWORD, CANARY_VHOST = "canary", "canary-pw", "canary-vh"
FUZZ_VHOST = "fuzz-vh"

EVENT_STREAM = ("api", "events")


def api_routes() -> list[tuple[tuple[str, ...], list[str]]]:
    """Every route of the management API: (pattern segments, methods), from its router."""
    from broker.management.server import ROUTES

    return [(pat, sorted(table)) for pat, table in ROUTES.routes]


def setup_requests() -> list[tuple[str, str, Any]]:
    """What the fuzzed broker is given first (as guest): the fuzzer's admin, the canary's
    user and vhost, and some objects for the generated paths to find."""
    q = lambda s: urllib.parse.quote(s, safe="")  # noqa: E731
    reqs: list[tuple[str, str, Any]] = [
        ("PUT", f"/api/users/{FUZZ_USER}", {"password": FUZZ_PASSWORD, "tags": "administrator"}),
        ("PUT", f"/api/users/{CANARY_USER}", {"password": CANARY_PASSWORD, "tags": ""}),
        ("PUT", "/api/users/fuzz-user", {"password": "pw", "tags": "management"}),
        ("PUT", f"/api/vhosts/{CANARY_VHOST}", {}),
        ("PUT", f"/api/permissions/{CANARY_VHOST}/{CANARY_USER}", {"configure": ".*", "write": ".*", "read": ".*"}),
    ]
    for vh in ("/", FUZZ_VHOST):
        v = q(vh)
        if vh != "/":
            reqs.append(("PUT", f"/api/vhosts/{v}", {"description": "fuzzed"}))
        reqs += [
            ("PUT", f"/api/permissions/{v}/{FUZZ_USER}", {"configure": ".*", "write": ".*", "read": ".*"}),
            ("PUT", f"/api/permissions/{v}/fuzz-user", {"configure": ".*", "write": ".*", "read": ".*"}),
            ("PUT", f"/api/queues/{v}/fq", {"durable": True}),
            ("PUT", f"/api/queues/{v}/fs", {"durable": True, "arguments": {"x-queue-type": "stream"}}),
            ("PUT", f"/api/exchanges/{v}/fx", {"type": "topic", "durable": True}),
            ("POST", f"/api/bindings/{v}/e/fx/q/fq", {"routing_key": "k", "arguments": {}}),
            ("POST", f"/api/exchanges/{v}/amq.default/publish",
             {"properties": {}, "routing_key": "fq", "payload": "hello", "payload_encoding": "string"}),
            ("PUT", f"/api/policies/{v}/fp", {"pattern": "^fq$", "definition": {"max-length": 1000}}),
        ]
    return reqs


# -- values -------------------------------------------------------------------------------

LONG = "x" * 300
HOSTILE_SEGMENTS = [
    "%2F", "a%2Fb", "%2F%2F", "%00", "a%00b", "%", "%2", "%zz", "%C3%28", "%FF%FE", "%ED%A0%80",
    "%E2%82%AC" * 90, LONG, "y" * 5000, "..", ".", "%2E%2E", "%20", "+", "%2B", "~", "amq.default",
    "amq.gen-x", "%F0%9F%90%87", "%0A", "%0D%0Ainjected:%201", "%22%27%3C%3E", "%25", "%25zz",
    "%5C", "*", "-1", "0", "99999999999999999999999", "%7B%7D", "null",
]
SEGMENT_POOL = {
    "vhost": ["%2F", FUZZ_VHOST, "no-such-vhost"],
    "name": ["fq", "fs", "fx", "amq.direct", "amq.topic", "fp", "max-connections", "max-queues", "nope"],
    "user": ["fuzz-user", "guest", "nobody"],
    "src": ["fx", "amq.direct", "amq.default", "nope"],
    "dest": ["fq", "fx", "nope"],
    "props": ["k", "~", "k~abc", "nope"],
    "node": ["rabbit@localhost", "nope"],
    "port": ["5672", "15672", "0", "65536", "abc"],
    "id": ["0", "1", "abc", "-1"],
    "message_id": ["m1", "nope"],
}

# what a DELETE of a whole vhost or user names, so that the fuzzing keeps reaching deep into
# the others (a PUT with a hostile body may create these names too)
THROWAWAY = {(("api", "vhosts", ":vhost"), ":vhost"): "tmp-vh", (("api", "users", ":user"), ":user"): "tmp-user"}
SEGMENT_POOL["vhost"].append("tmp-vh")
SEGMENT_POOL["user"].append("tmp-user")


def json_junk(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value of any type: the values that go where they should not."""
    pick = rng.randrange(16 if depth < 3 else 11)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.choice([0, -1, 1, 2**31, 2**63, -(2**63) - 1, 10**30, 10**400])
    if pick == 3:
        return rng.choice([0.5, -1e308, 1e308, 1e-320])
    if pick == 4:
        return ""
    if pick == 5:
        return rng.choice(["\x00", "a\x00b", "\ud800", "\U0001f407" * 50, "é" * 200, "\n\r\t"])
    if pick == 6:
        return "z" * rng.choice([256, 4096, 100_000])
    if pick == 7:
        return rng.choice(["true", "false", "1", "-5", "1e999", "NaN", ".*", "(a*)*b", "[", "^"])
    if pick == 8:
        return rng.choice(["classic", "quorum", "stream", "direct", "fanout", "topic", "headers"])
    if pick == 9:
        return []
    if pick == 10:
        return {}
    if pick in (11, 12):
        return [json_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["a", "x-max-length", "", "\x00", "\udc80", "name", "value"]): json_junk(rng, depth + 1)
            for _ in range(rng.randrange(4))}


def _template(pattern: tuple[str, ...], method: str) -> dict:
    """A valid-looking body for a route, by what it names (unknown routes: empty)."""
    p = "/".join(pattern)
    if method in ("GET", "HEAD", "DELETE") and "bulk-delete" not in p:
        return {}
    if p.startswith("api/queues/") and p.endswith("/get"):
        return {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto", "truncate": 50000}
    if p.startswith("api/queues/") and p.endswith("/peek"):
        return {"count": 1, "offset": 0}
    if p.startswith("api/queues/"):
        return {"durable": True, "auto_delete": False, "arguments": {"x-max-length": 10}}
    if p.endswith("/publish"):
        return {"properties": {"delivery_mode": 2, "headers": {"h": 1}}, "routing_key": "k",
                "payload": "aGk=", "payload_encoding": "base64"}
    if p.startswith("api/exchanges/"):
        return {"type": "direct", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    if p.startswith("api/bindings/"):
        return {"routing_key": "k", "arguments": {"x-match": "all"}}
    if p == "api/users/bulk-delete":
        return {"users": ["nobody", "fuzz-user"]}
    if p.startswith("api/users/"):
        return {"password": "pw", "tags": "management"}
    if p.startswith("api/permissions/"):
        return {"configure": ".*", "write": ".*", "read": ".*"}
    if p.startswith("api/topic-permissions/"):
        return {"exchange": "amq.topic", "write": ".*", "read": ".*"}
    if "policies/" in p:
        return {"pattern": "^fq", "definition": {"max-length": 100}, "priority": 1, "apply-to": "queues"}
    if p.startswith("api/vhost-limits/") or p.startswith("api/user-limits/"):
        return {"value": 100} if len(pattern) == 4 else {"max-connections": 100, "max-queues": 100}
    if p.startswith("api/vhosts/"):
        return {"description": "d", "tags": "a,b", "default_queue_type": "classic", "tracing": False}
    if p.startswith("api/definitions"):
        return {"queues": [{"name": "defq", "vhost": FUZZ_VHOST, "durable": True, "auto_delete": False,
                            "arguments": {}}],
                "exchanges": [], "bindings": [], "policies": []}
    if p.startswith("api/lost-found/"):
        return {"vhost": FUZZ_VHOST, "queue": "fq"}
    return {}


# -- cases --------------------------------------------------------------------------------

@dataclass
class Case:
    """One request, as bytes on the wire, and what it is meant to test."""

    key: str  # "seed:index", the reproducer
    method: str
    target: str  # path and query, exactly as sent
    headers: list[tuple[str, str]]
    body: bytes
    route: tuple[str, ...] | None  # the pattern aimed at (None: no route)
    attacks: list[str] = field(default_factory=list)
    field: str | None = None  # the body field mutated, if one was
    declared_length: int | None = None  # a Content-Length larger than the body sent
    valid_body: bytes | None = None  # the template body before ``field`` was mutated
    version: str = "HTTP/1.1"
    chunked: bool = False  # the body is sent as chunks (Transfer-Encoding set in ``headers``)

    def wire(self) -> bytes:
        head = f"{self.method} {self.target} {self.version}\r\nHost: fuzz\r\n"
        for k, v in self.headers:
            head += f"{k}: {v}\r\n"
        length = self.declared_length if self.declared_length is not None else len(self.body)
        if self.chunked:
            pass  # the body is already in chunks
        elif length or self.method in ("POST", "PUT"):
            head += f"Content-Length: {length}\r\n"
        return head.encode("utf-8", "surrogateescape") + b"\r\n" + self.body

    def reproducer(self, base: str) -> str:
        """A line that replays this request (its bytes, shortened where huge)."""
        raw = self.wire()
        shown = raw if len(raw) <= 600 else raw[:500] + b"...(%d bytes)..." % len(raw) + raw[-60:]
        return f"[{self.key}] {' '.join(self.attacks)} -> {base}  {shown!r}"


class CaseMaker:
    """``(seed, index)`` -> :class:`Case`, over the given routes."""

    def __init__(self, routes: list[tuple[tuple[str, ...], list[str]]], seed: int) -> None:
        self.routes = routes
        self.seed = seed

    def make(self, index: int, big: bool = False) -> Case:
        rng = random.Random(f"{self.seed}:{index}")
        pattern, methods = rng.choice(self.routes)
        method = rng.choice(methods)
        case = Case(f"{self.seed}:{index}", method, "", [], b"", pattern)
        attacks = rng.sample(["method", "segment", "query", "auth", "json", "field", "missing", "headers",
                              "size", "framing", "none", "none", "none"], k=rng.choice([1, 1, 1, 2]))
        case.attacks = sorted(set(attacks) - {"none"}) or ["valid"]
        segs = []
        for p in pattern:
            if p.startswith(":"):
                pool = SEGMENT_POOL.get(p[1:], ["x"])
                if method == "DELETE" and (pattern, p) in THROWAWAY:
                    pool = [THROWAWAY[pattern, p]]  # the objects the other requests need stay
                segs.append(rng.choice(HOSTILE_SEGMENTS) if "segment" in attacks and rng.random() < 0.6
                            else rng.choice(pool))
            else:
                segs.append(p)
        if "segment" in attacks and not any(p.startswith(":") for p in pattern):
            segs.append(rng.choice(HOSTILE_SEGMENTS))  # one segment more: another route, or none (404)
            case.route = self.route_of(segs)
        path = "/" + "/".join(segs)
        if rng.random() < 0.02:
            path += "/"
        query = self._query(rng) if "query" in attacks or rng.random() < 0.15 else ""
        if query and "query" not in case.attacks:
            case.attacks = sorted(set(case.attacks) - {"valid"} | {"query"})
        if pattern == EVENT_STREAM and "query" not in attacks:
            query = "watch=/api/overview&interval=1"
        case.target = path + (("?" + query) if query else "")
        if "method" in attacks:
            others = [m for m in ("GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "HEAD")
                      if m not in methods and not (m == "HEAD" and "GET" in methods)]
            case.method = rng.choice(others)
        if case.route is not None and case.route != pattern:  # the method is judged by the route it reached
            table = dict(self.routes)[case.route]
            wrong = case.method not in table and not (case.method == "HEAD" and "GET" in table)
            case.attacks = sorted((set(case.attacks) - {"method"}) | ({"method"} if wrong else set()))
        case.headers.append(("Authorization", self._auth(rng) if "auth" in attacks else _basic(FUZZ_USER,
                                                                                               FUZZ_PASSWORD)))
        if "headers" in attacks:
            case.headers += self._headers(rng, big)
        body = _template(pattern, method)
        if "json" in attacks:
            case.body = self._bad_json(rng, big)
        elif body or method in ("PUT", "POST"):
            if ("field" in attacks or "missing" in attacks) and body:
                case.valid_body = json.dumps(body).encode()
            if "field" in attacks and body:
                case.field = rng.choice(list(body))
                body[case.field] = json_junk(rng)
            elif "missing" in attacks and body:
                case.field = rng.choice(list(body))
                del body[case.field]
            elif "field" in attacks:
                body[rng.choice(["zzz", "name", "arguments"])] = json_junk(rng)
            case.body = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
            case.headers.append(("Content-Type", "application/json"))
        if "framing" in attacks and case.declared_length is None:
            self._framing(rng, case)
        if "size" in attacks and not case.chunked:
            if rng.random() < 0.5 or not big:
                case.declared_length = rng.choice([25 * 1024 * 1024, 2**40, 2**63 - 1])
                case.body = b""
            else:
                case.body = b'{"a":"' + b"b" * rng.choice([1 << 20, 3 << 20]) + b'"}'
        return case

    def _framing(self, rng: random.Random, case: Case) -> None:
        """Unusual or broken HTTP framing: old versions, chunked bodies (some broken), a request
        target in absolute form, a lowercase method, conflicting lengths."""
        pick = rng.randrange(7)
        if pick == 0:
            case.version = rng.choice(["HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1x", "HTTPS/1.1"])
        elif pick in (1, 2):
            body = case.body
            cut = rng.randrange(len(body) + 1)
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:cut], body[cut:]) if c)
            case.body = chunks + rng.choice([b"0\r\n\r\n", b"0\r\n\r\n", b"zz\r\n\r\n", b"-1\r\n\r\n",
                                              b"0;ext=1\r\nX-Trailer: t\r\n\r\n"])
            case.chunked = True
            case.headers.append(("Transfer-Encoding", rng.choice(["chunked", "chunked", "gzip, chunked"])))
        elif pick == 3:
            case.target = "http://fuzz" + case.target
        elif pick == 4:
            case.method = case.method.lower()
        elif pick == 5:
            case.headers.append(("Content-Length", str(len(case.body) + 1)))
        else:
            case.headers.append(("Host", "other"))

    def route_of(self, raw_segments: list[str]) -> tuple[str, ...] | None:
        """The pattern a path's raw segments match, the listener's way (the first that matches)."""
        segs = [urllib.parse.unquote(x) for x in raw_segments]
        for pat, _methods in self.routes:
            if len(pat) == len(segs) and all(p[0] == ":" or p == x for p, x in zip(pat, segs)):
                return pat
        return None

    def _query(self, rng: random.Random) -> str:
        keys = ["page", "page_size", "sort", "sort_reverse", "columns", "name", "use_regex", "lengths_age",
                "lengths_incr", "msg_rates_age", "msg_rates_incr", "data_rates_age", "data_rates_incr",
                "if-unused", "if-empty", "exchange", "vhost", "interval", "watch", "disable_stats",
                "enable_queue_totals", "pagination"]
        vals = ["", "-1", "0", "1", "2", "abc", "1e999", "nan", "inf", "-inf", "99999999999999999999", "true",
                "TRUE", "%zz", "%00", "%FF", "name", "name.x.y", "message_stats.publish_details.rate",
                "name,vhost,arguments.x", ",,,", "(a*)*b", "[", ".*", "a" * 3000, "%2F", "/api/overview",
                "/api/events", "/api/queues/%2F?page=1", "\u00e9", "1.5", "0x10", "%ED%A0%80", "a.b.c.d.e.f.g",
                "name," * 500, "-0", "1_000"]
        parts = []
        for _ in range(rng.randrange(1, 5)):
            k = rng.choice(keys)
            r = rng.random()
            if r < 0.1:
                parts.append(k)  # no '='
            elif r < 0.15:
                parts.append("=" + rng.choice(vals))
            else:
                parts.append(f"{k}={rng.choice(vals)}")
        return "&".join(parts) if rng.random() < 0.9 else ";".join(parts)

    def _auth(self, rng: random.Random) -> str:
        return rng.choice([
            "", "Basic", "Basic ", "Basic !!!!", "Basic " + base64.b64encode(b"nocolon").decode(),
            "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), _basic(FUZZ_USER, "wrong"),
            _basic("nobody", "x"), _basic("fuzz-user", "wrong"), _basic("", ""), "Bearer abc.def.ghi",
            "Basic " + base64.b64encode(b"\x00:\x00").decode(), "basic " + base64.b64encode(b"a:b").decode(),
            "Basic " + "QUFB" * 1500, _basic("x" * 300, "y"), "Digest username=x",
        ])

    def _headers(self, rng: random.Random, big: bool) -> list[tuple[str, str]]:
        return rng.choice([
            [("X-Big", "h" * rng.choice([1000, 8000, 9000, 70000 if big else 20000]))],
            [(f"X-H{i}", "v") for i in range(rng.choice([50, 150, 300]))],
            [("Content-Type", "text/plain; charset=\u00ff")],
            [("Content-Type", "multipart/form-data; boundary=zz")],
            [("Content-Encoding", "gzip")],
            [("Transfer-Encoding", "identity")],
            [("Expect", "100-continue")],
            [("Connection", "close")],
            [("Accept", "*/*;q=nan")],
            [("X-Forwarded-For", "1.2.3.4")],
        ])

    def _bad_json(self, rng: random.Random, big: bool) -> bytes:
        return rng.choice([
            b"{", b"}", b"[]", b"[1,2]", b"null", b"1", b'"str"', b"{'single': 1}", b'{"a":}', b'{"a":1,}',
            b"\xff\xfe{}", b'{"a":"\xc3\x28"}', b"\x00", b'{"a": NaN}', b'{"a": Infinity}',
            b'{"a":1}{"b":2}', b"[" * 100_000 + b"]" * 100_000 if big else b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 200 + b"1" + b"}" * 200, b'{"a": 1' + b"0" * 5000 + b"}", b"true",
        ])


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- the client ---------------------------------------------------------------------------

@dataclass
class Answer:
    status: int  # 0: none
    headers: dict[str, str]
    body: bytes
    seconds: float
    problem: str | None = None  # "no answer", "dropped", ...
    started: bool = False  # some bytes of an answer came before the problem


class RawClient:
    """One keep-alive connection that sends requests as raw bytes and reads one answer each."""

    def __init__(self, host: str, port: int, timeout: float, source: str | None = None) -> None:
        self.addr = (host, port)
        self.timeout = timeout
        self.source = source  # the local address to connect from (default: any)
        self.sock: socket.socket | None = None
        self.buf = b""
        self.got_bytes = False  # some of the current answer has arrived
        self.keepalive_closes = 0  # kept-alive connections the server closed before a request

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf = b""

    def send(self, case: Case) -> Answer:
        reused = self.sock is not None
        ans = self._send(case)
        if reused and ans.problem is not None and ans.problem.startswith("connection dropped") and not ans.started:
            # the server may close a kept-alive connection between two requests (HTTP allows it):
            # a client sends again on a new one; a new connection dropped without an answer is a failure
            self.keepalive_closes += 1
            ans = self._send(case)
        return ans

    def _send(self, case: Case) -> Answer:
        t0 = time.monotonic()
        if self.sock is None:
            try:
                self.sock = socket.create_connection(self.addr, timeout=self.timeout,
                                                     source_address=(self.source, 0) if self.source else None)
            except OSError as e:
                return Answer(0, {}, b"", time.monotonic() - t0, f"cannot connect ({e!r})")
        self.got_bytes = False
        try:
            self.sock.sendall(case.wire())
        except OSError:
            pass  # the server may answer (413, 431) and close before reading it all: read the answer
        try:
            ans = self._read(case.method == "HEAD", t0)
        except TimeoutError:
            self.close()
            return Answer(0, {}, b"", time.monotonic() - t0, f"no answer within {self.timeout:g} s")
        except (ConnectionError, EOFError, OSError) as e:
            started = self.got_bytes
            self.close()
            return Answer(0, {}, b"", time.monotonic() - t0, f"connection dropped without an answer ({e!r})",
                          started)
        if ans.headers.get("connection", "").lower() == "close" or case.declared_length is not None \
                or ans.headers.get("content-type", "").startswith("text/event-stream"):
            self.close()
        return ans

    def _recv(self) -> None:
        assert self.sock is not None
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed by the server")
        self.got_bytes = True
        self.buf += data

    def _read(self, head_only: bool, t0: float) -> Answer:
        status = 100
        while 100 <= status < 200:  # interim answers (100 Continue) come before the answer
            while b"\r\n\r\n" not in self.buf:
                self._recv()
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        if headers.get("content-type", "").startswith("text/event-stream"):
            return Answer(status, headers, b"", time.monotonic() - t0)  # a stream: its head is the answer
        body = b""
        if head_only or status in (204, 304):
            pass
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._recv()
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                while b"\r\n" not in self.buf:
                    self._recv()
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                n = int(size_line.split(b";")[0], 16)
                while len(self.buf) < n + 2:
                    self._recv()
                body += self.buf[:n]
                self.buf = self.buf[n + 2:]
                if n == 0:
                    break
        else:  # to the end of the connection
            try:
                while True:
                    self._recv()
            except EOFError:
                pass
            body, self.buf = self.buf, b""
            self.close()
        return Answer(status, headers, body, time.monotonic() - t0)


# -- the verdict --------------------------------------------------------------------------

def verdict(case: Case, ans: Answer, answer_within: float) -> str | None:
    """What is wrong with ``ans`` as the answer to ``case``, or None."""
    if ans.problem is not None:
        return ans.problem
    if ans.seconds > answer_within:
        return f"answered {ans.status} after {ans.seconds:.2f} s (limit {answer_within:g} s)"
    if ans.status >= 500:
        if ans.status == 503 and case.route == EVENT_STREAM:
            return None  # too many event streams open: RabbitMQ-shaped and by design
        if ans.status == 503 and case.route is not None and case.route[:2] == ("api", "health") \
                and b'"status":"failed"' in ans.body:
            return None  # a failing health check answers 503, as RabbitMQ's do
        return f"server error {ans.status}: {ans.body[:300]!r}"
    if ans.status < 200 or 300 <= ans.status < 400:
        return f"unexpected status {ans.status}"
    if ans.status >= 400 and case.method != "HEAD" and ans.body:
        try:
            err = json.loads(ans.body)
        except ValueError:
            err = None
        from_app = ans.headers.get("content-type", "").startswith("application/json")
        if from_app and not (isinstance(err, dict) and isinstance(err.get("error"), str)
                             and isinstance(err.get("reason"), str)):
            return f"{ans.status} without RabbitMQ's error shape: {ans.body[:200]!r}"
    expected = _expected(case)
    if expected is not None and ans.status not in expected:
        return f"expected one of {sorted(expected)} for {'+'.join(case.attacks)}, got {ans.status}: {ans.body[:200]!r}"
    if case.field is not None and ans.status == 400 and case.attacks in (["field"], ["missing"]):
        reason = _reason(ans)
        # a limit's {"value": N} is named by the limit in the path, as RabbitMQ does ("max-queues should be...")
        names = [case.field] + ([urllib.parse.unquote(case.target.split("?")[0].rsplit("/", 1)[-1])]
                                if case.field == "value" else [])
        value = json.loads(case.body).get(case.field) if "field" in case.attacks else None
        if isinstance(value, dict):  # naming a key inside the field is naming it more precisely
            names += [f"'{n}'" for k in value for n in (k, repr(k)[1:-1])]
        # RabbitMQ's own words, kept: its parameter validation ("Validation failed\n\nno policy
        # provided") and a redeclare that differs ("inequivalent arg 'x-max-length'")
        rabbit_words = reason is not None and (reason.startswith("Validation failed") or "inequivalent arg" in reason)
        if reason is not None and not rabbit_words and not any(n in reason for n in names):
            return f"{UNNAMED_FIELD} {case.field!r} does not name it: {reason[:200]!r}"
    return None


UNNAMED_FIELD = "400 for field"


def _valid_twin(case: Case) -> Case | None:
    """``case`` with the template body it mutated: if that is accepted, the field was the fault."""
    if case.valid_body is None:
        return None
    twin = Case(case.key + "-twin", case.method, case.target, list(case.headers), case.valid_body, case.route,
                ["valid"])
    return twin


def _reason(ans: Answer) -> str | None:
    try:
        err = json.loads(ans.body)
    except ValueError:
        return None
    return err.get("reason") if isinstance(err, dict) else None


def _expected(case: Case) -> set[int] | None:
    """The statuses an attack allows, where the attack alone decides (None: any 2xx/4xx).

    The order is the listener's: body size, route (404), method (405), login (401);
    before all of them the HTTP parser may refuse a request head it cannot parse (400,
    or 413/431 for huge headers).  A hostile path segment alone decides nothing: it may
    be a valid name."""
    a = set(case.attacks)
    if "framing" in a:
        return None  # the parser may refuse it (400, 505), or take it as it is
    head = {400, 413, 431} if "headers" in a else {400}
    if "size" in a and case.declared_length is not None:
        return {413} | head
    if case.route is None:
        return {404} | head
    if "method" in a:
        return {405} | head
    if "auth" in a:
        return {401} | head
    if a == {"json"} and case.method in ("PUT", "POST"):
        return {400, 404, 403, 413}
    return None


# -- a run --------------------------------------------------------------------------------

@dataclass
class Report:
    """What a run of cases saw."""

    requests: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    slow: list[tuple[float, str]] = field(default_factory=list)  # the 5 slowest: (seconds, case key)

    def add(self, case: Case, ans: Answer, problem: str | None, base: str) -> None:
        self.requests += 1
        self.statuses[ans.status] = self.statuses.get(ans.status, 0) + 1
        self.slowest = max(self.slowest, ans.seconds)
        self.slow = sorted(self.slow + [(ans.seconds, f"{case.key} {case.method} {case.target[:80]}")],
                           reverse=True)[:5]
        if problem is not None:
            self.failures.append(f"{problem}\n    {case.reproducer(base)}")

    def histogram(self) -> str:
        return "  ".join(f"{s or 'none'}:{n}" for s, n in sorted(self.statuses.items()))


def _throttle_free_source(index: int) -> str:
    """A loopback address of its own for a case with bad credentials: the login throttle delays
    an address's refusals after a few failures (by design, tested elsewhere), and the fuzzer
    wants to see the handlers' answers, not the throttle's delay."""
    return f"127.{100 + (index >> 16) % 100}.{(index >> 8) & 255}.{index & 255}"


def run_cases(host: str, port: int, maker: CaseMaker, indices: Iterable[int], threads: int, answer_within: float,
              big: bool = False, deadline: float | None = None) -> Report:
    """Send the cases ``indices`` over ``threads`` keep-alive connections; judge every answer.

    A case answered later than ``answer_within`` is sent once more on its own connection
    and fails only if it is slow again (the machine may be busy; a hang is slow twice)."""
    import threading

    report = Report()
    lock = threading.Lock()
    base = f"http://{host}:{port}"
    todo = iter(indices)
    t0 = time.monotonic()

    def worker() -> None:
        client = RawClient(host, port, timeout=max(10.0, answer_within * 5))
        try:
            while deadline is None or time.monotonic() < deadline:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                case = maker.make(i, big)
                source = _throttle_free_source(i) if "auth" in case.attacks else None
                one = client if source is None else RawClient(host, port, max(10.0, answer_within * 5), source)
                ans = one.send(case)
                if one is not client:
                    one.close()
                problem = verdict(case, ans, answer_within)
                twin = _valid_twin(case) if problem and problem.startswith(UNNAMED_FIELD) else None
                if twin is not None and not 200 <= client.send(twin).status < 300:
                    problem = None  # the request fails for another reason (e.g. no such vhost)
                elif twin is not None:  # the twin passed: unless another connection just created
                    problem = verdict(case, client.send(case), answer_within)  # what was missing
                if problem is not None and ans.problem is None and ans.seconds > answer_within:
                    again = RawClient(host, port, max(10.0, answer_within * 5), source)
                    ans2 = again.send(case)
                    again.close()
                    problem = verdict(case, ans2, answer_within)
                    if problem is not None:
                        problem += f" (slow twice: {ans.seconds:.2f} s, then {ans2.seconds:.2f} s)"
                with lock:
                    report.add(case, ans, problem, base)
        finally:
            client.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    report.seconds = time.monotonic() - t0
    return report


class Canary:
    """An AMQP client that publishes persistent messages with confirms and gets them back, in
    a thread, for as long as the fuzzing runs: it counts losses and keeps the worst round trip."""

    def __init__(self, host: str, port: int, queue: str = "canary-q") -> None:
        import threading

        self.host, self.port, self.queue = host, port, queue
        self.sent = self.received = 0
        self.lost: list[int] = []
        self.worst = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Canary":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        import pika

        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters(
                self.host, self.port, CANARY_VHOST, pika.PlainCredentials(CANARY_USER, CANARY_PASSWORD),
                connection_attempts=1, heartbeat=30))
            ch = conn.channel()
            ch.confirm_delivery()
            ch.queue_declare(self.queue, durable=True)
            props = pika.BasicProperties(delivery_mode=2)
            while not self._stop.is_set():
                t0 = time.monotonic()
                seq = self.sent
                ch.basic_publish("", self.queue, str(seq).encode(), props)  # raises if nacked
                self.sent += 1
                got = None
                while got is None:
                    method, _props, body = ch.basic_get(self.queue, auto_ack=True)
                    if method is not None:
                        got = int(body)
                if got != seq:
                    self.lost.append(seq)
                self.received += 1
                self.worst = max(self.worst, time.monotonic() - t0)
                time.sleep(0.01)
            conn.close()
        except BaseException as e:  # reported by the test
            self.error = e
