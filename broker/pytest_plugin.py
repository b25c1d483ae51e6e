"""The pytest plugin (entry point ``pytest11``): a real AMQP broker for any project's tests.

Fixtures:

- ``amqp_broker`` (session): a BurrowMQ broker in a background thread of the test process
  (:class:`broker.embedded.EmbeddedBroker`), on free ports, with a temporary data dir.  It has
  ``url``, ``host``, ``port``, ``management_url`` and ``restart()`` (stop and start on the same
  data dir and ports: what was durable is back).
- ``amqp_url`` (function): the URL of a vhost made for this test alone (full permissions for
  the broker's user) and deleted after it, so tests are isolated with no cleanup code.

``--amqp-broker-url URL`` (or ``AMQP_BROKER_URL``) runs the same tests against a broker
someone else runs (e.g. RabbitMQ in CI): vhosts are made through its management API, found
at ``--amqp-management-url`` (``AMQP_MANAGEMENT_URL``; default port 15672 on the URL's host,
with the URL's credentials).  ``--amqp-broker-port`` and ``--amqp-broker-data-dir`` fix what the
in-process broker takes; if it cannot have them, its tests error with one line naming which.

The engine is imported only when a test asks for ``amqp_broker``, so the plugin costs
nothing in test runs that do not use it.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

URL_ENV = "AMQP_BROKER_URL"
MANAGEMENT_ENV = "AMQP_MANAGEMENT_URL"
HTTP_TIMEOUT = 30.0


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("burrowmq", "AMQP broker for tests (BurrowMQ)")
    group.addoption("--amqp-broker-url", default=None, metavar="URL",
                    help=f"Use this AMQP broker instead of an in-process one (env {URL_ENV}).")
    group.addoption("--amqp-management-url", default=None, metavar="URL",
                    help=f"Its management API (env {MANAGEMENT_ENV}; default http://HOST:15672).")
    group.addoption("--amqp-broker-port", type=int, default=0, metavar="PORT",
                    help="AMQP port of the in-process broker (default: a free port).")
    group.addoption("--amqp-broker-data-dir", default=None, metavar="DIR",
                    help="Data directory of the in-process broker (default: a temporary one).")


class ManagementApi:
    """A small client of a management API (RabbitMQ's shape) over one kept-alive connection."""

    def __init__(self, url: str, user: str, password: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise pytest.UsageError(f"invalid management API URL '{url}': expected http://HOST:PORT")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._base = parts.path.rstrip("/")
        self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        self._conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            self._conn = cls(self._host, self._port, timeout=HTTP_TIMEOUT)
        return self._conn

    def call(self, method: str, path: str, body: Any = None) -> None:
        """``METHOD /api/path``; anything but 2xx fails the test with the API's reason."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": self._auth, "Content-Type": "application/json"}
        target = f"{self._base}/api/{path}"
        for attempt in (1, 2):  # a kept-alive connection the server closed: reconnect once
            conn = self._connect()
            try:
                conn.request(method, target, body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, OSError) as exc:
                self.close()
                if attempt == 2:
                    raise RuntimeError(f"cannot reach the management API at {self.url}: {exc}") from None
        if resp.status >= 300:
            reason = raw.decode(errors="replace")
            try:
                reason = json.loads(raw).get("reason", reason)
            except (ValueError, AttributeError):
                pass
            raise RuntimeError(f"{method} {target} at {self.url}: HTTP {resp.status}: {reason}")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class AmqpBroker:
    """Where the tests' broker is: ``url`` (its default vhost), ``host``, ``port``,
    ``management_url``, the credentials, and ``restart()`` for durability tests."""

    host: str
    port: int
    user: str
    password: str
    management_url: str | None
    embedded: Any = None  # the EmbeddedBroker, or None for an external broker
    api: ManagementApi | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.url_for("/")

    def url_for(self, vhost: str) -> str:
        """The AMQP URL of ``vhost`` on this broker."""
        user = urllib.parse.quote(self.user, safe="")
        password = urllib.parse.quote(self.password, safe="")
        return f"amqp://{user}:{password}@{self.host}:{self.port}/{urllib.parse.quote(vhost, safe='')}"

    def restart(self) -> None:
        """Stop the broker and start it again on the same data dir and ports."""
        if self.embedded is None:
            pytest.skip("restart() needs the in-process broker, not the one given by --amqp-broker-url")
        if self.api is not None:
            self.api.close()
        self.embedded.restart()

    def management(self) -> ManagementApi:
        if self.api is None:
            if self.management_url is None:
                raise RuntimeError("this broker has no management API")
            self.api = ManagementApi(self.management_url, self.user, self.password)
        return self.api


def _external(config: pytest.Config, url: str) -> AmqpBroker:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise pytest.UsageError(f"invalid AMQP broker URL '{url}': expected amqp://USER:PASS@HOST:PORT/")
    host = parts.hostname
    user = urllib.parse.unquote(parts.username or "guest")
    password = urllib.parse.unquote(parts.password or "guest")
    mgmt = config.getoption("amqp_management_url") or os.environ.get(MANAGEMENT_ENV) or f"http://{host}:15672"
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return AmqpBroker(host, port, user, password, mgmt.rstrip("/"))


@pytest.fixture(scope="session")
def amqp_broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AmqpBroker]:
    """A broker for the whole session: in-process (a background thread), or the one given by
    ``--amqp-broker-url`` / ``AMQP_BROKER_URL``."""
    config = request.config
    url = config.getoption("amqp_broker_url") or os.environ.get(URL_ENV)
    if url:
        ext = _external(config, url)
        yield ext
        if ext.api is not None:
            ext.api.close()
        return
    from .embedded import EmbeddedBroker, EmbeddedBrokerError

    data_dir = config.getoption("amqp_broker_data_dir") or str(tmp_path_factory.mktemp("amqp-broker"))
    embedded = EmbeddedBroker(data_dir, port=config.getoption("amqp_broker_port"))
    try:
        embedded.start()
    except EmbeddedBrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    b = AmqpBroker(embedded.host, embedded.port, embedded.user, embedded.password, embedded.management_url,
                   embedded)
    try:
        yield b
    finally:
        if b.api is not None:
            b.api.close()
        embedded.stop()


@pytest.fixture
def amqp_url(amqp_broker: AmqpBroker) -> Iterator[str]:
    """The URL of a vhost made for this test (deleted after it, with everything in it)."""
    vhost = f"pytest-{uuid.uuid4().hex[:16]}"
    api = amqp_broker.management()
    path = urllib.parse.quote(vhost, safe="")
    api.call("PUT", f"vhosts/{path}", {})
    try:
        user = urllib.parse.quote(amqp_broker.user, safe="")
        api.call("PUT", f"permissions/{path}/{user}", {"configure": ".*", "write": ".*", "read": ".*"})
        yield amqp_broker.url_for(vhost)
    finally:
        api.call("DELETE", f"vhosts/{path}")
