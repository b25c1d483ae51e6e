"""Celery on quorum queues: a real worker with ``task_default_queue_type = 'quorum'``.

Celery 5.5+ then turns on its native delayed delivery: the worker declares the
``celery_delayed_0..27`` quorum queues (message TTL, ``reject-publish``,
at-least-once dead-lettering from level to level) and an ETA/countdown task
waits in them instead of in the worker.  Checked here: a task runs, a countdown
task waits in the delayed queues and runs on time, and an acks_late task whose
worker is SIGKILLed mid-task runs again on a new worker.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time

import pytest

from test_celery import Workers, _cleanup, _explain
from test_management_api import Http, mgmt_url

pytest.importorskip("celery")

TASKS = '''
import os
import time

from celery import Celery

app = Celery("{module}", broker="amqp://guest:guest@127.0.0.1:{port}//", backend="rpc://")
app.conf.update(
    task_default_queue="{queue}",
    task_default_exchange="{queue}",
    task_default_exchange_type="topic",
    task_default_routing_key="{queue}",
    task_default_queue_type="quorum",
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    broker_connection_timeout=5,
    broker_heartbeat=0,
    result_expires=300,
    worker_hijack_root_logger=False,
)


@app.task
def add(x, y):
    return x + y


@app.task
def stamp():
    return time.time()


@app.task(bind=True, acks_late=True)
def slow(self, marker):
    """First run: records itself and hangs (the worker gets killed). Later runs finish."""
    with open(marker, "a") as f:
        f.write(f"{{os.getpid()}} {{int(bool(self.request.delivery_info.get('redelivered')))}}\\n")
        f.flush()
    runs = len(open(marker).read().splitlines())
    if runs == 1:
        time.sleep(120)
    return runs
'''


@pytest.fixture
def qcelery(fresh_broker, tmp_path, uid):
    module = f"qtasks_{uid}"
    queue = f"qcelery-{uid}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(TASKS.format(module=module, port=fresh_broker.port, queue=queue)))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(module)
    finally:
        sys.path.remove(str(tmp_path))
    workers = Workers(tmp_path, module, queue)
    try:
        yield mod, workers, Http(mgmt_url(fresh_broker))
    finally:
        workers.stop_all()
        try:
            mod.app.close()
        except Exception:
            pass
        sys.modules.pop(module, None)
        _cleanup(fresh_broker.port, queue)


@pytest.mark.slow
def test_worker_on_quorum_queue_with_native_delayed_delivery(qcelery):
    mod, workers, http = qcelery
    workers.start("w1")
    try:
        assert mod.add.delay(2, 3).get(timeout=20) == 5
        queues = {q["name"]: q for q in http.get("/api/queues/%2F").json}
        assert queues[workers.queue]["type"] == "quorum"
        delayed = [q for n, q in queues.items() if n.startswith("celery_delayed_")]
        assert len(delayed) == 28 and {q["type"] for q in delayed} == {"quorum"}
        assert {q["dead_letter_strategy"] for q in delayed} == {"at-least-once"}

        sent = time.time()
        r = mod.stamp.apply_async(countdown=3)
        # it waits in the broker's delayed queues, not in the worker
        deadline = time.monotonic() + 2
        waiting = 0
        while time.monotonic() < deadline and not waiting:
            waiting = sum(q["messages"] for q in http.get("/api/queues/%2F").json
                          if q["name"].startswith("celery_delayed_"))
            time.sleep(0.1)
        assert waiting == 1
        ran = r.get(timeout=20)
        assert 2.9 <= ran - sent < 10, ran - sent
    except BaseException:
        print(_explain(workers))
        raise


@pytest.mark.slow
def test_killed_worker_task_is_redelivered_from_quorum_queue(qcelery, tmp_path):
    mod, workers, http = qcelery
    w1 = workers.start("w1")
    marker = tmp_path / "slow.txt"
    try:
        r = mod.slow.delay(str(marker))
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline, "task did not start"
            time.sleep(0.05)
        workers.kill9(w1)  # mid-task: never acked
        w2 = workers.start("w2")
        assert r.get(timeout=30) == 2
        runs = [line.split() for line in marker.read_text().splitlines()]
        assert int(runs[1][0]) == w2.pid and runs[1][1] == "1"
        # acks_late: the ack follows the result; then the quorum queue is empty
        deadline = time.monotonic() + 10
        while (q := http.get(f"/api/queues/%2F/{workers.queue}").json)["messages"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert q["type"] == "quorum" and q["messages"] == 0
    except BaseException:
        print(_explain(workers))
        raise
