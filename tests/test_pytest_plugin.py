"""The pytest plugin as a user meets it: a small project outside this repository whose tests ask
for ``amqp_broker`` / ``amqp_url`` (pika blocking and asyncio adapters, aio-pika under
pytest-asyncio, kombu, Celery with an in-process worker, a restart), run by pytest in a
subprocess that finds the plugin through the package's ``pytest11`` entry point.

The same project also runs against an external broker (``AMQP_BROKER_URL``, here a
``broker serve`` process), and the plugin's errors are checked: a port or data dir it
cannot have is one line naming it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from tests.test_management_api import mgmt_url

PLUGIN = "broker.pytest_plugin"

CONFTEST = '''
import pytest

pytest_plugins = ("celery.contrib.pytest",)


@pytest.fixture
def celery_config(amqp_url):
    """The Celery recipe: the app's broker is this test's vhost, results come back over it."""
    return {"broker_url": amqp_url, "result_backend": "rpc://", "broker_heartbeat": 0}
'''

SAMPLE = '''
import asyncio
import threading

import aio_pika
import kombu
import pika
import pytest
from pika.adapters.asyncio_connection import AsyncioConnection


def test_pika_blocking(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.queue_declare("work")  # the same name in every test: each has its own vhost
    ch.basic_publish("", "work", b"hello")
    method, _props, body = ch.basic_get("work", auto_ack=True)
    assert body == b"hello" and method.message_count == 0
    conn.close()


def test_isolated_vhost(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.queue_declare("work")
    ch.basic_publish("", "work", b"left behind")  # the vhost goes after the test
    assert ch.queue_declare("work", passive=True).method.message_count == 1
    conn.close()


def test_isolated_vhost_again(amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    assert conn.channel().queue_declare("work").method.message_count == 0
    conn.close()


def test_pika_asyncio_adapter(amqp_url):
    got = []

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def on_message(ch, method, props, body):
            got.append(body)
            ch.basic_ack(method.delivery_tag)
            ch.connection.close()

        def on_declared(frame, ch):
            ch.basic_consume("async-q", on_message)
            ch.basic_publish("", "async-q", b"via asyncio")

        def on_channel(ch):
            ch.queue_declare("async-q", callback=lambda f: on_declared(f, ch))

        AsyncioConnection(
            pika.URLParameters(amqp_url),
            on_open_callback=lambda c: c.channel(on_open_callback=on_channel),
            on_open_error_callback=lambda c, e: done.set_exception(RuntimeError(e)),
            on_close_callback=lambda c, e: done.done() or done.set_result(None),
            custom_ioloop=loop,
        )
        await asyncio.wait_for(done, 10)

    asyncio.run(main())
    assert got == [b"via asyncio"]


async def test_aio_pika(amqp_url):
    conn = await aio_pika.connect_robust(amqp_url)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue("aio", auto_delete=True)
        await ch.default_exchange.publish(aio_pika.Message(b"from aio-pika"), routing_key="aio")
        msg = await q.get(timeout=5)
        await msg.ack()
        assert msg.body == b"from aio-pika"


def test_kombu(amqp_url):
    with kombu.Connection(amqp_url) as conn:
        q = kombu.Queue("kq", kombu.Exchange("kx", type="direct"), routing_key="k")
        with conn.Producer() as producer:
            producer.publish({"n": 1}, exchange=q.exchange, routing_key="k", declare=[q], serializer="json")
        with conn.SimpleQueue(q) as sq:
            m = sq.get(timeout=5)
            m.ack()
            assert m.payload == {"n": 1}


def test_celery(celery_app, celery_worker):
    @celery_app.task
    def mul(x, y):
        return x * y

    celery_worker.reload()
    assert mul.delay(6, 7).get(timeout=10) == 42


def test_restart_keeps_durable_messages(amqp_broker, amqp_url):
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    ch = conn.channel()
    ch.queue_declare("durable-q", durable=True)
    ch.confirm_delivery()
    ch.basic_publish("", "durable-q", b"kept", pika.BasicProperties(delivery_mode=2))
    conn.close()
    amqp_broker.restart()
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    _m, _p, body = conn.channel().basic_get("durable-q", auto_ack=True)
    assert body == b"kept"
    conn.close()


def test_fixture_attributes(amqp_broker):
    assert amqp_broker.url == f"amqp://guest:guest@{amqp_broker.host}:{amqp_broker.port}/%2F"
    assert amqp_broker.management_url.startswith("http://")
    assert threading.current_thread() is threading.main_thread()
'''

INI = """[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


def _entry_point_registered() -> bool:
    return any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project: a conftest with the Celery recipe and a test file; no reference to
    this repository (the plugin comes from the installed package)."""
    assert _entry_point_registered(), (
        "the pytest11 entry point of the package is not installed: run `pip install -e .` again "
        "(the plugin's entry point was added after this checkout was installed)"
    )
    proj = tmp_path / "userproject"
    proj.mkdir()
    (proj / "pytest.ini").write_text(INI)
    (proj / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (proj / "test_sample.py").write_text(textwrap.dedent(SAMPLE))
    return proj


def _run(proj: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    for k in ("AMQP_BROKER_URL", "AMQP_MANAGEMENT_URL", "PYTEST_ADDOPTS"):
        full_env.pop(k, None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "60", *args],
        cwd=proj, env=full_env, capture_output=True, text=True, timeout=180,
    )


def test_sample_project_passes_with_every_client(project: Path) -> None:
    r = _run(project)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "9 passed" in r.stdout, r.stdout[-3000:]


def test_sample_project_against_an_external_broker(project: Path, broker) -> None:
    """AMQP_BROKER_URL: the same tests on a broker the plugin did not start (restart is
    skipped there, saying why)."""
    if broker.proc is None:
        pytest.skip("the shared broker is external (TEST_BROKER_PORT): its management API is not known here")
    env = {"AMQP_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{broker.port}/",
           "AMQP_MANAGEMENT_URL": mgmt_url(broker)}
    r = _run(project, "-k", "not celery and not aio_pika and not asyncio_adapter", "-rs", env=env)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert "5 passed, 1 skipped" in r.stdout, r.stdout[-3000:]
    assert "restart() needs the in-process broker" in r.stdout


def test_port_in_use_is_one_clear_error(project: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = _run(project, "-k", "pika_blocking", "--amqp-broker-port", str(port))
    assert r.returncode == 1, r.stdout[-3000:]
    assert f"the embedded broker cannot listen on 127.0.0.1:{port} for AMQP" in r.stdout, r.stdout[-3000:]
    assert "address already in use" in r.stdout


def test_unusable_data_dir_is_one_clear_error(project: Path, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    r = _run(project, "-k", "pika_blocking", "--amqp-broker-data-dir", str(not_a_dir / "data"))
    assert r.returncode == 1, r.stdout[-3000:]
    assert f"the embedded broker cannot start: cannot write to data directory {not_a_dir / 'data'}" in r.stdout, \
        r.stdout[-3000:]


def test_bad_external_url_is_a_usage_error(project: Path) -> None:
    r = _run(project, "-k", "pika_blocking", env={"AMQP_BROKER_URL": "http://nope"})
    assert r.returncode != 0
    assert "invalid AMQP broker URL 'http://nope'" in r.stdout + r.stderr
