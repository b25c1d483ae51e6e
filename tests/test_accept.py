"""Accepting connections cheaply without dropping what a connection's set-up does.

- The log keeps one line per event, as RabbitMQ logs them (``accepting AMQP connection``, then
  ``opened``), in logging's standard time format, for every connection of a burst.
- The replies encoded once (Tune, Connection.OpenOk, Channel.OpenOk, Basic.QosOk) are the
  bytes pamqp encodes.
- A refused login is still refused and a good one still accepted from the same address.
"""

from __future__ import annotations

import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import pika
import pytest
from pamqp import commands as C
from pamqp import frame as pframe

from broker.amqp.handshake import tune_frame
from broker.runner import LineFormatter
from protocol import framing

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_log_lines_are_formatted_as_logging_formats_them() -> None:
    standard = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = LineFormatter()
    # within one second, across a second, and back to an earlier second
    for created in (1700000000.0004, 1700000000.9996, 1700000001.5, 1700000000.25, time.time()):
        record = logging.LogRecord("broker.amqp.connection", logging.INFO, "x.py", 1, "accepting AMQP connection %s",
                                   ("127.0.0.1:5000",), None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == standard.format(record)


@pytest.mark.parametrize("method", [C.Connection.OpenOk, C.Channel.OpenOk, C.Basic.QosOk, C.Channel.CloseOk])
@pytest.mark.parametrize("channel", [0, 1, 2047, 65535])
def test_replies_encoded_once_are_the_bytes_pamqp_encodes(method: type, channel: int) -> None:
    assert framing.reply_frame(channel, method) == pframe.marshal(method(), channel)
    assert framing.reply_frame(channel, method) is framing.reply_frame(channel, method)


def test_tune_encoded_once_is_the_bytes_pamqp_encodes() -> None:
    for limits in ((2047, 131072, 60), (0, 8192, 0), (65535, 2**32 - 1, 65535)):
        channel_max, frame_max, heartbeat = limits
        assert tune_frame(*limits) == pframe.marshal(
            C.Connection.Tune(channel_max=channel_max, frame_max=frame_max, heartbeat=heartbeat), 0)


def _open_consumer(port: int, queue: str) -> pika.BlockingConnection:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=10)
    ch.basic_consume(queue, lambda *a: None)
    return conn


def test_a_burst_of_connections_logs_one_line_per_event(fresh_broker, uid) -> None:
    port = fresh_broker.port
    queue = f"accept-{uid}"
    setup = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    setup.channel().queue_declare(queue)
    with ThreadPoolExecutor(8) as pool:
        opened = list(pool.map(lambda _i: _open_consumer(port, queue), range(40)))
    try:
        assert setup.channel().queue_declare(queue, passive=True).method.consumer_count == 40
        log = fresh_broker.log_text()
        stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
        accepting = re.findall(rf"^{stamp} INFO broker\.amqp\.connection: accepting AMQP connection (\S+)$", log, re.M)
        open_lines = re.findall(
            rf"^{stamp} INFO broker\.amqp\.connection: connection (\S+) opened: user 'guest', vhost '/'$", log, re.M)
        assert len(accepting) == len(set(accepting)) == 41  # the 40 consumers and the set-up connection
        assert sorted(open_lines) == sorted(accepting)
    finally:
        for conn in opened:
            conn.close()
        setup.close()


def test_logins_are_still_checked(fresh_broker) -> None:
    port = fresh_broker.port
    bad = pika.ConnectionParameters("127.0.0.1", port, credentials=pika.PlainCredentials("guest", "wrong"))
    for _ in range(2):
        with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
            pika.BlockingConnection(bad)
        assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in str(info.value)
    good = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    assert good.channel().is_open
    good.close()
    assert fresh_broker.log_text().count("login refused: user 'guest' - invalid credentials") == 2
