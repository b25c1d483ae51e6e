"""The container image (docker/Dockerfile), built and run without a Docker engine.

This machine has no Docker daemon and no image registry, so the image is built with buildah
(``--storage-driver vfs``, ``--isolation chroot``) on a local base image made with debootstrap
from the Debian mirror apt already uses, and the project is installed from wheels built here
beforehand (the Dockerfile uses a ``wheels/`` directory of the build context when there is one).

- ``localhost/pybase:bookworm`` (Debian minbase + python3, python3-venv, python3-pip,
  ca-certificates) is built once and kept across runs;
- ``localhost/burrowmq:test`` is built from this checkout on every run and removed at the end
  (set ``BURROWMQ_KEEP_TEST_IMAGE=1`` to keep it);
- the broker runs in a buildah container that shares the host's network, on free ports.

Needs root, ``buildah`` and (for the first, uncached run) ``debootstrap``: CI installs them with
``apt-get install -y buildah debootstrap``; without them these tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
BASE_IMAGE = f"localhost/pybase:{SUITE}"
BASE_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
IMAGE = "localhost/burrowmq:test"
BUILDAH = ["buildah", "--storage-driver", "vfs"]
LABEL_PY = "org.burrowmq.test.python"
LABEL_GLIBC = "org.burrowmq.test.glibc"
LOCK = Path(tempfile.gettempdir()) / "burrowmq-test-docker.lock"
READY = re.compile(r"ready: amqp://[^:]+:(\d+)")


# -- helpers ---------------------------------------------------------------------------------------


def run(cmd: list, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command, capturing its output; on failure, fail with the command and its output."""
    cmd = [str(c) for c in cmd]
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"timed out after {timeout}s: {' '.join(cmd)}\n{e.stdout or ''}\n{e.stderr or ''}")
    if check and cp.returncode != 0:
        pytest.fail(
            f"exit {cp.returncode}: {' '.join(cmd)}\n--- stdout\n{cp.stdout[-6000:]}\n--- stderr\n{cp.stderr[-6000:]}"
        )
    return cp


def say(request, msg: str) -> None:
    """Print a line to the terminal even while output is captured (the numbers the notes need)."""
    print(msg)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    if capman is not None and tr is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line(f"[docker] {msg}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def image_info(ref: str) -> dict | None:
    cp = run(BUILDAH + ["images", "--json", ref], check=False, timeout=60)
    if cp.returncode != 0 or not cp.stdout.strip():
        return None
    try:
        items = json.loads(cp.stdout)
    except ValueError:
        return None
    return items[0] if items else None


def inspect_image(ref: str) -> dict:
    return json.loads(run(BUILDAH + ["inspect", "--type", "image", ref], timeout=60).stdout)


def size_bytes(info: dict | None) -> int:
    """An image's size from `buildah images --json` ("253 MB": decimal units, as buildah prints)."""
    m = re.fullmatch(r"([\d.]+)\s*([kKMGT]?B)", str((info or {}).get("size", "")).strip())
    if not m:
        return 0
    return int(float(m.group(1)) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}[m.group(2)])


def debian_mirror(suite: str) -> str | None:
    """The URI of the Debian archive apt uses here for ``suite`` (one-line and deb822 sources)."""
    entries: list[tuple[str, list[str]]] = []
    d = Path("/etc/apt/sources.list.d")
    for f in [Path("/etc/apt/sources.list"), *sorted(d.glob("*.list"))]:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):  # [arch=amd64 signed-by=...]
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = words[1:]
            if len(words) >= 2:
                entries.append((words[0], [words[1]]))
    for f in sorted(d.glob("*.sources")):
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1].isspace() and key:
                    fields[key] += " " + line.strip()
                elif ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip().lower()
                    fields[key] = value.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    for uri, suites in entries:
        if suite in suites and re.match(r"(https?|file)://", uri):
            return uri.rstrip("/")
    return None


def _mounts_under(path: str) -> list[str]:
    with open("/proc/self/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p == path or p.startswith(path + "/")), reverse=True)


def remove_rootfs(path: str) -> None:
    """Remove a debootstrap target, never following it into a mount left behind (proc, sys)."""
    for p in _mounts_under(path):
        subprocess.run(["umount", "-l", p], capture_output=True)
    if not _mounts_under(path):
        shutil.rmtree(path, ignore_errors=True)


def dpkg_version(rootfs: Path, package: str) -> str | None:
    status = (rootfs / "var/lib/dpkg/status").read_text(errors="replace")
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            m = re.search(r"^Version: (.+)$", stanza, re.M)
            return m.group(1) if m else None
    return None


# -- the images ------------------------------------------------------------------------------------


def ensure_base_image(request) -> None:
    """Build localhost/pybase:bookworm with debootstrap unless it is already there."""
    if image_info(BASE_IMAGE):
        say(request, f"base image {BASE_IMAGE}: cached")
        return
    if not shutil.which("debootstrap"):
        pytest.skip(
            f"debootstrap is not installed and the base image {BASE_IMAGE} is not cached: "
            "apt-get install -y buildah debootstrap"
        )
    mirror = debian_mirror(SUITE)
    if mirror is None:
        pytest.skip(f"no Debian '{SUITE}' mirror in /etc/apt/sources.list(.d) to debootstrap the base image from")
    t0 = time.monotonic()
    rootfs = tempfile.mkdtemp(prefix="pybase-rootfs-", dir="/var/tmp")
    ctr = None
    try:
        run(["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", SUITE, rootfs, mirror], timeout=420)
        t_boot = time.monotonic() - t0
        r = Path(rootfs)
        for junk in [*r.glob("var/cache/apt/archives/*.deb"), *r.glob("var/lib/apt/lists/*_*")]:
            junk.unlink()
        pythons = sorted(p.name for p in r.glob("usr/bin/python3.*") if re.fullmatch(r"python3\.\d+", p.name))
        assert pythons, "debootstrap installed no python3.X"
        py = pythons[-1].removeprefix("python")
        glibc = re.match(r"(\d+\.\d+)", dpkg_version(r, "libc6") or "2.17").group(1)
        ctr = run(BUILDAH + ["from", "scratch"], timeout=60).stdout.strip()
        run(BUILDAH + ["copy", ctr, rootfs, "/"], timeout=300)
        run(BUILDAH + [
            "config",
            "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env", "LANG=C.UTF-8",
            "--cmd", "/bin/bash",
            "--label", f"{LABEL_PY}={py}",
            "--label", f"{LABEL_GLIBC}={glibc}",
            ctr,
        ], timeout=60)
        run(BUILDAH + ["commit", "--rm", ctr, BASE_IMAGE], timeout=300)
        ctr = None
    finally:
        if ctr:
            run(BUILDAH + ["rm", ctr], check=False, timeout=60)
        remove_rootfs(rootfs)
    say(request, f"base image {BASE_IMAGE}: built in {time.monotonic() - t0:.0f}s "
                 f"(debootstrap {t_boot:.0f}s; Python {py}, glibc {glibc})")


def base_python_and_glibc() -> tuple[str, str]:
    """The base image's Python X.Y and glibc X.Y, from its labels or by asking it."""
    info = inspect_image(BASE_IMAGE)
    labels = (info.get("OCIv1", {}).get("config", {}) or {}).get("Labels") or {}
    if labels.get(LABEL_PY) and labels.get(LABEL_GLIBC):
        return labels[LABEL_PY], labels[LABEL_GLIBC]
    ctr = run(BUILDAH + ["from", BASE_IMAGE], timeout=120).stdout.strip()
    try:
        out = run(BUILDAH + ["run", "--isolation", "chroot", ctr, "--", "python3", "-c",
                             "import platform, sys; print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1])"],
                  timeout=120).stdout.split()
    finally:
        run(BUILDAH + ["rm", ctr], check=False, timeout=60)
    return out[0], ".".join(out[1].split(".")[:2])


def build_wheels(ctx: Path, py: str, glibc: str) -> list[str]:
    """The project's wheel and its dependencies' wheels for the base image's Python and glibc."""
    wheels = ctx / "wheels"
    wheels.mkdir()
    # Build the project from the context's copy, so the checkout gets no build/ or egg-info.
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", wheels, ctx], timeout=300)
    shutil.rmtree(ctx / "build", ignore_errors=True)
    for egg in ctx.glob("*.egg-info"):
        shutil.rmtree(egg, ignore_errors=True)
    own = sorted(wheels.glob("burrowmq-*.whl"))
    assert own, f"no burrowmq wheel in {wheels}"
    arch = platform.machine()
    major, minor = (int(x) for x in glibc.split("."))
    platforms = [f"manylinux_{major}_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--dest", wheels,
           "--python-version", py, "--implementation", "cp", "--abi", f"cp{py.replace('.', '')}"]
    for p in platforms:
        cmd += ["--platform", p]
    run(cmd + [own[0]], timeout=300)
    return sorted(p.name for p in wheels.glob("*.whl"))


@pytest.fixture(scope="module")
def image(request, tmp_path_factory):
    """Build localhost/burrowmq:test from this checkout; yield facts about the build."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the image is built with buildah, on Linux only")
    if not shutil.which("buildah"):
        pytest.skip("buildah is not installed (CI installs it: apt-get install -y buildah debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("building the image with buildah (vfs storage, chroot isolation) and debootstrap needs root")
    facts: dict = {}
    t_all = time.monotonic()
    with open(LOCK, "w") as lock:  # one build or run at a time on this machine
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            t0 = time.monotonic()
            ensure_base_image(request)
            facts["base_s"] = time.monotonic() - t0
            py, glibc = base_python_and_glibc()

            t0 = time.monotonic()
            ctx = tmp_path_factory.mktemp("context") / "burrowmq"
            shutil.copytree(ROOT, ctx, symlinks=True, ignore=shutil.ignore_patterns(
                ".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "build", "dist",
                "wheels", "burrowmq-data", ".benchmarks", "results", "*.log"))
            names = build_wheels(ctx, py, glibc)
            facts["wheels_s"] = time.monotonic() - t0
            say(request, f"wheels for Python {py} / glibc {glibc} ({facts['wheels_s']:.0f}s): {' '.join(names)}")

            t0 = time.monotonic()
            run(BUILDAH + [
                "bud", "--isolation", "chroot", "--format", "docker", "--layers=false",
                "--build-arg", f"BASE={BASE_IMAGE}", "-f", ctx / "docker" / "Dockerfile", "-t", IMAGE, ctx,
            ], timeout=480)
            facts["build_s"] = time.monotonic() - t0
            info = image_info(IMAGE)
            assert info, f"{IMAGE} was not built"
            base = image_info(BASE_IMAGE)
            facts["size"], facts["base_size"] = size_bytes(info), size_bytes(base)
            say(request, f"image {IMAGE}: built in {facts['build_s']:.0f}s; size {info.get('size')} "
                         f"(base {BASE_IMAGE} {(base or {}).get('size')}, so BurrowMQ adds "
                         f"{(facts['size'] - facts['base_size']) / 1e6:.0f} MB); "
                         f"setup total {time.monotonic() - t_all:.0f}s")
            facts["inspect"] = inspect_image(IMAGE)
            yield facts
        finally:
            if not os.environ.get("BURROWMQ_KEEP_TEST_IMAGE"):
                cp = run(BUILDAH + ["rmi", IMAGE], check=False, timeout=120)
                if cp.returncode != 0 and image_info(IMAGE):
                    print(f"could not remove {IMAGE}: {cp.stderr}", file=sys.stderr)


# -- the tests -------------------------------------------------------------------------------------


def test_image_config(image):
    """What `docker run` takes from the image: user, ports, volume, env, command, health check."""
    docker = image["inspect"].get("Docker", {}).get("config", {})
    assert docker.get("User", "").split(":")[0] not in ("", "0", "root")
    assert {"5672/tcp", "15672/tcp", "15692/tcp"} <= set(docker.get("ExposedPorts") or {})
    assert "/var/lib/burrowmq" in (docker.get("Volumes") or {})
    env = dict(e.split("=", 1) for e in docker.get("Env") or [])
    assert env.get("BROKER_DATA_DIR") == "/var/lib/burrowmq"
    assert env.get("PATH", "").startswith("/opt/burrowmq/bin:")
    cmd = docker.get("Cmd") or []
    assert cmd[:2] == ["broker", "serve"] and "--host" in cmd and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    health = (docker.get("Healthcheck") or {}).get("Test") or []
    assert health and health[0] == "CMD-SHELL" and "broker status" in health[1]


def test_compose_file_matches_image(image):
    yaml = pytest.importorskip("yaml")
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    svc = compose["services"]["broker"]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / "docker" / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == \
        (ROOT / "docker" / "Dockerfile").resolve()
    assert {"5672:5672", "15672:15672", "15692:15692"} <= set(svc["ports"])
    assert any(v.endswith(":/var/lib/burrowmq") for v in svc["volumes"])
    assert set(svc["environment"]) >= {"BROKER_DEFAULT_USER", "BROKER_DEFAULT_PASS"}
    assert "broker status" in " ".join(svc["healthcheck"]["test"])


def _descendants(pid: int) -> list[int]:
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _amqp_answers(port: int) -> bool:
    """True once the port answers an AMQP protocol header with a method frame (Connection.Start)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"AMQP\x00\x00\x09\x01")
            s.settimeout(2)
            return s.recv(1)[:1] == b"\x01"
    except OSError:
        return False


def test_container_serves_amqp_and_management(image, request, tmp_path, record_property):
    pika = pytest.importorskip("pika")
    amqp, mgmt, metrics = free_port(), free_port(), free_port()
    name = f"burrowmq-test-{uuid.uuid4().hex[:8]}"
    t_from = time.monotonic()
    ctr = run(BUILDAH + ["from", "--name", name, IMAGE], timeout=180).stdout.strip()
    t_from = time.monotonic() - t_from
    log_path = tmp_path / "container.log"
    proc = None
    try:
        # RabbitMQ's variable names, as the guides' `docker run` line gives them
        env = ["--env", "RABBITMQ_DEFAULT_USER=admin", "--env", "RABBITMQ_DEFAULT_PASS=admin",
               "--env", f"BROKER_MANAGEMENT_PORT={mgmt}", "--env", f"BROKER_METRICS_PORT={metrics}"]
        # The image's CMD with the test's ports: it shares the host network, so not 5672, and
        # only on loopback.
        cmd = BUILDAH + ["run", "--isolation", "chroot", *env, ctr, "--",
                         "broker", "serve", "--host", "127.0.0.1", "--port", str(amqp), "--allow-remote-guest"]
        with open(log_path, "wb") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = t0 + 60
        while not _amqp_answers(amqp):
            assert proc.poll() is None, f"container exited with {proc.returncode}:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"AMQP port never answered:\n{log_path.read_text()}"
            time.sleep(0.05)
        start_s = time.monotonic() - t0
        while not READY.search(log_path.read_text(errors="replace")):  # management is up too
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        say(request, f"container start: {start_s:.2f}s from `buildah run` to the AMQP port answering "
                     f"(after {t_from:.1f}s for `buildah from` to create the container, vfs copying the image)")
        record_property("container_start_s", round(start_s, 2))
        record_property("image_size_bytes", image["size"])

        # AMQP as the user from the environment; guest was not created.
        params = pika.ConnectionParameters("127.0.0.1", amqp, credentials=pika.PlainCredentials("admin", "admin"))
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        q = f"docker-{uuid.uuid4().hex[:8]}"
        ch.queue_declare(q, durable=True)
        for i in range(10):
            ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        got = []
        for _method, _props, body in ch.consume(q, inactivity_timeout=5):
            if body is None:
                break
            got.append(body)
            ch.basic_ack(_method.delivery_tag)
            if len(got) == 10:
                break
        ch.cancel()
        assert got == [f"m{i}".encode() for i in range(10)]
        with pytest.raises(pika.exceptions.ProbableAuthenticationError):
            pika.BlockingConnection(pika.ConnectionParameters(
                "127.0.0.1", amqp, credentials=pika.PlainCredentials("guest", "guest"), connection_attempts=1))

        # The management API, with the host checkout's CLI...
        host_env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        url = ["--url", f"http://127.0.0.1:{mgmt}", "--user", "admin", "--password", "admin"]
        out = run([sys.executable, "-m", "cli", "status", *url], cwd=ROOT, env=host_env, timeout=60).stdout
        assert "/var/lib/burrowmq" in out, out
        out = run([sys.executable, "-m", "cli", "list-queues", *url], cwd=ROOT, env=host_env, timeout=60).stdout
        assert q in out, out
        conn.close()
        _log_in_to_the_web_ui(request, f"http://127.0.0.1:{mgmt}", "admin", "admin")

        # ... and the image's own health check, as the container runs it.
        health = image["inspect"]["Docker"]["config"]["Healthcheck"]["Test"]
        run(BUILDAH + ["run", "--isolation", "chroot", *env, ctr, "--", "/bin/sh", "-c", health[1]], timeout=60)
        bad = ["--env", "BROKER_DEFAULT_USER=admin", "--env", "BROKER_DEFAULT_PASS=wrong",
               "--env", f"BROKER_MANAGEMENT_PORT={mgmt}"]
        cp = run(BUILDAH + ["run", "--isolation", "chroot", *bad, ctr, "--", "/bin/sh", "-c", health[1]],
                 timeout=60, check=False)
        assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)

        # Not root, and the data dir is the broker's.
        uid = run(BUILDAH + ["run", "--isolation", "chroot", ctr, "--", "id", "-u"], timeout=60).stdout.strip()
        assert uid.isdigit() and uid != "0", uid
        # the broker's own process, not buildah's chroot helpers above it
        broker_pids = [p for p in _descendants(proc.pid)
                       if "serve" in _cmdline(p) and not _cmdline(p)[0].startswith("buildah")]
        assert broker_pids, "broker process not found under buildah run"
        for p in broker_pids:
            assert os.stat(f"/proc/{p}").st_uid != 0, "the broker runs as root"

        # SIGTERM to the broker itself (as `docker stop` does): a clean stop.
        rc = _stop(proc)
        text = log_path.read_text(errors="replace")
        assert rc == 0, f"exit {rc}:\n{text}"
        assert "stopping" in text, text
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc)
        run(BUILDAH + ["rm", ctr], check=False, timeout=120)


def _log_in_to_the_web_ui(request, url: str, user: str, password: str) -> None:
    """Log in to the container's web UI in headless Chromium; without a browser here, check the
    UI is served and the API login works, and say so."""
    chromium = "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None or not os.path.exists(chromium):
        import base64
        import urllib.request

        with urllib.request.urlopen(url + "/", timeout=15) as r:
            assert b'src="/ui/app.js"' in r.read()
        auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        with urllib.request.urlopen(urllib.request.Request(url + "/api/whoami", headers={"Authorization": auth}),
                                    timeout=15) as r:
            assert json.loads(r.read())["name"] == user
        say(request, "web UI: no Chromium/Playwright here, so the UI's files and the API login were checked instead")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/")
            page.get_by_label("Username").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Login").click()
            page.wait_for_selector("text=Totals", timeout=30000)
            assert f"{user} (administrator)" in page.inner_text("#whoami")
            assert errors == [], errors
        finally:
            browser.close()


def _stop(proc: subprocess.Popen) -> int:
    """Stop the broker under `buildah run`: SIGTERM to the broker's own process, so that buildah
    sees its child exit and cleans up after itself; SIGKILL to the whole group only as a last resort
    (buildah then leaves its run directory behind)."""
    for p in _descendants(proc.pid):
        cmd = _cmdline(p)
        if "serve" in cmd and not cmd[0].startswith("buildah"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(30)
