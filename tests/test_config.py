"""Configuration: TOML file, environment, flags (flags > env > file > defaults), definitions at boot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pika
import pytest

from broker.auth import hash_password
from conftest import ROOT


def run_cli(args, env=None, timeout=20):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, capture_output=True, text=True,
                          env=e, timeout=timeout)


def test_config_file_sets_options_and_flags_env_win(broker_factory, tmp_path):
    cfg = tmp_path / "broker.toml"
    cfg.write_text('heartbeat = 17\ndefault-user = "fileuser"\ndefault-pass = "filepass"\n'
                   'disk-free-limit = "1MB"\nmemory-high-watermark = 0.5\n')
    b = broker_factory(extra=["--config", str(cfg)], env={"BROKER_DEFAULT_PASS": "envpass"})
    log = b.log_text()
    line = next(x for x in log.splitlines() if "configuration:" in x)
    assert "heartbeat=17 (config file)" in line
    assert "default-user=fileuser (config file)" in line
    assert "default-pass=**** (env)" in line and "envpass" not in line and "filepass" not in line
    assert "port=0 (flag)" in line
    # the env password won over the file's
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.port, credentials=pika.PlainCredentials("fileuser", "envpass")))
    assert conn.is_open
    conn.close()
    # the heartbeat from the file is what the broker offers in Connection.Tune
    from test_server import _raw_tune

    assert _raw_tune(b.port, "fileuser", "envpass") == 17


def test_config_file_from_environment_variable(broker_factory, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('default-vhost = "apps"\ndefault-user = "u1"\ndefault-pass = "p1"\n')
    b = broker_factory(env={"BROKER_CONFIG_FILE": str(cfg)})
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.port, virtual_host="apps", credentials=pika.PlainCredentials("u1", "p1")))
    conn.channel().queue_declare("in-apps")
    conn.close()


@pytest.mark.parametrize(
    "content, expect",
    [
        ("prot = 1\n", "unknown key 'prot'"),
        ('port = "abc"\n', "bad value for 'port'"),
        ('disk-free-limit = "lots"\n', "bad value for 'disk-free-limit'"),
        ('log-level = "loud"\n', "bad value for 'log-level'"),
        ("flow-threshold = -1\n", "bad value for 'flow-threshold'"),
        ("port = \n", "cannot be read"),
    ],
)
def test_bad_config_stops_start_with_one_clear_line(tmp_path, content, expect):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    r = run_cli(["serve", "--config", str(cfg), "--data-dir", str(tmp_path / "d")])
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1, r.stderr
    assert expect in err[0] and str(cfg) in err[0]


def test_bad_flag_and_env_values_are_one_line(tmp_path):
    r = run_cli(["serve", "--memory-high-watermark", "huge", "--data-dir", str(tmp_path / "d")])
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "memory-high-watermark" in r.stderr
    r = run_cli(["serve", "--data-dir", str(tmp_path / "d")], env={"BROKER_PORT": "notaport"})
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1
    assert "port" in r.stderr


def test_missing_config_file(tmp_path):
    r = run_cli(["serve", "--config", str(tmp_path / "nope.toml")])
    assert r.returncode != 0 and "does not exist" in r.stderr


def test_definitions_at_boot(broker_factory, tmp_path):
    defs = {
        "rabbit_version": "3.12.0",
        "users": [
            {"name": "app", "password_hash": hash_password("apppw"),
             "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": "management"},
        ],
        "vhosts": [{"name": "/"}, {"name": "shop"}],
        "permissions": [{"user": "app", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"}],
        "exchanges": [{"name": "orders", "vhost": "shop", "type": "topic", "durable": True,
                       "auto_delete": False, "internal": False, "arguments": {}}],
        "queues": [{"name": "orders.eu", "vhost": "shop", "durable": True, "auto_delete": False,
                    "arguments": {"x-max-length": 100}}],
        "bindings": [{"source": "orders", "vhost": "shop", "destination": "orders.eu",
                      "destination_type": "queue", "routing_key": "eu.#", "arguments": {}}],
    }
    f = tmp_path / "defs.json"
    f.write_text(json.dumps(defs))
    b = broker_factory(extra=["--definitions", str(f)])
    assert "imported definitions from" in b.log_text()
    conn = pika.BlockingConnection(pika.ConnectionParameters(
        "127.0.0.1", b.port, virtual_host="shop", credentials=pika.PlainCredentials("app", "apppw")))
    ch = conn.channel()
    ch.basic_publish("orders", "eu.de", b"order-1")
    m = ch.basic_get("orders.eu", auto_ack=True)
    assert m[2] == b"order-1"
    ok = ch.queue_declare("orders.eu", durable=True, arguments={"x-max-length": 100})
    assert ok.method.message_count == 0
    conn.close()


def test_unreadable_definitions_stop_the_start(tmp_path):
    f = tmp_path / "defs.json"
    f.write_text("{not json")
    r = run_cli(["serve", "--definitions", str(f), "--data-dir", str(tmp_path / "d"), "--port", "0",
                 "--management-port", "-1", "--metrics-port", "-1"])
    assert r.returncode == 1
    assert "cannot load definitions from" in r.stderr
