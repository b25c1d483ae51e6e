"""Hostile input against files, logs and logins (issue 16, "files and logs").

Each test talks to a real ``broker serve`` subprocess:

- the data dir is 0700 and every file in it 0600, whatever the umask;
- a symbolic link planted as ``broker.lock`` or ``definitions.json.tmp`` is never
  written through;
- a user name (or vhost, queue name, close text) with a newline cannot forge a log line;
- wrong passwords from one address get slower, over AMQP and HTTP basic auth, while
  other clients (and correct logins from the same address) stay fast, and they are
  counted in ``/metrics``;
- a read-only or unusable data dir is reported as such at start, not as a listen error.
"""

from __future__ import annotations

import base64
import http.client
import os
import re
import stat
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pika
import pytest
from pamqp import commands as C

from amqp_raw import RawClient
from conftest import _make

FORGED = "2030-01-01 00:00:00,000 WARNING broker.server: FORGED"
FORGED_HTTP = "2030-01-01 WARNING broker.server FORGED over http"


# -- helpers -----------------------------------------------------------------------


def start_with_umask(b, umask: int):
    """Start a broker whose process runs with ``umask`` (a child inherits it)."""
    old = os.umask(umask)
    try:
        return b.start()
    finally:
        os.umask(old)


def modes_under(root: Path) -> dict[str, int]:
    """Permission bits of the root and everything under it, by relative path."""
    out = {".": stat.S_IMODE(root.lstat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def connect(port: int, user: str = "guest", password: str = "guest", vhost: str = "/") -> pika.BlockingConnection:
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", port, vhost, pika.PlainCredentials(user, password),
                                  connection_attempts=1, socket_timeout=15, blocked_connection_timeout=15)
    )


def http_url(b, what: str) -> str:
    deadline = time.monotonic() + 10
    pattern = re.compile(rf"{what} listening on (http://[^\s/]+)")
    while time.monotonic() < deadline:
        m = pattern.findall(b.log_text())
        if m:
            return m[-1]
        time.sleep(0.05)
    raise AssertionError(f"no '{what} listening' line in the log")


def failed_auth_count(b, protocol: str) -> float:
    text = urllib.request.urlopen(http_url(b, "Prometheus metrics") + "/metrics", timeout=10).read().decode()
    m = re.search(rf'^rabbitmq_auth_attempts_failed_total\{{protocol="{protocol}"\}} (\S+)$', text, re.MULTILINE)
    assert m, "no rabbitmq_auth_attempts_failed_total for " + protocol
    return float(m.group(1))


def http_get(base: str, path: str, user: str, password: str, source: str = "127.0.0.1") -> int:
    host, port = base.removeprefix("http://").rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=15, source_address=(source, 0))
    try:
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        c.request("GET", path, headers={"Authorization": "Basic " + auth})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


class RoundTrips(threading.Thread):
    """Another client, looping while an attack runs; ``worst`` is its slowest cycle (s)."""

    def __init__(self, cycle) -> None:
        super().__init__(daemon=True)
        self.cycle = cycle
        self.stop_flag = threading.Event()
        self.times: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_flag.is_set():
                t0 = time.monotonic()
                self.cycle()
                self.times.append(time.monotonic() - t0)
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> float:
        self.stop_flag.set()
        self.join(30)
        assert self.error is None, f"the other client failed: {self.error!r}"
        assert self.times, "the other client made no round trip"
        return max(self.times)


def amqp_login_and_round_trip(port: int, queue: str):
    """A correct login from 127.0.0.1, then publish + get, then close."""

    def cycle() -> None:
        conn = connect(port)
        ch = conn.channel()
        ch.queue_declare(queue)
        ch.basic_publish("", queue, b"ping")
        m = ch.basic_get(queue, auto_ack=True)
        assert m[2] == b"ping"
        conn.close()

    return cycle


def refused_amqp(port: int, user: str, password: str) -> float:
    """Seconds until a login with a wrong password is refused."""
    t0 = time.monotonic()
    with pytest.raises((pika.exceptions.ProbableAuthenticationError, pika.exceptions.ConnectionClosedByBroker,
                        pika.exceptions.ProbableAccessDeniedError)):
        connect(port, user, password)
    return time.monotonic() - t0


def raw_login(port: int, password: str, source: str = "127.0.0.1") -> object:
    """Connection.Tune (login accepted) or Connection.Close (refused) for a raw PLAIN login."""
    with RawClient(port, timeout=15.0, source=source) as c:
        c.send(b"AMQP\x00\x00\x09\x01")
        c.expect(C.Connection.Start)
        c.send_method(0, C.Connection.StartOk(
            client_properties={"capabilities": {"authentication_failure_close": True}},
            mechanism="PLAIN", response=f"\0guest\0{password}", locale="en_US"))
        while True:
            f = c.read_frame()
            if f is None or isinstance(f[1], (C.Connection.Tune, C.Connection.Close)):
                return None if f is None else f[1]


# -- modes ---------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_data_dir_and_files_are_private_whatever_the_umask(tmp_path, umask):
    data = tmp_path / "new" / "data"  # the broker creates it
    b = _make(tmp_path, extra=["--data-dir", str(data)])
    start_with_umask(b, umask)
    try:
        conn = connect(b.port)
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare("durable-q", durable=True)  # definitions.json (and its temp file)
        for i in range(3):  # a segment file
            ch.basic_publish("", "durable-q", b"m%d" % i, pika.BasicProperties(delivery_mode=2))
        m = ch.basic_get("durable-q")  # the delivery watermark file
        ch.basic_ack(m[0].delivery_tag)  # an acks record in the segment
        ch.basic_get("durable-q")
        conn.close()
    finally:
        b.stop()
    modes = modes_under(data)
    names = {Path(p).name for p in modes}
    for expected in ("broker.lock", "definitions.json", "queues", "00000001.seg", "delivered"):
        assert expected in names, (expected, sorted(modes))
    wrong = {}
    for rel, mode in modes.items():
        want = 0o700 if (data / rel).is_dir() else 0o600
        if mode != want:
            wrong[rel] = oct(mode)
    assert not wrong, f"under umask {umask:03o}: {wrong}"


def test_an_existing_wide_data_dir_is_tightened_once(tmp_path):
    b = _make(tmp_path)
    b.data_dir.chmod(0o755)
    (b.data_dir / "definitions.json").write_text("{}")
    (b.data_dir / "definitions.json").chmod(0o644)
    b.start()
    try:
        assert stat.S_IMODE(b.data_dir.stat().st_mode) == 0o700
        lines = [ln for ln in b.log_text().splitlines() if "tightened" in ln]
        assert len(lines) == 1 and "0755" in lines[0] and "0700" in lines[0], lines
        conn = connect(b.port)
        conn.channel().queue_declare("saved-q", durable=True)  # the metadata file is rewritten
        conn.close()
        assert stat.S_IMODE((b.data_dir / "definitions.json").stat().st_mode) == 0o600
    finally:
        b.stop()
    b.start()  # already private: no second line
    b.stop()
    assert len([ln for ln in b.log_text().splitlines() if "tightened" in ln]) == 1


# -- planted symbolic links ----------------------------------------------------------


def test_a_planted_lock_file_link_is_refused_and_its_target_untouched(tmp_path):
    b = _make(tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("precious content\n")
    (b.data_dir / "broker.lock").symlink_to(target)
    with pytest.raises(RuntimeError) as ei:
        b.start()
    b.stop()
    text = str(ei.value)
    assert target.read_text() == "precious content\n"
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, text
    assert "broker.lock" in errors[0] and "symbolic link" in errors[0], errors[0]
    assert "cannot listen" not in text
    assert (b.data_dir / "broker.lock").is_symlink()  # left for the operator to look at


def test_a_planted_temp_file_link_is_replaced_not_written_through(tmp_path):
    b = _make(tmp_path).start()
    try:
        target = tmp_path / "precious.txt"
        target.write_text("precious content\n")
        tmp = b.data_dir / "definitions.json.tmp"
        tmp.symlink_to(target)
        conn = connect(b.port)
        conn.channel().queue_declare("after-the-link", durable=True)
        conn.close()
        assert target.read_text() == "precious content\n"
        defs = b.data_dir / "definitions.json"
        assert not defs.is_symlink()
        assert "after-the-link" in defs.read_text()
        assert not tmp.is_symlink()
    finally:
        b.stop()


# -- log lines -----------------------------------------------------------------------


def test_newlines_in_client_strings_do_not_forge_log_lines(fresh_broker):
    b = fresh_broker
    # a user name (login refused), a vhost name, a queue name, a client's close text
    refused_amqp(b.port, "evil\n" + FORGED + " user", "wrong")
    with pytest.raises((pika.exceptions.ProbableAccessDeniedError, pika.exceptions.ConnectionClosedByBroker)):
        connect(b.port, vhost="v\n" + FORGED + " vhost")
    conn = connect(b.port)
    ch = conn.channel()
    with pytest.raises(pika.exceptions.ChannelClosedByBroker):
        ch.queue_declare("q\n" + FORGED + " queue", passive=True)
    conn.close(reply_text="bye\n" + FORGED + " close")
    # an HTTP basic auth user name (which cannot hold a colon)
    base = http_url(b, "management API")
    assert http_get(base, "/api/whoami", "evil\n" + FORGED_HTTP, "wrong") == 401
    # ordinary Unicode stays readable
    refused_amqp(b.port, "用户", "wrong")
    time.sleep(0.5)
    log = b.log_text()
    forged = [ln for ln in log.splitlines() if ln.startswith((FORGED, FORGED_HTTP))]
    assert not forged, forged
    for what in ("user", "vhost", "queue", "close"):
        assert "\\n" + FORGED + " " + what in log, what
    assert "\\n" + FORGED_HTTP in log
    assert "用户" in log


def test_a_user_with_a_chinese_name_logs_in_and_is_logged_readably(fresh_broker):
    b = fresh_broker
    base = http_url(b, "management API")
    host, port = base.removeprefix("http://").rsplit(":", 1)
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(), "Content-Type": "application/json"}
    user = urllib.parse.quote("用户", safe="")
    for path, body in ((f"/api/users/{user}", '{"password": "密码", "tags": ""}'),
                       (f"/api/permissions/%2F/{user}", '{"configure": ".*", "write": ".*", "read": ".*"}')):
        c = http.client.HTTPConnection(host, int(port), timeout=15)
        c.request("PUT", path, body=body.encode(), headers=auth)
        assert c.getresponse().status in (201, 204)
        c.close()
    conn = connect(b.port, "用户", "密码")
    conn.channel().queue_declare("", exclusive=True)
    conn.close()
    assert "user '用户', vhost '/'" in b.log_text()


# -- failed logins -------------------------------------------------------------------


@pytest.mark.slow
def test_wrong_passwords_over_amqp_get_slower_but_others_stay_fast(fresh_broker):
    b = fresh_broker
    other = RoundTrips(amqp_login_and_round_trip(b.port, "other-client"))
    other.start()
    times = [refused_amqp(b.port, "guest", f"guess-{i}") for i in range(10)]
    worst = other.finish()
    print(f"refusal times (s): {[round(t, 3) for t in times]}; other client's worst cycle {worst * 1000:.0f} ms")
    assert times[0] < 0.5, times
    assert times[9] >= 1.0, times  # before: every refusal took a few ms
    assert times[9] > 5 * times[0], times
    assert worst < 1.0, f"another client's login + publish/get took {worst:.2f} s during the attack"
    assert failed_auth_count(b, "amqp091") == 10
    # a correct login from the attacking address is not delayed
    t0 = time.monotonic()
    connect(b.port).close()
    assert time.monotonic() - t0 < 0.5


@pytest.mark.slow
def test_many_parallel_wrong_passwords_from_one_address_are_capped(fresh_broker):
    """Delaying only the refusal is not enough against parallel guesses (a client
    could treat 'no answer yet' as 'wrong'): while many refusals from an address
    are pending, further logins from it are refused unchecked."""
    b = fresh_broker
    for i in range(10):  # the delay is now seconds
        raw_login(b.port, f"guess-{i}")
    results: list[object] = []
    attackers = [threading.Thread(target=lambda i=i: results.append(raw_login(b.port, f"p-{i}")))
                 for i in range(8)]
    for t in attackers:
        t.start()
    time.sleep(1.0)  # all eight are waiting for their (delayed) refusal
    t0 = time.monotonic()
    same = raw_login(b.port, "guest")  # the right password, from the busy address
    same_time = time.monotonic() - t0
    elsewhere = raw_login(b.port, "guest", source="127.0.0.2")  # another address
    for t in attackers:
        t.join(30)
    assert isinstance(same, C.Connection.Close) and same.reply_code == 403, same
    assert same_time < 0.5, same_time
    assert isinstance(elsewhere, C.Connection.Tune), elsewhere
    assert len(results) == 8 and all(isinstance(r, C.Connection.Close) for r in results), results


@pytest.mark.slow
def test_wrong_passwords_over_http_get_slower_but_others_stay_fast(fresh_broker):
    b = fresh_broker
    base = http_url(b, "management API")

    def overview() -> None:
        assert http_get(base, "/api/overview", "guest", "guest") == 200

    other = RoundTrips(overview)
    other.start()
    times = []
    for i in range(10):
        t0 = time.monotonic()
        assert http_get(base, "/api/whoami", "guest", f"guess-{i}") == 401
        times.append(time.monotonic() - t0)
    worst = other.finish()
    print(f"refusal times (s): {[round(t, 3) for t in times]}; other client's worst GET {worst * 1000:.0f} ms")
    assert times[0] < 0.5, times
    assert times[9] >= 1.0, times
    assert worst < 1.0, f"another client's GET took {worst:.2f} s during the attack"
    assert failed_auth_count(b, "http") == 10
    # other addresses are not slowed
    t0 = time.monotonic()
    assert http_get(base, "/api/whoami", "guest", "wrong", source="127.0.0.2") == 401
    assert time.monotonic() - t0 < 0.5


# -- unusable data dir ---------------------------------------------------------------


def _start_fails(b) -> str:
    with pytest.raises(RuntimeError) as ei:
        b.start()
    b.stop()
    return str(ei.value)


def _one_line_about(text: str, data: Path) -> None:
    assert text.startswith("broker exited with 1"), text
    errors = [ln for ln in text.splitlines() if " ERROR " in ln]
    assert len(errors) == 1, text
    assert f"cannot write to data directory {data}" in errors[0], errors[0]
    assert "cannot listen" not in text and "Traceback" not in text, text


def test_a_data_dir_under_a_regular_file_is_named_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = blocker / "data"
    _one_line_about(_start_fails(_make(tmp_path, extra=["--data-dir", str(data)])), data)


@pytest.fixture
def read_only_dir(tmp_path):
    mnt = tmp_path / "ro"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                       check=False, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here (needs root): {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("sub", ["", "data"])
def test_a_read_only_data_dir_is_named_at_start(tmp_path, read_only_dir, sub):
    data = read_only_dir / sub if sub else read_only_dir
    text = _start_fails(_make(tmp_path, extra=["--data-dir", str(data)]))
    _one_line_about(text, data)
    assert "Read-only file system" in text


# -- the login throttle in process -------------------------------------------------------


def test_login_throttle_delays_forgets_and_stays_bounded():
    from broker.login_throttle import LoginThrottle, source_of

    now = [1000.0]
    t = LoginThrottle(free_failures=2, base_delay=0.1, max_delay=1.0, forget_after=60.0, max_sources=3,
                      max_pending=2, clock=lambda: now[0])
    delays = [t.failed("10.0.0.1", "amqp091") for _ in range(8)]
    assert delays == [0.0, 0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert t.failed("10.0.0.2", "http") == 0.0  # another address starts free
    assert t.failed_total == {"amqp091": 8, "http": 1}
    now[0] += 59.0
    assert t.failed("10.0.0.1", "amqp091") == 1.0  # not quiet long enough
    now[0] += 60.0
    assert t.failed("10.0.0.1", "amqp091") == 0.0  # a quiet minute forgets
    for i in range(3, 10):  # the table keeps the 3 most recent sources
        t.failed(f"10.0.0.{i}", "amqp091")
    assert len(t._failures) == 3
    # IPv6 is tracked per /64; IPv4-mapped addresses as IPv4
    assert source_of("2001:db8::1") == source_of("2001:db8::ffff:2") == "2001:db8::/64"
    assert source_of("::ffff:10.0.0.1") == "10.0.0.1"
    # pending refusals cap an address, and only that address
    t.hold("10.0.0.1")
    assert not t.busy("10.0.0.1")
    t.hold("::ffff:10.0.0.1")
    assert t.busy("10.0.0.1") and not t.busy("10.0.0.2")
    t.release("10.0.0.1")
    assert not t.busy("10.0.0.1")
    t.release("10.0.0.1")
    assert t._pending == {}
