"""Test fixtures: a real ``broker serve`` subprocess on a free port.

``broker`` is one broker for the whole session (tests use unique names);
``fresh_broker`` starts a private one for tests that need a clean slate or
that stop it.  Both log to a file that is printed when a test fails.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready: amqps?://[^:]+:(\d+)")  # the plain port, or the TLS one when there is no plain one
TLS_READY = re.compile(r"ready: .*amqps://[^:]+:(\d+)")


class BrokerProcess:
    """A ``broker serve`` child process; ``port`` is the AMQP port it bound."""

    def __init__(self, data_dir: Path, log_path: Path, extra: list[str] | None = None, env: dict | None = None):
        self.data_dir = data_dir
        self.log_path = log_path
        self.extra = list(extra or [])
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.tls_port = 0  # the AMQPS port, when started with --tls-cert

    def start(self, port: int = 0, timeout: float = 15.0) -> "BrokerProcess":
        args = [
            sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1",
            "--port", str(port or self.port or 0), "--data-dir", str(self.data_dir), "--log-level", "debug",
        ]
        for opt in ("--management-port", "--metrics-port"):
            if opt not in self.extra:
                args += [opt, "0"]  # many brokers run at once: never fight over 15672 / 15692
        args += self.extra
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        if self.env:
            env.update(self.env)
        self._log = open(self.log_path, "ab")
        start_at = self.log_path.stat().st_size
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()[start_at:].decode(errors="replace")
            m = READY.search(text)
            if m:
                self.port = int(m.group(1))
                tls = TLS_READY.search(text)
                self.tls_port = int(tls.group(1)) if tls else 0
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"broker exited with {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        self.proc.kill()
        raise RuntimeError("broker did not become ready in time:\n" + self.log_text())

    def stop(self, sig: int | None = None, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._log.close()
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _make(tmp: Path, extra=None, env=None) -> BrokerProcess:
    data = tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    return BrokerProcess(data, tmp / "broker.log", extra, env)


class ExternalBroker:
    """A broker someone else runs (TEST_BROKER_PORT): to check the tests' expectations
    against RabbitMQ itself, e.g. ``TEST_BROKER_PORT=5672 pytest tests/test_tutorials.py``."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = None

    def log_text(self) -> str:
        return ""


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    """One shared broker for the session."""
    if os.environ.get("TEST_BROKER_PORT"):
        yield ExternalBroker(int(os.environ["TEST_BROKER_PORT"]))
        return
    b = _make(tmp_path_factory.mktemp("shared-broker")).start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker(tmp_path):
    """A private broker for one test; the test may stop and restart it."""
    b = _make(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path):
    """Make private brokers with extra command-line options or environment."""
    made: list[BrokerProcess] = []

    def make(extra=None, env=None, start=True, name="b") -> BrokerProcess:
        b = _make(tmp_path / f"{name}{len(made)}", extra, env)
        made.append(b)
        return b.start() if start else b

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def uid():
    """A unique suffix for queue and exchange names on the shared broker."""
    return uuid.uuid4().hex[:10]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for name in ("fresh_broker", "broker"):
            b = item.funcargs.get(name)
            if isinstance(b, BrokerProcess):
                tail = b.log_text()[-4000:]
                rep.sections.append((f"{name} log (tail)", tail))


@pytest.fixture
def small_disk(tmp_path):
    """Mount a real tmpfs of a given size (a small disk to fill); needs root."""
    mounted: list = []

    def mount(size: str):
        mnt = tmp_path / f"disk{len(mounted)}"
        mnt.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium (Debian's package, driven by Playwright) for a browser-test module;
    such a module imports ``ui_browser``, which skips it when either is missing."""
    from ui_browser import CHROMIUM, sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()
