"""SIGTERM under load: in-flight confirms complete, clients get 320, exit 0 within 10 s,
and nothing confirmed is lost."""

from __future__ import annotations

import signal
import threading
import time

import pika
import pytest


@pytest.mark.slow
def test_sigterm_under_load_loses_nothing_confirmed(fresh_broker):
    b = fresh_broker
    confirmed: list[int] = []
    state = {"closed": None, "error": None}

    def publish() -> None:
        try:
            conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
            ch = conn.channel()
            ch.queue_declare("work", durable=True)
            ch.confirm_delivery()
            i = 0
            while True:
                ch.basic_publish("", "work", str(i).encode(), pika.BasicProperties(delivery_mode=2))
                confirmed.append(i)  # basic_publish returned: the broker confirmed it
                i += 1
        except pika.exceptions.ConnectionClosedByBroker as exc:
            state["closed"] = (exc.reply_code, exc.reply_text)
        except Exception as exc:  # reported below
            state["error"] = exc

    threads = [threading.Thread(target=publish, daemon=True)]
    threads[0].start()
    time.sleep(1.5)
    assert len(confirmed) > 100, "the publisher should be well under way"
    t0 = time.monotonic()
    b.proc.send_signal(signal.SIGTERM)
    rc = b.proc.wait(15)
    took = time.monotonic() - t0
    threads[0].join(10)
    assert rc == 0
    assert took < 10, f"shutdown took {took:.1f} s"
    assert state["error"] is None, state["error"]
    assert state["closed"] == (320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    log = b.log_text()
    assert "stopped in" in log
    port = b.port
    b._log.close()
    b.proc = None
    b.start(port=port)
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", b.port))
    ch = conn.channel()
    got = []
    while True:
        m = ch.basic_get("work", auto_ack=True)
        if m[0] is None:
            break
        got.append(int(m[2]))
    conn.close()
    missing = set(confirmed) - set(got)
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"
    assert got == sorted(got), "order kept"
