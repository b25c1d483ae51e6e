"""The admin verbs of the ``broker`` command (rabbitmqctl's), run as subprocesses
(``python -m cli ...`` from the repo root) against a running broker's management API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pika
import pika.exceptions
import pytest

from conftest import ROOT, _make, free_port
from test_management_api import MGMT_LINE, Http, connect, mgmt_url, wait_for


@pytest.fixture(scope="module")
def cb(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("cli-broker"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    yield b
    b.stop()


def run(args, url=None, env=None, input=None, check=None):
    e = dict(os.environ)
    e.pop("BROKER_URL", None)
    e.pop("BROKER_USER", None)
    e.pop("BROKER_PASS", None)
    e["PYTHONPATH"] = str(ROOT)
    if url is not None:
        e["BROKER_URL"] = url
    if env:
        e.update(env)
    r = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=e, capture_output=True, text=True,
                       input=input, timeout=60)
    if check is True:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.strip().splitlines()]


@pytest.fixture
def cli(cb):
    return lambda *args, **kw: run(list(args), url=cb.url, check=kw.pop("check", True), **kw)


def test_users_verbs(cli, cb, uid):
    u = f"u{uid}"
    r = cli("add-user", u, "pw1", "--tags", "monitoring")
    assert f'Adding user "{u}"' in r.stdout
    r = cli("add-user", u, "pw1", check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"Error: user '{u}' already exists"
    rows = table(cli("list-users").stdout)
    assert rows[0] == ["user", "tags"] and [u, "[monitoring]"] in rows
    listed = json.loads(cli("list-users", "--json").stdout)
    assert {"user": u, "tags": ["monitoring"]} in listed
    cli("set-user-tags", u, "administrator", "management")
    assert Http(cb.url).get(f"/api/users/{u}").json["tags"] == ["administrator", "management"]
    assert Http(cb.url, u, "pw1").get("/api/whoami").status == 200
    cli("set-permissions", u, ".*", ".*", ".*")
    conn = connect(cb, u, "pw1")
    cli("change-password", u, "pw2")
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
        conn.process_data_events(time_limit=2)
        conn.channel()
    assert Http(cb.url, u, "pw1").get("/api/whoami").status == 401
    assert Http(cb.url, u, "pw2").get("/api/whoami").status == 200
    cli("set-user-tags", u)
    assert Http(cb.url).get(f"/api/users/{u}").json["tags"] == []
    cli("delete-user", u)
    r = cli("delete-user", u, check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"Error: user '{u}' does not exist"
    for verb in (("change-password", u, "x"), ("set-user-tags", u, "a")):
        r = cli(*verb, check=False)
        assert r.returncode == 1 and f"user '{u}' does not exist" in r.stderr


def test_vhost_and_permission_verbs(cli, cb, uid):
    vh, u = f"vh{uid}", f"pu{uid}"
    assert f'Adding vhost "{vh}"' in cli("add-vhost", vh, "--description", "for tests").stdout
    rows = table(cli("list-vhosts").stdout)
    assert rows[0] == ["name"] and [vh] in rows and ["/"] in rows
    assert {"name": vh, "description": "for tests"} in json.loads(cli("list-vhosts", "--json", "name",
                                                                      "description").stdout)
    cli("add-user", u, "pw")
    cli("set-permissions", "-p", vh, u, "^c", "^w", "^r")
    rows = table(cli("list-permissions", "-p", vh).stdout)
    assert rows == [["user", "configure", "write", "read"], [u, "^c", "^w", "^r"]]
    assert json.loads(cli("list-permissions", "-p", vh, "--json").stdout) == [
        {"user": u, "configure": "^c", "write": "^w", "read": "^r"}]
    connect(cb, u, "pw", vhost=vh).close()
    cli("clear-permissions", "-p", vh, u)
    assert table(cli("list-permissions", "-p", vh).stdout) == [["user", "configure", "write", "read"]]
    cli("clear-permissions", "-p", vh, u)  # nothing to clear: fine, as rabbitmqctl
    r = cli("clear-permissions", "-p", vh, f"nobody{uid}", check=False)
    assert r.returncode == 1 and f"user 'nobody{uid}' does not exist" in r.stderr
    r = cli("set-permissions", "-p", vh, u, "(", ".*", ".*", check=False)
    assert r.returncode == 1 and "invalid regular expression" in r.stderr
    r = cli("set-permissions", "-p", f"novh{uid}", u, ".*", ".*", ".*", check=False)
    assert r.returncode == 1 and f"vhost 'novh{uid}' does not exist" in r.stderr
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        connect(cb, u, "pw", vhost=vh)
    cli("delete-vhost", vh)
    assert [vh] not in table(cli("list-vhosts").stdout)
    r = cli("delete-vhost", vh, check=False)
    assert r.returncode == 1 and r.stderr.strip() == f"Error: vhost '{vh}' does not exist"
    r = cli("list-queues", "-p", vh, check=False)
    assert r.returncode == 1 and f"vhost '{vh}' does not exist" in r.stderr


def test_listing_verbs(cli, cb, uid):
    qn, x = f"lq{uid}", f"lx{uid}"
    conn = connect(cb, client_properties={"connection_name": f"cli-{uid}"})
    try:
        ch = conn.channel()
        ch.exchange_declare(x, "topic", durable=True)
        ch.queue_declare(qn, durable=True, arguments={"x-max-length": 100})
        ch.queue_bind(qn, x, "a.*")
        for _i in range(3):
            ch.basic_publish(x, "a.b", b"m")
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(qn, lambda *a: None, consumer_tag=f"ct{uid}")
        conn.process_data_events(time_limit=0.3)
        wait_for(lambda: Http(cb.url).get(f"/api/queues/%2F/{qn}").json["messages_unacknowledged"] == 1,
                 what="one unacked")
        rows = table(cli("list-queues").stdout)
        assert rows[0] == ["name", "messages"] and [qn, "3"] in rows
        rows = table(cli("list-queues", "name", "messages_ready", "messages_unacknowledged", "consumers",
                         "durable", "auto_delete", "exclusive", "arguments").stdout)
        assert rows[0] == ["name", "messages_ready", "messages_unacknowledged", "consumers", "durable",
                           "auto_delete", "exclusive", "arguments"]
        assert [qn, "2", "1", "1", "true", "false", "false", '{"x-max-length":100}'] in rows
        js = json.loads(cli("list-queues", "--json", "name", "messages", "-p", "/").stdout)
        assert {"name": qn, "messages": 3} in js
        r = cli("list-queues", "bogus", check=False)
        assert r.returncode == 2 and "unknown column 'bogus'" in r.stderr
        rows = table(cli("list-exchanges").stdout)
        assert rows[0] == ["name", "type"] and [x, "topic"] in rows and ["amq.fanout", "fanout"] in rows
        rows = table(cli("list-exchanges", "name", "durable", "internal").stdout)
        assert [x, "true", "false"] in rows
        rows = table(cli("list-bindings").stdout)
        assert rows[0] == ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key",
                           "arguments"]
        assert [x, "exchange", qn, "queue", "a.*", "{}"] in rows
        js = json.loads(cli("list-bindings", "--json", "source_name", "routing_key").stdout)
        assert {"source_name": x, "routing_key": "a.*"} in js
        rows = table(cli("list-connections").stdout)
        assert rows[0] == ["user", "peer_host", "peer_port", "state"]
        assert any(r[0] == "guest" and r[1] == "127.0.0.1" and r[3] == "running" for r in rows[1:])
        js = json.loads(cli("list-connections", "--json", "name", "user", "vhost", "channels").stdout)
        assert any(c["user"] == "guest" and c["vhost"] == "/" and c["channels"] == 1 for c in js)
        rows = table(cli("list-consumers").stdout)
        assert rows[0] == ["queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active",
                           "arguments"]
        js = json.loads(cli("list-consumers", "--json").stdout)
        mine = [c for c in js if c["consumer_tag"] == f"ct{uid}"]
        assert len(mine) == 1 and mine[0]["queue_name"] == qn and mine[0]["ack_required"] is True
        assert mine[0]["prefetch_count"] == 1
        # purge and delete
        r = cli("purge-queue", qn)
        assert f'Purging queue "{qn}"' in r.stdout and "Purged 2 messages" in r.stdout
        assert [qn, "1"] in table(cli("list-queues").stdout)  # the unacked one stays
        r = cli("delete-queue", qn, "--if-unused", check=False)
        assert r.returncode == 1 and "in use" in r.stderr
        r = cli("delete-queue", qn)
        assert "successfully deleted" in r.stdout
        assert qn not in {row[0] for row in table(cli("list-queues").stdout)}
        for verb in ("purge-queue", "delete-queue"):
            r = cli(verb, qn, check=False)
            assert r.returncode == 1 and r.stderr.strip() == f"Error: queue '{qn}' in vhost '/' does not exist"
    finally:
        if conn.is_open:
            conn.close()


def test_definitions_verbs(cli, cb, uid, tmp_path):
    vh = f"defs{uid}"
    cli("add-vhost", vh)
    cli("set-permissions", "-p", vh, "guest", ".*", ".*", ".*")
    conn = connect(cb, vhost=vh)
    ch = conn.channel()
    ch.queue_declare("kept", durable=True, arguments={"x-message-ttl": 5000})
    conn.close()
    f = tmp_path / "defs.json"
    r = cli("export-definitions", str(f))
    assert f'Exported definitions to "{f}"' in r.stdout
    defs = json.loads(f.read_text())
    assert any(q["name"] == "kept" and q["vhost"] == vh for q in defs["queues"])
    assert json.loads(cli("export-definitions", "-").stdout)["vhosts"]
    # change the definitions and import them back
    defs["queues"].append({"name": "added", "vhost": vh, "durable": True, "auto_delete": False, "arguments": {}})
    defs["users"].append({"name": f"imp{uid}", "password": "pw", "tags": "management"})
    f.write_text(json.dumps(defs))
    r = cli("import-definitions", str(f))
    assert r.stdout.strip().endswith("Done")
    assert Http(cb.url).get(f"/api/queues/{vh}/added").status == 200
    assert Http(cb.url, f"imp{uid}", "pw").get("/api/whoami").status == 200
    r = cli("import-definitions", "-", input=json.dumps({"vhosts": [{"name": f"stdin{uid}"}]}))
    assert r.returncode == 0
    assert Http(cb.url).get(f"/api/vhosts/stdin{uid}").status == 200
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    r = cli("import-definitions", str(bad), check=False)
    assert r.returncode == 1 and "is not valid JSON" in r.stderr
    r = cli("import-definitions", str(tmp_path / "missing.json"), check=False)
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_status(cli, cb):
    out = cli("status").stdout
    assert "BurrowMQ" in out and f"127.0.0.1:{cb.port}" in out and "Queues" in out and "Alarms" in out
    js = json.loads(cli("status", "--json").stdout)
    assert js["overview"]["product_name"] == "BurrowMQ" and js["node"]["running"] is True


def test_unreachable_and_refused(cb):
    port = free_port()
    r = run(["list-queues"], url=f"http://127.0.0.1:{port}")
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"Error: cannot reach the broker at http://127.0.0.1:{port}: ")
    assert lines[0].endswith("; is it running? (broker serve)")
    r = run(["status", "--url", f"http://127.0.0.1:{port}"])
    assert r.returncode != 0 and "cannot reach the broker" in r.stderr
    # the user and password come from the options or BROKER_USER / BROKER_PASS
    r = run(["list-users", "--password", "wrong"], url=cb.url)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    assert "refused user 'guest': Login failed" in r.stderr
    r = run(["list-users"], url=cb.url, env={"BROKER_PASS": "wrong"})
    assert r.returncode == 1 and "Login failed" in r.stderr
    Http(cb.url).put("/api/users/watcher", {"password": "w", "tags": "monitoring"})
    r = run(["list-users"], url=cb.url, env={"BROKER_USER": "watcher", "BROKER_PASS": "w"})
    assert r.returncode == 1 and r.stderr.strip() == "Error: Not administrator user"
    r = run(["list-queues", "--user", "watcher", "--password", "w"], url=cb.url)
    assert r.returncode == 0
    # --url wins over BROKER_URL
    r = run(["list-vhosts", "--url", cb.url], url=f"http://127.0.0.1:{port}")
    assert r.returncode == 0 and "/" in r.stdout


def _serve(tmp_path, name, args, env=None, timeout=15.0):
    """``broker serve`` started by hand (conftest's brokers always pass --management-port); the
    metrics listener, which these tests do not look at, takes a free port unless ``args`` say."""
    if "--metrics-port" not in args:
        args = [*args, "--metrics-port", "0"]
    data = tmp_path / name
    data.mkdir()
    log = data / "log"
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT)
    e.pop("BROKER_MANAGEMENT_PORT", None)
    e.update(env or {})
    with open(log, "wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data / "d"),
             *args],
            cwd=ROOT, env=e, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if "ready: amqp://" in text or p.poll() is not None:
            break
        time.sleep(0.05)
    return p, log


def _stop(p):
    if p.poll() is None:
        p.terminate()
        p.wait(15)


def test_serve_management_options(tmp_path):
    # BROKER_MANAGEMENT_PORT
    port = free_port()
    p, log = _serve(tmp_path, "env", [], env={"BROKER_MANAGEMENT_PORT": str(port)})
    try:
        assert f"management API listening on http://127.0.0.1:{port}" in log.read_text()
        assert Http(f"http://127.0.0.1:{port}").get("/api/overview").status == 200
    finally:
        _stop(p)
    # --management-host (the default is the --host value, as above)
    p, log = _serve(tmp_path, "host", ["--management-port", "0", "--management-host", "localhost"])
    try:
        m = MGMT_LINE.search(log.read_text())
        assert m and m.group(1) == "localhost"
        assert Http(f"http://localhost:{m.group(2)}").get("/api/whoami").status == 200
    finally:
        _stop(p)
    # a management port in use: one clear log line, non-zero exit
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        p, log = _serve(tmp_path, "busy", ["--management-port", str(busy)])
        try:
            assert p.wait(15) == 1
        finally:
            _stop(p)
        assert f"cannot listen on 127.0.0.1:{busy} for the management API" in log.read_text()
