"""The ``broker`` command: ``broker serve`` runs the broker in the foreground."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys

import click

from broker import __version__

LOG_LEVELS = ("debug", "info", "warning", "error")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="broker (BurrowMQ)")
def main() -> None:
    """BurrowMQ: an AMQP 0-9-1 message broker that RabbitMQ clients use unchanged."""


def _check_watermark(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from broker.alarms import parse_watermark

    try:
        parse_watermark(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_size(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from broker.alarms import parse_size

    try:
        parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


SECRET_OPTIONS = {"default_pass"}


def _load_config(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """--config FILE (or BROKER_CONFIG_FILE): TOML whose keys are serve's long option
    names; its values become defaults, so flags and environment still win."""
    if not path:
        return path
    import tomllib

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise click.ClickException(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"config file {path} cannot be read: {exc}") from None
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.name != "config"}
    defaults: dict = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        p = params.get(name)
        if p is None:
            known = ", ".join(sorted(n.replace("_", "-") for n in params))
            raise click.ClickException(f"config file {path}: unknown key '{key}' (known keys: {known})")
        try:
            v = p.type_cast_value(ctx, value)
            if p.callback is not None:
                v = p.callback(ctx, p, v)
        except click.BadParameter as exc:
            raise click.ClickException(f"config file {path}: bad value for '{key}': {exc.message}") from None
        defaults[name] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


class ServeCommand(click.Command):
    """Reports a bad option, environment variable or config value in one line."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: object) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)  # type: ignore[arg-type]
        except click.BadParameter as exc:
            raise click.ClickException(exc.format_message()) from None


@main.command(cls=ServeCommand)
@click.option(
    "--config", envvar="BROKER_CONFIG_FILE", is_eager=True, expose_value=False, callback=_load_config,
    type=click.Path(dir_okay=False), help="TOML file of serve options (keys: the long option names).",
)
@click.option("--host", envvar="BROKER_HOST", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option("--port", envvar="BROKER_PORT", default=5672, show_default=True, type=int,
              help="AMQP port (0 picks a free one).")
@click.option("--data-dir", envvar="BROKER_DATA_DIR", default="./burrowmq-data", show_default=True,
              help="Where durable state is kept.")
@click.option("--log-level", envvar="BROKER_LOG_LEVEL", default="info", show_default=True,
              type=click.Choice(LOG_LEVELS))
@click.option("--default-user", envvar="BROKER_DEFAULT_USER", default="guest", show_default=True,
              help="User created on first start, with full rights on the default vhost.")
@click.option("--default-pass", envvar="BROKER_DEFAULT_PASS", default="guest", show_default=True,
              help="Password of the default user.")
@click.option("--default-vhost", envvar="BROKER_DEFAULT_VHOST", default="/", show_default=True,
              help="Vhost created on first start.")
@click.option("--allow-remote-guest", envvar="BROKER_ALLOW_REMOTE_GUEST", is_flag=True,
              help="Let the user 'guest' log in from other hosts than loopback (off, like RabbitMQ).")
@click.option("--heartbeat", envvar="BROKER_HEARTBEAT", default=60, show_default=True, type=int,
              help="Heartbeat interval offered (s).")
@click.option(
    "--memory-high-watermark", envvar="BROKER_MEMORY_HIGH_WATERMARK", default="0.4", show_default=True,
    callback=_check_watermark,
    help="Block publishers above this resident memory: a fraction of RAM (0.4) or a size (512MB).",
)
@click.option(
    "--disk-free-limit", envvar="BROKER_DISK_FREE_LIMIT", default="50MB", show_default=True, callback=_check_size,
    help="Block publishers when the data dir's disk has less free space than this (0 disables).",
)
@click.option("--management-port", envvar="BROKER_MANAGEMENT_PORT", default=15672, show_default=True, type=int,
              help="Port of the management HTTP API (0 picks a free one, -1 turns it off).")
@click.option("--management-host", envvar="BROKER_MANAGEMENT_HOST", default=None, show_default="the --host value",
              help="Address the management HTTP API listens on.")
@click.option("--metrics-port", envvar="BROKER_METRICS_PORT", default=15692, show_default=True, type=int,
              help="Port of the Prometheus /metrics endpoint (0 picks a free one, -1 turns it off).")
@click.option(
    "--management-max-body-size", envvar="BROKER_MANAGEMENT_MAX_BODY_SIZE", default="20MiB", show_default=True,
    callback=_check_size, help="Largest request body the management API reads (413 above it).",
)
@click.option("--http-max-connections", envvar="BROKER_HTTP_MAX_CONNECTIONS", default=1024, show_default=True,
              type=click.IntRange(min=1),
              help="Open connections each HTTP listener (management API, metrics) holds; more get 503.")
@click.option("--http-header-timeout", envvar="BROKER_HTTP_HEADER_TIMEOUT", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds an HTTP request line and headers may take to arrive (then 408 and close).")
@click.option("--http-body-timeout", envvar="BROKER_HTTP_BODY_TIMEOUT", default=60.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds an HTTP request body may take to arrive (then 408 and close).")
@click.option("--http-keepalive-timeout", envvar="BROKER_HTTP_KEEPALIVE_TIMEOUT", default=60.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds an HTTP connection may stay idle between requests.")
@click.option("--definitions", envvar="BROKER_DEFINITIONS", default=None,
              type=click.Path(dir_okay=False),
              help="Definitions JSON (RabbitMQ's export format) to import at boot.")
@click.pass_context
def serve(ctx: click.Context, **opts: object) -> None:
    """Run the broker in the foreground until SIGINT or SIGTERM."""
    o = opts
    _setup_logging(str(o["log_level"]))
    log = logging.getLogger("broker")
    log.info("configuration: %s", _describe_config(ctx, opts))
    from broker.server import Broker

    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        uvloop = None

    host = str(o["host"])
    try:
        broker = Broker(
            host=host,
            port=int(o["port"]),  # type: ignore[call-overload]
            data_dir=str(o["data_dir"]),
            default_user=str(o["default_user"]),
            default_pass=str(o["default_pass"]),
            default_vhost=str(o["default_vhost"]),
            loopback_users=() if o["allow_remote_guest"] else None,
            heartbeat=int(o["heartbeat"]),  # type: ignore[call-overload]
            memory_high_watermark=str(o["memory_high_watermark"]),
            disk_free_limit=str(o["disk_free_limit"]),
            definitions_file=o["definitions"],  # type: ignore[arg-type]
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        from broker.server import DefinitionsError
        from storage.log import DataDirError
        from broker.metadata import MetadataSaveError

        try:
            await broker.start()
        except (DataDirError, DefinitionsError, MetadataSaveError) as exc:
            log.error("%s", exc)
            raise SystemExit(1) from None
        except OSError as exc:
            log.error("cannot listen on %s:%s: %s (is another broker running? try --port)", host, o["port"], exc)
            raise SystemExit(1) from None
        servers = []
        from broker.alarms import parse_size
        from broker.httpguard import HttpLimits
        from broker.management import ManagementServer
        from broker.metrics import MetricsServer

        limits = HttpLimits(
            max_body_size=parse_size(str(o["management_max_body_size"])),
            max_connections=int(o["http_max_connections"]),  # type: ignore[call-overload]
            header_timeout=float(o["http_header_timeout"]),  # type: ignore[arg-type]
            body_timeout=float(o["http_body_timeout"]),  # type: ignore[arg-type]
            keepalive_timeout=float(o["http_keepalive_timeout"]),  # type: ignore[arg-type]
        )

        for kind, cls, port_opt, host_opt, what in (
            ("management", ManagementServer, "management_port", "management_host", "management API"),
            ("metrics", MetricsServer, "metrics_port", None, "Prometheus metrics"),
        ):
            port = int(o[port_opt])  # type: ignore[call-overload]
            if port < 0:
                continue
            shost = str(o[host_opt] or host) if host_opt else host
            srv = cls(broker, shost, port, limits=limits)
            try:
                await srv.start()
            except OSError as exc:
                log.error("cannot listen on %s:%s for the %s: %s (try --%s-port)", shost, port, what, exc, kind)
                for s in servers:
                    await s.stop()
                await broker.stop()
                raise SystemExit(1) from None
            servers.append(srv)
            path = "/metrics" if kind == "metrics" else ""
            logging.getLogger(f"broker.{kind}").info("%s listening on http://%s:%s%s", what, shost, srv.port, path)
        # Queued messages are many small tracked objects: collect young objects less
        # often (measured: +20% deliveries per CPU second), and keep the start-up
        # objects out of every collection.
        gc.collect()
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)
        log.info(
            "BurrowMQ %s ready: amqp://%s:%s (event loop %s)",
            __version__, host, broker.port, "uvloop" if uvloop is not None else "asyncio",
        )
        await stop.wait()
        t0 = loop.time()
        log.info("stopping: no new connections; finishing in-flight confirms, then closing clients")
        for s in servers:
            await s.stop()
        await broker.stop()
        log.info("stopped in %.2f s", loop.time() - t0)

    if uvloop is not None:
        uvloop.run(run())
    else:
        asyncio.run(run())


def _describe_config(ctx: click.Context, opts: dict) -> str:
    """``name=value (source)`` for every option, secrets masked."""
    from click.core import ParameterSource

    names = {
        ParameterSource.COMMANDLINE: "flag",
        ParameterSource.ENVIRONMENT: "env",
        ParameterSource.DEFAULT_MAP: "config file",
        ParameterSource.DEFAULT: "default",
    }
    parts = []
    for name, value in opts.items():
        src = ctx.get_parameter_source(name)
        shown = "****" if name in SECRET_OPTIONS else value
        parts.append(f"{name.replace('_', '-')}={shown} ({names.get(src, 'default')})")  # type: ignore[arg-type]
    return ", ".join(parts)


# -- admin commands: rabbitmqctl's verbs, through a running broker's management API ------------
#
# They use only the standard library (urllib), so that the admin commands stay light.

import functools  # noqa: E402
import json  # noqa: E402
import urllib.error  # noqa: E402
import urllib.parse  # noqa: E402
import urllib.request  # noqa: E402
from base64 import b64encode  # noqa: E402
from typing import Any, Callable  # noqa: E402

EX_UNAVAILABLE = 69  # as rabbitmqctl when the node cannot be reached


class AdminError(click.ClickException):
    """One clear line on stderr, non-zero exit."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class AdminApi:
    """A small client of the management API (urllib, basic auth, JSON)."""

    def __init__(self, url: str, user: str, password: str, as_json: bool = False) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.auth = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
        self.as_json = as_json

    def call(self, method: str, path: str, body: Any = None, not_found: str | None = None,
             query: dict | None = None) -> Any:
        url = f"{self.url}/api/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Authorization": self.auth, "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            reason = ""
            try:
                reason = json.loads(raw).get("reason", "")
            except (ValueError, AttributeError):
                reason = raw.decode(errors="replace").strip()
            if e.code == 404 and not_found:
                raise AdminError(not_found) from None
            if e.code == 401:
                raise AdminError(
                    f"the broker at {self.url} refused user '{self.user}': {reason or 'Login failed'} "
                    "(see --user/--password, BROKER_USER/BROKER_PASS)"
                ) from None
            raise AdminError(reason or f"HTTP {e.code} {e.reason}") from None
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise AdminError(
                f"cannot reach the broker at {self.url}: {why}; is it running? (broker serve)", EX_UNAVAILABLE
            ) from None
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise AdminError(f"the server at {self.url} did not answer JSON: is it a BurrowMQ management API?") \
                from None

    def exists(self, path: str) -> bool:
        try:
            self.call("GET", path, not_found="\0")
        except AdminError as e:
            if e.message == "\0":
                return False
            raise
        return True


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), sort_keys=True)
    return str(v)


def _dig(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _print_rows(api: AdminApi, items: list[dict], columns: list[str], spec: dict[str, str]) -> None:
    """An aligned table (or JSON with --json) of ``columns`` of ``items``."""
    rows = [[_dig(it, spec.get(c, c)) for c in columns] for it in items]
    if api.as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2))
        return
    text = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(c)] + [len(r[i]) for r in text]) for i, c in enumerate(columns)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    click.echo(line(columns))
    for r in text:
        click.echo(line(r))


def _columns(given: tuple, default: list[str], spec: dict[str, str]) -> list[str]:
    cols = list(given) or default
    bad = [c for c in cols if c not in spec and not c.startswith("message_stats.")]
    if bad:
        raise click.UsageError(f"unknown column '{bad[0]}'; valid columns: {', '.join(spec)}")
    return cols


def admin_command(name: str, listing: bool = False) -> Callable:
    """A verb that talks to the broker: adds --url/--user/--password (and --json for listings)."""

    def deco(f: Callable) -> Any:
        @functools.wraps(f)
        def wrapper(url: str, user: str, password: str, as_json: bool = False, **kw: Any) -> Any:
            return f(AdminApi(url, user, password, as_json), **kw)

        opts = [
            click.option(
                "--url",
                default=lambda: os.environ.get("BROKER_URL", "http://localhost:15672"),
                show_default="http://localhost:15672 (env BROKER_URL)",
                help="The broker's management API.",
            ),
            click.option(
                "--user",
                default=lambda: os.environ.get("BROKER_USER", "guest"),
                show_default="guest (env BROKER_USER)",
                help="User to log in to the management API as.",
            ),
            click.option(
                "--password",
                default=lambda: os.environ.get("BROKER_PASS", "guest"),
                show_default="guest (env BROKER_PASS)",
                help="Its password.",
            ),
        ]
        if listing:
            opts.append(click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table."))
        for o in opts:
            wrapper = o(wrapper)
        return main.command(name)(wrapper)

    return deco


VHOST_OPTION = click.option("-p", "--vhost", default="/", show_default=True, help="Virtual host.")

# listing columns: rabbitmqctl's names -> paths in the API's JSON
QUEUE_COLUMNS = {
    c: c for c in (
        "name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
        "messages_unacknowledged", "consumers", "state", "type", "policy", "exclusive_consumer_tag",
        "message_bytes", "message_bytes_ready", "node",
    )
}
QUEUE_COLUMNS.update(owner_pid="owner_pid_details.name", publish="message_stats.publish",
                     deliver_get="message_stats.deliver_get", ack="message_stats.ack")
EXCHANGE_COLUMNS = {c: c for c in ("name", "type", "durable", "auto_delete", "internal", "arguments", "vhost",
                                   "policy")}
BINDING_COLUMNS = {
    "source_name": "source", "source_kind": "source_kind", "destination_name": "destination",
    "destination_kind": "destination_type", "routing_key": "routing_key", "arguments": "arguments",
    "vhost": "vhost", "properties_key": "properties_key",
}
CONNECTION_COLUMNS = {c: c for c in (
    "name", "user", "vhost", "peer_host", "peer_port", "host", "port", "state", "channels", "protocol", "ssl",
    "timeout", "frame_max", "channel_max", "client_properties", "recv_oct", "send_oct", "connected_at",
    "auth_mechanism", "type", "node",
)}
CONSUMER_COLUMNS = {
    "queue_name": "queue.name", "channel_pid": "channel_details.name", "channel": "channel_details.name",
    "connection": "channel_details.connection_name", "consumer_tag": "consumer_tag",
    "ack_required": "ack_required", "prefetch_count": "prefetch_count", "active": "active",
    "activity_status": "activity_status", "arguments": "arguments", "exclusive": "exclusive",
}
VHOST_COLUMNS = {c: c for c in ("name", "description", "tags", "tracing", "messages", "messages_ready",
                                "messages_unacknowledged", "default_queue_type")}
USER_COLUMNS = {"user": "name", "name": "name", "tags": "tags"}
PERMISSION_COLUMNS = {c: c for c in ("user", "vhost", "configure", "write", "read")}


@admin_command("add-user")
@click.argument("username")
@click.argument("new_password", metavar="PASSWORD")
@click.option("--tags", default="", help="Comma-separated tags (administrator, monitoring, management...).")
def add_user(api: AdminApi, username: str, new_password: str, tags: str) -> None:
    """Create a user (it has no permissions until set-permissions)."""
    if api.exists(f"users/{_q(username)}"):
        raise AdminError(f"user '{username}' already exists")
    click.echo(f'Adding user "{username}" ...')
    api.call("PUT", f"users/{_q(username)}", {"password": new_password, "tags": tags})


@admin_command("delete-user")
@click.argument("username")
def delete_user(api: AdminApi, username: str) -> None:
    """Delete a user (its connections are closed)."""
    click.echo(f'Deleting user "{username}" ...')
    api.call("DELETE", f"users/{_q(username)}", not_found=f"user '{username}' does not exist")


@admin_command("change-password")
@click.argument("username")
@click.argument("new_password", metavar="PASSWORD")
def change_password(api: AdminApi, username: str, new_password: str) -> None:
    """Set a user's password (its connections are closed)."""
    click.echo(f'Changing password for user "{username}" ...')
    api.call("GET", f"users/{_q(username)}", not_found=f"user '{username}' does not exist")
    api.call("PUT", f"users/{_q(username)}", {"password": new_password})


@admin_command("set-user-tags")
@click.argument("username")
@click.argument("tags", nargs=-1)
def set_user_tags(api: AdminApi, username: str, tags: tuple) -> None:
    """Replace a user's tags (none: no tags)."""
    click.echo(f'Setting tags for user "{username}" to [{", ".join(tags)}] ...')
    api.call("GET", f"users/{_q(username)}", not_found=f"user '{username}' does not exist")
    api.call("PUT", f"users/{_q(username)}", {"tags": ",".join(tags)})


@admin_command("list-users", listing=True)
def list_users(api: AdminApi) -> None:
    """Users and their tags."""
    users = api.call("GET", "users")
    if not api.as_json:
        for u in users:
            u["tags"] = "[" + ", ".join(u.get("tags") or []) + "]"
    _print_rows(api, users, ["user", "tags"], USER_COLUMNS)


@admin_command("add-vhost")
@click.argument("name")
@click.option("--description", default=None, help="A description of the vhost.")
def add_vhost(api: AdminApi, name: str, description: str | None) -> None:
    """Create a virtual host."""
    click.echo(f'Adding vhost "{name}" ...')
    body = {"description": description} if description is not None else {}
    api.call("PUT", f"vhosts/{_q(name)}", body)


@admin_command("delete-vhost")
@click.argument("name")
def delete_vhost(api: AdminApi, name: str) -> None:
    """Delete a virtual host and everything in it."""
    click.echo(f'Deleting vhost "{name}" ...')
    api.call("DELETE", f"vhosts/{_q(name)}", not_found=f"vhost '{name}' does not exist")


@admin_command("list-vhosts", listing=True)
@click.argument("columns", nargs=-1)
def list_vhosts(api: AdminApi, columns: tuple) -> None:
    """Virtual hosts [COLUMNS: name description tags messages ...]."""
    cols = _columns(columns, ["name"], VHOST_COLUMNS)
    _print_rows(api, api.call("GET", "vhosts"), cols, VHOST_COLUMNS)


@admin_command("set-permissions")
@VHOST_OPTION
@click.argument("username")
@click.argument("conf")
@click.argument("write")
@click.argument("read")
def set_permissions(api: AdminApi, vhost: str, username: str, conf: str, write: str, read: str) -> None:
    """Set USER's configure, write and read regexes in a vhost."""
    click.echo(f'Setting permissions for user "{username}" in vhost "{vhost}" ...')
    api.call("PUT", f"permissions/{_q(vhost)}/{_q(username)}", {"configure": conf, "write": write, "read": read})


@admin_command("clear-permissions")
@VHOST_OPTION
@click.argument("username")
def clear_permissions(api: AdminApi, vhost: str, username: str) -> None:
    """Remove USER's permissions in a vhost."""
    click.echo(f'Clearing permissions for user "{username}" in vhost "{vhost}" ...')
    try:
        api.call("DELETE", f"permissions/{_q(vhost)}/{_q(username)}", not_found="\0")
    except AdminError as e:
        if e.message != "\0":
            raise
        api.call("GET", f"users/{_q(username)}", not_found=f"user '{username}' does not exist")
        api.call("GET", f"vhosts/{_q(vhost)}", not_found=f"vhost '{vhost}' does not exist")


@admin_command("list-permissions", listing=True)
@VHOST_OPTION
def list_permissions(api: AdminApi, vhost: str) -> None:
    """Users' permissions in a vhost."""
    perms = api.call("GET", f"vhosts/{_q(vhost)}/permissions", not_found=f"vhost '{vhost}' does not exist")
    _print_rows(api, perms, ["user", "configure", "write", "read"], PERMISSION_COLUMNS)


@admin_command("list-queues", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_queues(api: AdminApi, vhost: str, columns: tuple) -> None:
    """Queues of a vhost [COLUMNS: name messages messages_ready messages_unacknowledged consumers durable ...]."""
    cols = _columns(columns, ["name", "messages"], QUEUE_COLUMNS)
    qs = api.call("GET", f"queues/{_q(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    _print_rows(api, qs, cols, QUEUE_COLUMNS)


@admin_command("list-exchanges", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_exchanges(api: AdminApi, vhost: str, columns: tuple) -> None:
    """Exchanges of a vhost [COLUMNS: name type durable auto_delete internal arguments]."""
    cols = _columns(columns, ["name", "type"], EXCHANGE_COLUMNS)
    xs = api.call("GET", f"exchanges/{_q(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    _print_rows(api, xs, cols, EXCHANGE_COLUMNS)


@admin_command("list-bindings", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_bindings(api: AdminApi, vhost: str, columns: tuple) -> None:
    """Bindings of a vhost [COLUMNS: source_name source_kind destination_name destination_kind routing_key
    arguments]."""
    cols = _columns(
        columns,
        ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"],
        BINDING_COLUMNS,
    )
    bs = api.call("GET", f"bindings/{_q(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    for b in bs:
        b["source_kind"] = "exchange"
    _print_rows(api, bs, cols, BINDING_COLUMNS)


@admin_command("list-connections", listing=True)
@click.argument("columns", nargs=-1)
def list_connections(api: AdminApi, columns: tuple) -> None:
    """Client connections [COLUMNS: name user vhost peer_host peer_port state channels ...]."""
    cols = _columns(columns, ["user", "peer_host", "peer_port", "state"], CONNECTION_COLUMNS)
    _print_rows(api, api.call("GET", "connections"), cols, CONNECTION_COLUMNS)


@admin_command("list-consumers", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_consumers(api: AdminApi, vhost: str, columns: tuple) -> None:
    """Consumers of a vhost [COLUMNS: queue_name channel_pid consumer_tag ack_required prefetch_count ...]."""
    cols = _columns(
        columns,
        ["queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"],
        CONSUMER_COLUMNS,
    )
    cs = api.call("GET", f"consumers/{_q(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    _print_rows(api, cs, cols, CONSUMER_COLUMNS)


@admin_command("purge-queue")
@VHOST_OPTION
@click.argument("queue")
def purge_queue(api: AdminApi, vhost: str, queue: str) -> None:
    """Remove the ready messages of a queue."""
    missing = f"queue '{queue}' in vhost '{vhost}' does not exist"
    click.echo(f'Purging queue "{queue}" in vhost "{vhost}" ...')
    q = api.call("GET", f"queues/{_q(vhost)}/{_q(queue)}", not_found=missing)
    api.call("DELETE", f"queues/{_q(vhost)}/{_q(queue)}/contents", not_found=missing)
    click.echo(f"Purged {q.get('messages_ready', 0)} messages")


@admin_command("delete-queue")
@VHOST_OPTION
@click.argument("queue")
@click.option("--if-empty", is_flag=True, help="Only if it has no ready messages.")
@click.option("--if-unused", is_flag=True, help="Only if it has no consumers.")
def delete_queue(api: AdminApi, vhost: str, queue: str, if_empty: bool, if_unused: bool) -> None:
    """Delete a queue."""
    missing = f"queue '{queue}' in vhost '{vhost}' does not exist"
    click.echo(f'Deleting queue "{queue}" in vhost "{vhost}" ...')
    q = api.call("GET", f"queues/{_q(vhost)}/{_q(queue)}", not_found=missing)
    query = {k: "true" for k, v in (("if-empty", if_empty), ("if-unused", if_unused)) if v}
    api.call("DELETE", f"queues/{_q(vhost)}/{_q(queue)}", not_found=missing, query=query)
    click.echo(f"Queue was successfully deleted with {q.get('messages_ready', 0)} ready messages")


@admin_command("export-definitions")
@click.argument("file")
def export_definitions(api: AdminApi, file: str) -> None:
    """Write users, vhosts, permissions and durable topology as JSON to FILE ('-': stdout)."""
    defs = api.call("GET", "definitions")
    text = json.dumps(defs, indent=2, sort_keys=True) + "\n"
    if file == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(file, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise AdminError(f"cannot write {file}: {e.strerror}") from None
    counts = ", ".join(f"{len(defs.get(k) or [])} {k}" for k in ("users", "vhosts", "permissions", "exchanges",
                                                                "queues", "bindings"))
    click.echo(f'Exported definitions to "{file}": {counts}')


@admin_command("import-definitions")
@click.argument("file")
def import_definitions(api: AdminApi, file: str) -> None:
    """Create what a definitions JSON file (RabbitMQ's export format) describes ('-': stdin)."""
    try:
        raw = sys.stdin.read() if file == "-" else open(file, encoding="utf-8").read()
    except OSError as e:
        raise AdminError(f"cannot read {file}: {e.strerror}") from None
    try:
        defs = json.loads(raw)
    except ValueError as e:
        raise AdminError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(defs, dict):
        raise AdminError(f"{file} is not a definitions file (a JSON object)")
    click.echo(f'Importing definitions from "{file}" ...')
    answer = api.call("POST", "definitions", defs)
    for e in (answer or {}).get("not_applied", []):
        what = f"{e.get('section')} '{e.get('item')}'" if e.get("item") else str(e.get("section"))
        if e.get("vhost"):
            what += f" in vhost '{e['vhost']}'"
        if e.get("field"):
            what += f", field '{e['field']}'"
        click.echo(f"Not applied: {what}: {e.get('reason')}")
    click.echo("Done")


LOST_FOUND_COLUMNS = {c: c for c in ("id", "vhost", "queue", "messages", "message_bytes", "moved_at")}


@admin_command("list-lost-found", listing=True)
def list_lost_found(api: AdminApi) -> None:
    """Queue data that recovery found with no declared queue and kept aside."""
    _print_rows(api, api.call("GET", "lost-found"), list(LOST_FOUND_COLUMNS), LOST_FOUND_COLUMNS)


@admin_command("import-lost-found")
@click.argument("entry")
@click.option("-p", "--vhost", default=None, help="Target vhost (default: the one the data was made for).")
@click.option("--queue", default=None, help="Target queue (default: the one the data was made for).")
def import_lost_found(api: AdminApi, entry: str, vhost: str | None, queue: str | None) -> None:
    """Publish the messages of a lost+found ENTRY into a durable queue, then remove the entry."""
    body = {k: v for k, v in (("vhost", vhost), ("queue", queue)) if v is not None}
    r = api.call("POST", f"lost-found/{_q(entry)}/import", body,
                 not_found=f"no lost+found entry '{entry}' (see broker list-lost-found)")
    made = " (declared it)" if r.get("queue_created") else ""
    click.echo(f"Imported {r['imported']} messages into queue '{r['queue']}' in vhost '{r['vhost']}'{made}")
    if r.get("refused"):
        raise AdminError(f"{r['refused']} messages were refused by the queue (its length limit?); "
                         f"the entry is kept: make room, then delete-lost-found {entry} or import the rest")


@admin_command("delete-lost-found")
@click.argument("entry")
def delete_lost_found(api: AdminApi, entry: str) -> None:
    """Discard a lost+found ENTRY and its messages for good."""
    missing = f"no lost+found entry '{entry}' (see broker list-lost-found)"
    api.call("DELETE", f"lost-found/{_q(entry)}", not_found=missing)
    click.echo(f"Deleted lost+found entry {entry}")


@admin_command("status", listing=True)
def status(api: AdminApi) -> None:
    """The broker's version, listeners, object counts and message totals."""
    ov = api.call("GET", "overview")
    try:
        node = api.call("GET", f"nodes/{_q(ov.get('node', ''))}")
    except AdminError:
        node = {}
    if api.as_json:
        click.echo(json.dumps({"overview": ov, "node": node}, indent=2))
        return
    ot, qt, ms = ov.get("object_totals", {}), ov.get("queue_totals", {}), ov.get("message_stats", {})
    lines = [
        ("Product", f"{ov.get('product_name')} {ov.get('product_version')} "
                    f"(RabbitMQ API {ov.get('rabbitmq_version')})"),
        ("Node", ov.get("node")),
        ("Runtime", ov.get("erlang_version")),
    ]
    if node:
        lines += [
            ("Uptime (s)", int(node.get("uptime", 0)) // 1000),
            ("Memory used (MB)", round(node.get("mem_used", 0) / 2**20, 1)),
            ("Disk free (MB)", round(node.get("disk_free", 0) / 2**20, 1)),
            ("Alarms", ", ".join(a for a, on in (("memory", node.get("mem_alarm")),
                                               ("disk", node.get("disk_free_alarm"))) if on) or "none"),
            ("Data dir", node.get("data_dir")),
        ]
    for lst in ov.get("listeners", []):
        lines.append((f"Listener ({lst.get('protocol')})", f"{lst.get('ip_address')}:{lst.get('port')}"))
    for k in ("connections", "channels", "exchanges", "queues", "consumers"):
        lines.append((k.capitalize(), ot.get(k, 0)))
    lines += [
        ("Messages", qt.get("messages", 0)),
        ("Messages ready", qt.get("messages_ready", 0)),
        ("Messages unacknowledged", qt.get("messages_unacknowledged", 0)),
        ("Published", f"{ms.get('publish', 0)} ({ms.get('publish_details', {}).get('rate', 0)}/s)"),
        ("Delivered", f"{ms.get('deliver_get', 0)} ({ms.get('deliver_get_details', {}).get('rate', 0)}/s)"),
        ("Acknowledged", f"{ms.get('ack', 0)} ({ms.get('ack_details', {}).get('rate', 0)}/s)"),
    ]
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        click.echo(f"{k.ljust(w)}  {v}")



if __name__ == "__main__":
    main()
