"""``broker serve``'s configuration: its options, where their values come from, and their checks.

Every option has a flag, an environment variable (``BROKER_`` and the option's name) and a key of
the same name in the TOML file given by ``--config`` / ``BROKER_CONFIG_FILE``.  The default user,
password and vhost also answer to RabbitMQ's image variables (``RABBITMQ_DEFAULT_USER``, ...), so
a ``docker run`` line written for RabbitMQ works; the ``BROKER_`` name wins when both are set.  Flags win over
the environment, which wins over the file, which wins over the defaults: the file's values are
loaded first (``--config`` is eager) and become click's defaults.

A bad value stops the start with one line that names where it came from: the flag
(``Invalid value for '--port': ...``), the environment variable (``Invalid value for BROKER_PORT
(--port): ...``) or the file and key (``config file F: bad value for 'port': ...``).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from .flow import FLOW_THRESHOLD

LOG_LEVELS = ("debug", "info", "warning", "error")
TLS_VERIFY_MODES = ("none", "peer", "require")  # as broker.tls.VERIFY_MODES, kept here so the CLI stays light
TLS_LOGIN_FROM = ("common_name", "distinguished_name")
SECRET_OPTIONS = frozenset({"default_pass", "tls_key_password"})
MAX_PORT = 65535


class PortType(click.ParamType):
    """A TCP port number, 0 (any free port) to 65535; with ``off``, also -1 (no listener)."""

    name = "port"

    def __init__(self, off: bool = False) -> None:
        self.off = off

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        port = click.INT.convert(value, param, ctx)
        low = -1 if self.off else 0
        if not low <= port <= MAX_PORT:
            allowed = f"0 to {MAX_PORT}" + (", or -1 for off" if self.off else "")
            self.fail(f"{port} is not a port number ({allowed}).", param, ctx)
        return port


PORT = PortType()
PORT_OR_OFF = PortType(off=True)


def _checked_by(parse_name: str) -> Callable[[click.Context, click.Parameter, str], str]:
    """A click callback that refuses a value ``broker.alarms.<parse_name>`` cannot parse."""

    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from . import alarms

        try:
            getattr(alarms, parse_name)(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return check


_check_watermark = _checked_by("parse_watermark")
_check_size = _checked_by("parse_size")


def read_config_file(path: str) -> dict[str, Any]:
    """The TOML document at ``path``, or a one-line error naming the file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise click.ClickException(f"config file {path} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.ClickException(f"config file {path} cannot be read: {exc}") from None


def _load_config(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """--config FILE (or BROKER_CONFIG_FILE): TOML whose keys are serve's long option
    names; its values become defaults, so flags and environment still win."""
    if not path:
        return path
    data = read_config_file(path)
    params = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.name != "config"}
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        p = params.get(name)
        if p is None:
            known = ", ".join(sorted(str(n).replace("_", "-") for n in params))
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


def _bad_parameter_line(exc: click.BadParameter) -> str:
    """click's message, naming the environment variable when the value came from one."""
    ctx, param = exc.ctx, exc.param
    if ctx is not None and param is not None and param.name is not None \
            and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT:
        envvar = param.envvar if isinstance(param.envvar, str) else "/".join(param.envvar or ())
        return f"Invalid value for {envvar} ({'/'.join(param.opts)}): {exc.message}"
    return exc.format_message()


class ServeCommand(click.Command):
    """Reports a bad option, environment variable or config value in one line."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.BadParameter as exc:
            raise click.ClickException(_bad_parameter_line(exc)) from None


_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.option(
        "--config", envvar="BROKER_CONFIG_FILE", is_eager=True, expose_value=False, callback=_load_config,
        type=click.Path(dir_okay=False), help="TOML file of serve options (keys: the long option names).",
    ),
    click.option("--host", envvar="BROKER_HOST", default="0.0.0.0", show_default=True, help="Address to listen on."),
    click.option("--port", envvar="BROKER_PORT", default=5672, show_default=True, type=PORT,
                 help="AMQP port (0 picks a free one)."),
    click.option("--no-plain", envvar="BROKER_NO_PLAIN", is_flag=True,
                 help="No plain AMQP listener: clients connect over TLS only (needs --tls-cert)."),
    click.option("--tls-port", envvar="BROKER_TLS_PORT", default=None, type=PORT,
                 show_default="5671 when --tls-cert is given", help="AMQPS port (AMQP over TLS)."),
    click.option("--tls-cert", envvar="BROKER_TLS_CERT", default=None,
                 help="Server certificate chain (PEM) for AMQPS; turns the AMQPS listener on."),
    click.option("--tls-key", envvar="BROKER_TLS_KEY", default=None, help="Private key (PEM) of --tls-cert."),
    click.option("--tls-key-password", envvar="BROKER_TLS_KEY_PASSWORD", default=None,
                 help="Password of an encrypted --tls-key."),
    click.option("--tls-ca", envvar="BROKER_TLS_CA", default=None,
                 help="CA bundle (PEM) that client certificates are checked against."),
    click.option("--tls-verify", envvar="BROKER_TLS_VERIFY", default=None, type=click.Choice(TLS_VERIFY_MODES),
                 show_default="peer with --tls-ca, else none",
                 help="Client certificates: none (not asked for), peer (checked when sent), "
                      "require (a client without a valid one is refused)."),
    click.option("--tls-login-from", envvar="BROKER_TLS_LOGIN_FROM", default="common_name", show_default=True,
                 type=click.Choice(TLS_LOGIN_FROM),
                 help="EXTERNAL login: the user name is the client certificate's CN or its whole subject DN."),
    click.option("--data-dir", envvar="BROKER_DATA_DIR", default="./burrowmq-data", show_default=True,
                 help="Where durable state is kept."),
    click.option("--log-level", envvar="BROKER_LOG_LEVEL", default="info", show_default=True,
                 type=click.Choice(LOG_LEVELS)),
    click.option("--default-user", envvar=["BROKER_DEFAULT_USER", "RABBITMQ_DEFAULT_USER"],
                 default="guest", show_default=True,
                 help="User created on first start, with full rights on the default vhost."),
    click.option("--default-pass", envvar=["BROKER_DEFAULT_PASS", "RABBITMQ_DEFAULT_PASS"],
                 default="guest", show_default=True,
                 help="Password of the default user."),
    click.option("--default-vhost", envvar=["BROKER_DEFAULT_VHOST", "RABBITMQ_DEFAULT_VHOST"],
                 default="/", show_default=True,
                 help="Vhost created on first start."),
    click.option("--allow-remote-guest", envvar="BROKER_ALLOW_REMOTE_GUEST", is_flag=True,
                 help="Let the user 'guest' log in from other hosts than loopback (off, like RabbitMQ)."),
    click.option("--heartbeat", envvar="BROKER_HEARTBEAT", default=60, show_default=True, type=int,
                 help="Heartbeat interval offered (s)."),
    click.option(
        "--memory-high-watermark", envvar="BROKER_MEMORY_HIGH_WATERMARK", default="0.4", show_default=True,
        callback=_check_watermark,
        help="Block publishers above this resident memory: a fraction of RAM (0.4) or a size (512MB).",
    ),
    click.option(
        "--disk-free-limit", envvar="BROKER_DISK_FREE_LIMIT", default="50MB", show_default=True,
        callback=_check_size,
        help="Block publishers when the data dir's disk has less free space than this (0 disables).",
    ),
    click.option("--management-port", envvar="BROKER_MANAGEMENT_PORT", default=15672, show_default=True,
                 type=PORT_OR_OFF, help="Port of the management HTTP API (0 picks a free one, -1 turns it off)."),
    click.option("--management-host", envvar="BROKER_MANAGEMENT_HOST", default=None,
                 show_default="the --host value", help="Address the management HTTP API listens on."),
    click.option("--metrics-port", envvar="BROKER_METRICS_PORT", default=15692, show_default=True,
                 type=PORT_OR_OFF,
                 help="Port of the Prometheus /metrics endpoint (0 picks a free one, -1 turns it off)."),
    click.option("--management-tls-cert", envvar="BROKER_MANAGEMENT_TLS_CERT", default=None,
                 help="Certificate chain (PEM): serve the management API over HTTPS (and metrics, unless "
                      "--metrics-tls-cert is given)."),
    click.option("--management-tls-key", envvar="BROKER_MANAGEMENT_TLS_KEY", default=None,
                 help="Private key (PEM) of --management-tls-cert."),
    click.option("--metrics-tls-cert", envvar="BROKER_METRICS_TLS_CERT", default=None,
                 help="Certificate chain (PEM): serve the metrics over HTTPS."),
    click.option("--metrics-tls-key", envvar="BROKER_METRICS_TLS_KEY", default=None,
                 help="Private key (PEM) of --metrics-tls-cert."),
    click.option(
        "--management-max-body-size", envvar="BROKER_MANAGEMENT_MAX_BODY_SIZE", default="20MiB", show_default=True,
        callback=_check_size, help="Largest request body the management API reads (413 above it).",
    ),
    click.option("--http-max-connections", envvar="BROKER_HTTP_MAX_CONNECTIONS", default=1024, show_default=True,
                 type=click.IntRange(min=1),
                 help="Open connections each HTTP listener (management API, metrics) holds; more get 503."),
    click.option("--http-header-timeout", envvar="BROKER_HTTP_HEADER_TIMEOUT", default=10.0, show_default=True,
                 type=click.FloatRange(min=0, min_open=True),
                 help="Seconds an HTTP request line and headers may take to arrive (then 408 and close)."),
    click.option("--http-body-timeout", envvar="BROKER_HTTP_BODY_TIMEOUT", default=60.0, show_default=True,
                 type=click.FloatRange(min=0, min_open=True),
                 help="Seconds an HTTP request body may take to arrive (then 408 and close)."),
    click.option("--http-keepalive-timeout", envvar="BROKER_HTTP_KEEPALIVE_TIMEOUT", default=60.0,
                 show_default=True, type=click.FloatRange(min=0, min_open=True),
                 help="Seconds an HTTP connection may stay idle between requests."),
    click.option("--consumer-timeout", envvar="BROKER_CONSUMER_TIMEOUT", default=1_800_000, show_default=True,
                 type=click.IntRange(min=1, max=2**31 - 1),
                 help="Milliseconds a delivery may stay unacknowledged (queues and consumers may set "
                      "x-consumer-timeout)."),
    click.option("--consumer-timeout-response", envvar="BROKER_CONSUMER_TIMEOUT_RESPONSE",
                 default="notify-consumer", show_default=True,
                 type=click.Choice(("notify-consumer", "close-channel")),
                 help="On a consumer timeout: cancel that consumer (clients that understand basic.cancel) "
                      "or close the channel."),
    click.option("--max-connections", envvar="BROKER_MAX_CONNECTIONS", default=0, show_default=True,
                 type=click.IntRange(min=0),
                 help="Open AMQP connections the broker allows (RabbitMQ's connection_max); more are refused "
                      "with 530 at Connection.Open. 0: no limit."),
    click.option("--flow-threshold", envvar="BROKER_FLOW_THRESHOLD", default=FLOW_THRESHOLD, show_default=True,
                 type=click.IntRange(min=0),
                 help="Ready messages a queue with consumers may hold before the connections publishing to it "
                      "stop being read (RabbitMQ's flow state); they are read again at half. 0: no publisher "
                      "flow control."),
    click.option("--tcp-recbuf", envvar="BROKER_TCP_RECBUF", default=0, show_default=True,
                 type=click.IntRange(min=0, max=2**31 - 1),
                 help="Receive buffer of each AMQP connection's socket, in bytes (RabbitMQ's "
                      "tcp_listen_options.recbuf). Small bounds what a publisher in flow control has in "
                      "flight, so its messages wait less; 0: the kernel's autotuning."),
    click.option("--tcp-sndbuf", envvar="BROKER_TCP_SNDBUF", default=0, show_default=True,
                 type=click.IntRange(min=0, max=2**31 - 1),
                 help="Send buffer of each AMQP connection's socket, in bytes (RabbitMQ's "
                      "tcp_listen_options.sndbuf); 0: the kernel's autotuning."),
    click.option("--handshake-timeout", envvar="BROKER_HANDSHAKE_TIMEOUT", default=10.0, show_default=True,
                 type=click.FloatRange(min=0, min_open=True),
                 help="Seconds a client has from connecting to Connection.Open; then it is dropped."),
    click.option("--definitions", envvar="BROKER_DEFINITIONS", default=None, type=click.Path(dir_okay=False),
                 help="Definitions JSON (RabbitMQ's export format) to import at boot."),
]


def serve_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add every serve option to the command ``f``, in the order ``--help`` lists them."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


@dataclasses.dataclass(frozen=True)
class ServeSettings:
    """The checked values of serve's options (one field per option but --config)."""

    host: str
    port: int
    data_dir: str
    log_level: str
    default_user: str
    default_pass: str
    default_vhost: str
    allow_remote_guest: bool
    heartbeat: int
    memory_high_watermark: str
    disk_free_limit: str
    management_port: int
    management_host: str | None
    metrics_port: int
    management_max_body_size: str
    http_max_connections: int
    http_header_timeout: float
    http_body_timeout: float
    http_keepalive_timeout: float
    max_connections: int
    handshake_timeout: float
    definitions: str | None
    no_plain: bool
    tls_port: int | None
    tls_cert: str | None
    tls_key: str | None
    tls_key_password: str | None
    tls_ca: str | None
    tls_verify: str | None
    tls_login_from: str
    management_tls_cert: str | None
    management_tls_key: str | None
    metrics_tls_cert: str | None
    metrics_tls_key: str | None
    consumer_timeout: int = 1_800_000
    consumer_timeout_response: str = "notify-consumer"
    flow_threshold: int = FLOW_THRESHOLD
    tcp_recbuf: int = 0
    tcp_sndbuf: int = 0


_SOURCE_NAMES = {
    ParameterSource.COMMANDLINE: "flag",
    ParameterSource.ENVIRONMENT: "env",
    ParameterSource.DEFAULT_MAP: "config file",
    ParameterSource.DEFAULT: "default",
}


def describe_config(ctx: click.Context, opts: dict[str, Any]) -> str:
    """``name=value (source)`` for every option, secrets masked."""
    parts = []
    for name, value in opts.items():
        src = ctx.get_parameter_source(name)
        shown = "****" if name in SECRET_OPTIONS else value
        parts.append(f"{name.replace('_', '-')}={shown} ({_SOURCE_NAMES.get(src, 'default')})")  # type: ignore[arg-type]
    return ", ".join(parts)
