"""A real Celery worker process (celery 5.x, py-amqp transport) against the broker.

Each test writes a tasks module to its tmp_path, starts ``celery worker`` as a
subprocess and checks: .delay() results through the rpc:// backend, a task that
retries with a countdown, and an acks_late task that runs again on a new worker
after the first worker was SIGKILLed mid-task.

Against BurrowMQ each test gets a private broker (``fresh_broker``); with
TEST_BROKER_PORT set the tests use that external broker (e.g. RabbitMQ) and keep
apart from other runs through unique queue and task-module names.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("celery")

WORKER_READY = 25.0  # seconds for a worker to become ready
TEST_LIMIT = 60  # pytest-timeout per test


TASKS = '''
import os
import time

from celery import Celery

app = Celery("{module}", broker="amqp://guest:guest@127.0.0.1:{port}//", backend="rpc://")
app.conf.update(
    task_default_queue="{queue}",
    task_default_exchange="{queue}",
    task_default_routing_key="{queue}",
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
def boom(text):
    raise ValueError(text)


@app.task(bind=True, max_retries=5)
def flaky(self, marker):
    """Fails twice, retrying after 1 s each time; returns the attempt number."""
    with open(marker, "a") as f:
        f.write(f"{{time.time()}} {{self.request.retries}}\\n")
    if self.request.retries < 2:
        raise self.retry(countdown=1)
    return self.request.retries


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
def amqp_port(request):
    """The port of the broker under test: external (TEST_BROKER_PORT) or a private BurrowMQ."""
    if os.environ.get("TEST_BROKER_PORT"):
        return request.getfixturevalue("broker").port
    return request.getfixturevalue("fresh_broker").port


class Workers:
    def __init__(self, tmp: Path, module: str, queue: str):
        self.tmp = tmp
        self.module = module
        self.queue = queue
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []

    def start(self, name: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{name}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.tmp) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        args = [sys.executable, "-m", "celery", "-A", self.module, "worker", "--loglevel=info", "--pool=solo",
                "-Q", self.queue, "-n", f"{name}-{self.queue}@localhost",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(args, cwd=str(self.tmp), env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        self.logs.append(log)
        deadline = time.monotonic() + WORKER_READY
        while True:
            text = log.read_text(errors="replace")
            if " ready." in text:
                return proc
            if proc.poll() is not None:
                raise AssertionError(f"worker exited with {proc.returncode}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready within {WORKER_READY}s:\n{text[-3000:]}")
            time.sleep(0.1)

    @staticmethod
    def kill9(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(5)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            self.kill9(proc)

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in self.logs if p.exists())


@pytest.fixture
def celery_env(amqp_port, tmp_path, uid):
    """(tasks module, Workers): the module is imported in this process as the client app."""
    module = f"ctasks_{uid}"
    queue = f"celery-{uid}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(TASKS.format(module=module, port=amqp_port, queue=queue)))
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(module)
    finally:
        sys.path.remove(str(tmp_path))
    workers = Workers(tmp_path, module, queue)
    try:
        yield mod, workers
    except BaseException:
        raise
    finally:
        workers.stop_all()
        try:
            mod.app.close()
        except Exception:
            pass
        sys.modules.pop(module, None)
        _cleanup(amqp_port, queue)


def _cleanup(port: int, queue: str) -> None:
    """Remove this test's queue and exchange (matters on a shared external broker)."""
    import pika

    try:
        c = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                                              socket_timeout=3, blocked_connection_timeout=3))
    except Exception:
        return
    try:
        ch = c.channel()
        ch.queue_delete(queue)
        ch.exchange_delete(queue)
    except Exception:
        pass
    finally:
        if c.is_open:
            c.close()


def _explain(workers: Workers) -> str:
    return "worker logs:\n" + workers.log_tail()


@pytest.mark.timeout(TEST_LIMIT)
def test_delay_results_through_rpc_backend(celery_env):
    mod, workers = celery_env
    workers.start("w1")
    try:
        results = [mod.add.delay(i, i * 10) for i in range(5)]
        assert [r.get(timeout=15) for r in results] == [i * 11 for i in range(5)]
        assert all(r.state == "SUCCESS" for r in results)
        bad = mod.boom.delay("kaput")
        with pytest.raises(ValueError, match="kaput"):
            bad.get(timeout=15)
        assert bad.state == "FAILURE"
        # apply_async with explicit options
        r = mod.add.apply_async((40, 2), priority=3, expires=60)
        assert r.get(timeout=15) == 42
    except BaseException:
        print(_explain(workers))
        raise


@pytest.mark.slow
@pytest.mark.timeout(TEST_LIMIT)
def test_retry_with_countdown_eventually_succeeds(celery_env, tmp_path):
    mod, workers = celery_env
    workers.start("w1")
    marker = tmp_path / "flaky.txt"
    try:
        t0 = time.monotonic()
        r = mod.flaky.delay(str(marker))
        assert r.get(timeout=30) == 2
        elapsed = time.monotonic() - t0
        attempts = marker.read_text().splitlines()
        assert [line.split()[1] for line in attempts] == ["0", "1", "2"]
        times = [float(line.split()[0]) for line in attempts]
        # each retry waited for its countdown (ETA) of 1 s
        assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9
        assert elapsed >= 1.8
    except BaseException:
        print(_explain(workers))
        raise


@pytest.mark.slow
@pytest.mark.timeout(TEST_LIMIT)
def test_acks_late_task_runs_again_after_worker_sigkill(celery_env, tmp_path):
    mod, workers = celery_env
    w1 = workers.start("w1")
    marker = tmp_path / "slow.txt"
    try:
        r = mod.slow.delay(str(marker))
        deadline = time.monotonic() + 20
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline, "task did not start"
            time.sleep(0.05)
        first_pid, first_redelivered = marker.read_text().split()
        assert int(first_pid) == w1.pid and first_redelivered == "0"
        workers.kill9(w1)  # mid-task: the message was never acked
        w2 = workers.start("w2")
        assert r.get(timeout=30) == 2
        runs = [line.split() for line in marker.read_text().splitlines()]
        assert len(runs) == 2
        assert int(runs[1][0]) == w2.pid
        assert runs[1][1] == "1"  # the broker redelivered it (redelivered flag set)
    except BaseException:
        print(_explain(workers))
        raise
