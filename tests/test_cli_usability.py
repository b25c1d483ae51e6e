"""What a new user of the ``broker`` command runs into, checked against the real command
(``python -m cli ...`` subprocesses) and a real broker: port validation, errors that name the
environment variable, the admin verbs finding the management API, full help texts, and the
start-up order (AMQP accepted only once the HTTP listeners are up)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import ROOT, _make, free_port
from test_admin_cli import _serve, _stop, run
from test_config import run_cli
from test_management_api import Http, mgmt_url


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The single stderr line of a command that must fail."""
    assert r.returncode != 0, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def serve_fails(tmp_path, args: list[str], env: dict | None = None) -> str:
    """``broker serve`` with options that must stop it before it listens; every listener not
    under test is given explicitly so that a broken check never takes a default port."""
    base = ["serve", "--host", "127.0.0.1", "--data-dir", str(tmp_path / "d")]
    for opt, off in (("--port", "0"), ("--management-port", "-1"), ("--metrics-port", "-1")):
        if opt not in args and not any(k == f"BROKER_{opt[2:].upper().replace('-', '_')}" for k in env or {}):
            base += [opt, off]
    return one_error_line(run_cli([*base, *args], env=env, timeout=10))


# -- ports are checked, wherever they come from -------------------------------------------------


@pytest.mark.parametrize(
    "opt, bad",
    [("--port", "99999"), ("--port", "-5"), ("--port", "-1"), ("--port", "65536"),
     ("--management-port", "65536"), ("--management-port", "-2"),
     ("--metrics-port", "99999"), ("--metrics-port", "-5")],
)
def test_port_out_of_range_is_one_line_naming_the_option(tmp_path, opt, bad):
    line = serve_fails(tmp_path, [opt, bad])
    assert f"'{opt}'" in line and bad in line and "65535" in line, line
    assert "resolve" not in line.lower() and "Errno" not in line, line


@pytest.mark.parametrize(
    "var, opt", [("BROKER_PORT", "--port"), ("BROKER_MANAGEMENT_PORT", "--management-port"),
                 ("BROKER_METRICS_PORT", "--metrics-port")],
)
def test_port_from_environment_out_of_range_names_the_variable(tmp_path, var, opt):
    line = serve_fails(tmp_path, [], env={var: "70000"})
    assert f"{var} ({opt})" in line and "70000" in line and "65535" in line, line


@pytest.mark.parametrize("key", ["port", "management-port", "metrics-port"])
def test_port_from_config_file_out_of_range_names_file_and_key(tmp_path, key):
    cfg = tmp_path / "ports.toml"
    cfg.write_text(f"{key} = 123456\n")
    line = serve_fails(tmp_path, ["--config", str(cfg)])
    assert str(cfg) in line and f"bad value for '{key}'" in line and "65535" in line, line


def test_minus_one_still_turns_the_http_listeners_off(broker_factory):
    b = broker_factory(extra=["--management-port", "-1", "--metrics-port", "-1"])
    log = b.log_text()
    assert "management API listening" not in log and "Prometheus metrics listening" not in log


def test_bad_environment_value_names_the_variable(tmp_path):
    line = serve_fails(tmp_path, [], env={"BROKER_PORT": "abc"})
    assert line == "Error: Invalid value for BROKER_PORT (--port): 'abc' is not a valid integer.", line
    line = serve_fails(tmp_path, [], env={"BROKER_HEARTBEAT": "often"})
    assert "BROKER_HEARTBEAT (--heartbeat)" in line and "'often'" in line, line
    line = serve_fails(tmp_path, [], env={"BROKER_LOG_LEVEL": "loud"})
    assert "BROKER_LOG_LEVEL (--log-level)" in line, line
    # a bad flag is still named as the flag
    line = serve_fails(tmp_path, ["--port", "abc"])
    assert "'--port'" in line and "BROKER_PORT" not in line, line


# -- the admin verbs find the management API -----------------------------------------------------


@pytest.fixture(scope="module")
def api_broker(tmp_path_factory):
    b = _make(tmp_path_factory.mktemp("usability-broker"), extra=["--management-port", "0"]).start()
    b.url = mgmt_url(b)
    b.mgmt_port = int(b.url.rsplit(":", 1)[1])
    yield b
    b.stop()


def test_admin_verbs_follow_the_management_port_from_the_environment(api_broker):
    r = run(["list-vhosts"], env={"BROKER_MANAGEMENT_PORT": str(api_broker.mgmt_port)})
    assert r.returncode == 0 and "/" in r.stdout.split(), r.stderr
    r = run(["list-vhosts"], env={"BROKER_MANAGEMENT_PORT": str(api_broker.mgmt_port),
                                  "BROKER_MANAGEMENT_HOST": "127.0.0.1"})
    assert r.returncode == 0, r.stderr
    # a wildcard listen address means "this machine"
    r = run(["list-vhosts"], env={"BROKER_MANAGEMENT_PORT": str(api_broker.mgmt_port),
                                  "BROKER_MANAGEMENT_HOST": "0.0.0.0"})
    assert r.returncode == 0, r.stderr


def test_admin_verbs_follow_the_management_port_from_the_config_file(api_broker, tmp_path):
    cfg = tmp_path / "broker.toml"
    cfg.write_text(f'data-dir = "/nowhere"\nmanagement-port = {api_broker.mgmt_port}\n'
                   'management-host = "127.0.0.1"\n')
    r = run(["list-vhosts", "--config", str(cfg)])
    assert r.returncode == 0 and "/" in r.stdout.split(), r.stderr
    r = run(["status"], env={"BROKER_CONFIG_FILE": str(cfg)})
    assert r.returncode == 0 and "BurrowMQ" in r.stdout, r.stderr
    # the environment wins over the file, as for serve
    dead = free_port()
    r = run(["list-vhosts", "--config", str(cfg)], env={"BROKER_MANAGEMENT_PORT": str(dead)})
    assert r.returncode != 0 and f"http://127.0.0.1:{dead}" in r.stderr, r.stderr


def test_admin_url_order_url_then_broker_url_then_management_port(api_broker):
    dead = free_port()
    live = {"BROKER_MANAGEMENT_PORT": str(api_broker.mgmt_port)}
    # BROKER_URL wins over BROKER_MANAGEMENT_PORT
    r = run(["list-vhosts"], url=f"http://127.0.0.1:{dead}", env=live)
    assert r.returncode != 0 and f"cannot reach the broker at http://127.0.0.1:{dead}" in r.stderr
    # --url wins over both
    r = run(["list-vhosts", "--url", api_broker.url], url=f"http://127.0.0.1:{dead}",
            env={"BROKER_MANAGEMENT_PORT": str(dead)})
    assert r.returncode == 0, r.stderr
    # nothing given: RabbitMQ's default
    r = run(["list-vhosts"], env={"BROKER_MANAGEMENT_PORT": ""})
    assert "localhost:15672" in r.stderr or r.returncode == 0


def test_admin_default_url_problems_are_one_line(tmp_path):
    for value, said in (("abc", "BROKER_MANAGEMENT_PORT"), ("0", "--url"), ("-1", "turned off")):
        line = one_error_line(run(["list-vhosts"], env={"BROKER_MANAGEMENT_PORT": value}))
        assert said in line, line
    cfg = tmp_path / "bad.toml"
    cfg.write_text("management-port = \n")
    line = one_error_line(run(["list-vhosts", "--config", str(cfg)]))
    assert str(cfg) in line and "cannot be read" in line, line
    line = one_error_line(run(["list-vhosts", "--config", str(tmp_path / "none.toml")]))
    assert "does not exist" in line, line


def test_admin_verb_help_explains_where_the_url_comes_from():
    r = run(["list-queues", "--help"], env={"COLUMNS": "100"})
    text = " ".join(r.stdout.split())
    for part in ("--url", "BROKER_URL", "BROKER_MANAGEMENT_PORT", "BROKER_MANAGEMENT_HOST", "--config",
                 "BROKER_CONFIG_FILE", "http://localhost:15672"):
        assert part in text, (part, r.stdout)


# -- help shows every verb's whole summary --------------------------------------------------------


def _flat(text: str) -> str:
    """Whitespace collapsed, and words that the help wrapped at a hyphen joined again."""
    return re.sub(r"- (?=\w)", "-", " ".join(text.split()))


def _summary(doc: str) -> str:
    """A command's first paragraph, on one line."""
    return _flat(doc.strip().split("\n\n")[0])


@pytest.mark.parametrize("columns", ["80", "200"])
def test_group_help_shows_each_verbs_whole_summary(columns):
    import cli

    r = run(["--help"], env={"COLUMNS": columns})
    assert r.returncode == 0
    commands = r.stdout.split("Commands:", 1)[1]
    flat = _flat(commands)
    assert len(cli.main.commands) >= 25
    for name, cmd in cli.main.commands.items():
        assert f"{name} {_summary(cmd.help or '')}" in flat, (name, commands)


# -- no test leaves a listener at its default port ------------------------------------------------


def test_hand_started_brokers_take_free_ports_for_every_listener(tmp_path):
    """``_serve`` (test_admin_cli) must not fall back to 15692/15672 for the listeners it is not
    testing: with both held here (or by anyone else) it still starts."""
    held = []
    for port in (15672, 15692):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            held.append(s)
        except OSError:
            s.close()  # someone else holds it: the same situation
    try:
        p, log = _serve(tmp_path, "free", ["--management-port", "0"])
        try:
            assert p.poll() is None and "ready: amqp://" in log.read_text(), log.read_text()
        finally:
            _stop(p)
    finally:
        for s in held:
            s.close()


# -- start-up order: AMQP last ---------------------------------------------------------------------


def test_amqp_is_accepted_only_once_the_http_listeners_are_up(tmp_path):
    amqp, mgmt, metrics = free_port(), free_port(), free_port()
    data = tmp_path / "d"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    with open(tmp_path / "log", "wb") as out:
        p = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(amqp),
             "--management-port", str(mgmt), "--metrics-port", str(metrics), "--data-dir", str(data)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert p.poll() is None, (tmp_path / "log").read_text()
            assert time.monotonic() < deadline, "the AMQP port never opened"
            try:
                socket.create_connection(("127.0.0.1", amqp), timeout=1).close()
                break
            except OSError:
                time.sleep(0.001)
        # the very moment AMQP accepts, the API and the metrics answer
        assert Http(f"http://127.0.0.1:{mgmt}").get("/api/overview").status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=5) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 10
        while "ready: amqp://" not in (tmp_path / "log").read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        log = (tmp_path / "log").read_text()
        assert re.search(rf"ready: amqp://127\.0\.0\.1:{amqp} ", log), log
        # and the log says so in that order
        assert log.index("management API listening") < log.index("listening for AMQP") < log.index("ready:")
        assert log.index("Prometheus metrics listening") < log.index("listening for AMQP")
    finally:
        _stop(p)
