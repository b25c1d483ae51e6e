"""User-supplied patterns must never freeze the broker.

Three requests used to stall every client for seconds (each measured as
another client's publish + basic.get round trip while the attack runs):
a permission regex with catastrophic backtracking (``(a+)+$``) checked
against a queue name, a ``use_regex`` list filter in the management API, and
a topic binding key with many ``#`` against a long routing key.  Regexes now
run on RE2 (linear time) and topic matching is memoised, so the other
client's worst round trip stays small.  The in-process tests at the end
compare the topic matcher with a simple reference matcher.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from collections.abc import Callable

import pika
import pika.exceptions
import pytest

from broker.exchange import Binding, TopicExchange
from conftest import _make
from test_management_api import Http, connect, mgmt_url

# Before the fixes each attack below stalled the loop for several seconds.
WORST_ROUND_TRIP = 0.75


@pytest.fixture(scope="module")
def hb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("hostile-patterns"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


class RoundTrips:
    """Another client doing publish + basic.get round trips in a thread; ``worst`` is the slowest."""

    def __init__(self, b, queue: str) -> None:
        self.conn = connect(b)
        self.ch = self.conn.channel()
        self.ch.queue_declare(queue, auto_delete=True)
        self.queue = queue
        self.worst = 0.0
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            self.ch.basic_publish("", self.queue, b"ping")
            method, _props, _body = self.ch.basic_get(self.queue, auto_ack=True)
            assert method is not None
            self.worst = max(self.worst, time.monotonic() - t0)
            self.count += 1

    def __enter__(self) -> "RoundTrips":
        self._thread.start()
        while self.count < 20:  # warmed up
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(120)
        self.conn.close()


def attack_while_measuring(b, uid: str, attack: Callable[[], None]) -> float:
    """Run ``attack`` while another client measures round trips; the worst round trip."""
    with RoundTrips(b, f"rt{uid}") as rt:
        t0 = time.monotonic()
        attack()
        took = time.monotonic() - t0
        n = rt.count
        while rt.count < n + 5:  # round trips after the attack too: a stall ends inside one of them
            time.sleep(0.01)
    print(f"attack took {took:.3f} s; another client's worst round trip {rt.worst * 1000:.1f} ms")
    return rt.worst


def test_permission_regex_cannot_freeze_the_broker(hb, uid):
    api = Http(hb.url)
    user = f"evil{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": "(a+)+$", "write": ".*", "read": ".*"})
    attacker = connect(hb, user, "pw", blocked_connection_timeout=60)

    def attack() -> None:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as ei:
            attacker.channel().queue_declare("a" * 23 + "!")
        assert ei.value.reply_code == 403

    try:
        assert attack_while_measuring(hb, uid, attack) < WORST_ROUND_TRIP
        attacker.channel().queue_declare("a" * 23, auto_delete=True)  # what the regex allows still works
    finally:
        attacker.close()


def test_regex_list_filter_cannot_freeze_the_broker(hb, uid):
    api = Http(hb.url)
    user = f"mon{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": "monitoring"})
    mon = api.as_user(user, "pw")
    pattern = urllib.parse.quote("(?:.|.|.|.|.)*Z")

    def attack() -> None:
        r = mon.get(f"/api/exchanges?name={pattern}&use_regex=true")
        assert r.status == 200 and r.json == [], r

    assert attack_while_measuring(hb, uid, attack) < WORST_ROUND_TRIP
    names = [x["name"] for x in mon.get("/api/exchanges?name=^amq\\.(?:fan|dir)&use_regex=true").json]
    assert names == ["amq.direct", "amq.fanout"]


def test_costly_filter_over_a_long_list_is_cut_short(hb, uid):
    """RE2 is linear, but some patterns still cost milliseconds per name: the filter has a time budget."""
    api = Http(hb.url)
    vhost = f"many{uid}"
    api.ok("PUT", f"/api/vhosts/{vhost}")
    api.ok("PUT", f"/api/permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"})
    conn = connect(hb, vhost=vhost)
    ch = conn.channel()
    for n in range(400):
        ch.queue_declare(f"q{n:04}-" + "ab" * 120)
    conn.close()
    pattern = urllib.parse.quote("(?:.*a|.*b|.*c){300}")

    def attack() -> None:
        r = api.get(f"/api/queues/{vhost}?name={pattern}&use_regex=true")
        assert r.status == 400 and "'name'" in r.json["reason"] and "simpler" in r.json["reason"], r

    try:
        assert attack_while_measuring(hb, uid, attack) < WORST_ROUND_TRIP
        assert len(api.get(f"/api/queues/{vhost}?name=^q00[0-4]&use_regex=true").json) == 50
    finally:
        api.delete(f"/api/vhosts/{vhost}")


def test_topic_binding_cannot_freeze_the_broker(hb, uid):
    api = Http(hb.url)
    user = f"plain{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
    api.ok("PUT", f"/api/permissions/%2F/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
    attacker = connect(hb, user, "pw", blocked_connection_timeout=60)
    try:
        ch = attacker.channel()
        q = ch.queue_declare(f"tq{uid}", auto_delete=True).method.queue
        ch.queue_bind(q, "amq.topic", "#.#.#.#.#.#.#.#.z")
        ch.confirm_delivery()

        def attack() -> None:
            ch.basic_publish("amq.topic", ".".join(["w"] * 22), b"x")  # confirmed: returns after routing
            ch.basic_publish("amq.topic", ".".join(["w"] * 22 + ["z"]), b"y")

        assert attack_while_measuring(hb, uid, attack) < WORST_ROUND_TRIP
        _method, _props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"y"
        assert ch.basic_get(q)[0] is None
    finally:
        attacker.close()


# -- patterns RE2 cannot run are refused where they are set ---------------------------------------

@pytest.mark.parametrize("field, pattern", [
    ("configure", "^(?!amq\\.)"),  # lookahead
    ("write", "(a)\\1"),  # backreference
    ("read", "("),  # not a regex at all
    ("read", "a" * 5000),  # too long
])
def test_unsupported_permission_regex_is_refused(hb, uid, field, pattern):
    api = Http(hb.url)
    user = f"re{uid}"
    api.ok("PUT", f"/api/users/{user}", {"password": "pw", "tags": ""})
    perms = {"configure": ".*", "write": ".*", "read": ".*"}
    api.ok("PUT", f"/api/permissions/%2F/{user}", perms)
    r = api.put(f"/api/permissions/%2F/{user}", dict(perms, **{field: pattern}))
    assert r.status == 400 and r.json["error"] == "bad_request", r
    assert f"'{field}'" in r.json["reason"] and "regular expression" in r.json["reason"], r
    assert api.get(f"/api/permissions/%2F/{user}").json == {"user": user, "vhost": "/", **perms}


def test_unsupported_permission_regex_is_reported_at_import(hb, uid):
    api = Http(hb.url)
    good, bad = f"good{uid}", f"bad{uid}"
    defs = {
        "users": [{"name": n, "password": "pw", "tags": ""} for n in (good, bad)],
        "permissions": [
            {"user": good, "vhost": "/", "configure": "^x", "write": ".*", "read": ".*"},
            {"user": bad, "vhost": "/", "configure": ".*", "write": "^(?=a)", "read": ".*"},
        ],
    }
    r = api.post("/api/definitions", defs)
    assert r.status == 400 and bad in r.json["reason"] and "'write'" in r.json["reason"], r
    assert api.get(f"/api/permissions/%2F/{good}").status == 200
    assert api.get(f"/api/permissions/%2F/{bad}").status == 404


@pytest.mark.parametrize("pattern", ["(", "(?<=a)b", "x" * 5000])
def test_unsupported_filter_regex_is_refused(hb, pattern):
    r = Http(hb.url).get(f"/api/queues?name={urllib.parse.quote(pattern)}&use_regex=true")
    assert r.status == 400 and r.json["error"] == "bad_request", r
    assert "'name'" in r.json["reason"] and "regular expression" in r.json["reason"], r


# -- topic matching, in process --------------------------------------------------------------------

def reference_topic_match(binding_key: str, routing_key: str) -> bool:
    """RabbitMQ's semantics, written plainly: ``*`` is one word, ``#`` zero or more."""
    b = binding_key.split(".") if binding_key else []
    r = routing_key.split(".") if routing_key else []

    def m(i: int, j: int) -> bool:
        if i == len(b):
            return j == len(r)
        if b[i] == "#":
            return any(m(i + 1, k) for k in range(j, len(r) + 1))
        return j < len(r) and (b[i] == "*" or b[i] == r[j]) and m(i + 1, j + 1)

    return m(0, 0)


def topic_exchange(binding_keys: list[str]) -> TopicExchange:
    x = TopicExchange(None, "t")
    for n, key in enumerate(binding_keys):
        x.add_binding(Binding(x, f"q{n}", key, {}))
    return x


def random_key(rng: random.Random, words: list[str], max_words: int) -> str:
    return ".".join(rng.choice(words) for _ in range(rng.randint(0, max_words)))


def test_topic_matcher_agrees_with_the_reference():
    rng = random.Random(16)
    binding_words = ["a", "b", "", "*", "#", "#", "*"]
    routing_words = ["a", "b", "", "c", "*", "#"]
    for _round in range(300):
        keys = list({random_key(rng, binding_words, 6) for _ in range(rng.randint(1, 12))})
        x = topic_exchange(keys)
        if rng.random() < 0.3:  # unbinding prunes the trie: the rest must still match
            for key in rng.sample(keys, rng.randint(1, len(keys))):
                x.remove_binding(Binding(x, f"q{keys.index(key)}", key, {}))
                keys[keys.index(key)] = None
        for _ in range(40):
            rk = random_key(rng, routing_words, 8)
            want = {f"q{n}" for n, key in enumerate(keys) if key is not None and reference_topic_match(key, rk)}
            assert set(x.match(rk, None)) == want, (keys, rk)
            assert set(x.match(rk, None)) == want, (keys, rk)  # from the cache


def test_topic_match_of_a_long_key_is_fast():
    x = topic_exchange(["#.#.#.#.#.#.#.#.z", "#.*.#.*.#.*.#.*.#.*.#.*.#.*.#.y", "*.#.*.#.#.#.#.#.#.#.#.#.#.#.#.#.#.x"])
    for rk in ("w." * 127 + "w", "." * 254, "a.b" * 63 + "." + "z"):
        assert len(rk) <= 255
        best = float("inf")
        for n in range(5):
            x.cache.clear()
            t0 = time.perf_counter()
            x.match(rk + str(n), None)
            best = min(best, time.perf_counter() - t0)
        print(f"{len(rk.split('.'))} words: {best * 1e6:.0f} us")
        assert best < 0.01


def test_topic_result_cache_is_bounded():
    x = topic_exchange(["a.#", "*.b"])
    for n in range(3 * TopicExchange.CACHE_MAX):
        x.match(f"a.{n}", None)
    assert len(x.cache) <= TopicExchange.CACHE_MAX
