"""Admin verbs to follow messages: the firehose (``trace-on`` / ``trace-off`` as rabbitmqctl
spells them, and ``trace``, which tails it in the terminal) and ``where MESSAGE-ID``.

``trace`` turns tracing on in the vhost if it is off (and off again when it stops), declares
an exclusive server-named queue bound to ``amq.rabbitmq.trace`` and prints one line per event.
It talks AMQP (pika) to the listener ``/api/overview`` names, as the same user.
"""

from __future__ import annotations

import datetime
import sys
import urllib.parse
from typing import Any

import click

from ..logsafe import printable
from .client import AdminApi, AdminError, quote
from .command import VHOST_OPTION, admin_command

TRACE_EXCHANGE = "amq.rabbitmq.trace"
TRACE_QUEUE_MAX = 10_000  # events kept for a slow terminal; older ones are dropped
MAX_PATTERN_WORDS = 64


def _vhost_json(api: AdminApi, vhost: str) -> dict:
    return api.call("GET", f"vhosts/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")


def _set_tracing(api: AdminApi, vhost: str, on: bool) -> None:
    _vhost_json(api, vhost)  # a missing vhost is named, not created
    api.call("PUT", f"vhosts/{quote(vhost)}", {"tracing": on})


@admin_command("trace-on")
@VHOST_OPTION
def trace_on(api: AdminApi, vhost: str) -> None:
    """Start the firehose in a vhost: copies of every publish and delivery go to amq.rabbitmq.trace."""
    _set_tracing(api, vhost, True)
    click.echo(f'Starting tracing for vhost "{vhost}" ...')


@admin_command("trace-off")
@VHOST_OPTION
def trace_off(api: AdminApi, vhost: str) -> None:
    """Stop the firehose in a vhost."""
    _set_tracing(api, vhost, False)
    click.echo(f'Stopping tracing for vhost "{vhost}" ...')


# -- trace ------------------------------------------------------------------------------------
def topic_matches(pattern: list[str], words: list[str]) -> bool:
    """Whether a routing key's ``words`` match a topic ``pattern`` (``*`` one word, ``#`` zero
    or more), in O(len(pattern) * len(words))."""
    # ok[j]: the pattern so far matches the first j words
    ok = [True] + [False] * len(words)
    for p in pattern:
        if p == "#":
            for j in range(1, len(ok)):
                ok[j] = ok[j] or ok[j - 1]
        else:
            ok = [False] + [ok[j - 1] and (p == "*" or p == words[j - 1]) for j in range(1, len(ok))]
    return ok[-1]


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def event_line(routing_key: str, headers: dict, body_size: int, now: datetime.datetime) -> str:
    """One event of the firehose as a line: time, kind, connection, user, exchange, routing key,
    the queues (routed to, or delivered from), message id, size."""
    kind = routing_key.partition(".")[0]
    props = headers.get("properties") or {}
    exchange = _text(headers.get("exchange_name", "")) or "amq.default"
    keys = ",".join(_text(k) for k in headers.get("routing_keys") or [])
    parts = [
        now.strftime("%H:%M:%S.%f")[:-3],
        kind,
        f"conn={_text(headers.get('connection', '?'))}",
        f"user={_text(headers.get('user', '?'))}",
        f"exchange={exchange}",
        f"routing_key={keys}",
    ]
    if kind == "publish":
        queues = [_text(q) for q in headers.get("routed_queues") or []]
        parts.append(f"queues={','.join(queues)}" if queues else "queues=(unroutable)")
    else:
        parts.append(f"queue={routing_key.partition('.')[2]}")
    parts.append(f"id={_text(props['message_id'])}" if props.get("message_id") is not None else "id=-")
    parts.append(f"size={body_size}")
    if kind == "deliver" and headers.get("redelivered"):
        parts.append("redelivered")
    return printable(" ".join(parts))


def _wanted(routing_key: str, headers: dict, queue: str | None, pattern: list[str] | None) -> bool:
    if queue is not None:
        if routing_key.startswith("deliver."):
            if routing_key[len("deliver."):] != queue:
                return False
        elif queue not in [_text(q) for q in headers.get("routed_queues") or []]:
            return False
    if pattern is not None:
        keys = [_text(k) for k in headers.get("routing_keys") or []]
        if not any(topic_matches(pattern, k.split(".")) for k in keys):
            return False
    return True


def _amqp_params(api: AdminApi, vhost: str, amqp_url: str | None) -> Any:
    import pika

    if amqp_url:
        return pika.URLParameters(amqp_url)
    overview = api.call("GET", "overview")
    ports = [ln.get("port") for ln in overview.get("listeners", []) if ln.get("protocol") == "amqp"]
    if not ports:
        raise AdminError("the broker lists no AMQP listener in /api/overview: give --amqp-url")
    host = urllib.parse.urlsplit(api.url).hostname or "localhost"
    return pika.ConnectionParameters(host, int(ports[0]), vhost, pika.PlainCredentials(api.user, api.password))


@admin_command("trace")
@VHOST_OPTION
@click.option("--queue", default=None, help="Only messages published into or delivered from this queue.")
@click.option("--routing-key", "routing_key", default=None,
              help="Only messages whose routing key matches this topic pattern (* one word, # zero or more).")
@click.option("--amqp-url", default=None,
              help="AMQP URL to consume the trace from (default: the listener the API names, as --user).")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after this many events.")
def trace(api: AdminApi, vhost: str, queue: str | None, routing_key: str | None, amqp_url: str | None,
          count: int | None) -> None:
    """Print every publish and delivery in a vhost as it happens, one line each (Ctrl-C stops).
    Turns tracing on for as long as it runs if it was off."""
    import pika
    import pika.exceptions

    pattern = None
    if routing_key is not None:
        pattern = routing_key.split(".")
        if len(routing_key.encode()) > 255 or len(pattern) > MAX_PATTERN_WORDS:
            raise click.BadParameter("at most 255 bytes and 64 words", param_hint="'--routing-key'")
    was_on = bool(_vhost_json(api, vhost).get("tracing"))
    if not was_on:
        api.call("PUT", f"vhosts/{quote(vhost)}", {"tracing": True})
    try:
        conn = pika.BlockingConnection(_amqp_params(api, vhost, amqp_url))
    except pika.exceptions.AMQPError as exc:
        raise AdminError(f"cannot consume the trace over AMQP: {exc!r}") from None
    seen = 0
    try:
        ch = conn.channel()
        q = ch.queue_declare("", exclusive=True, arguments={"x-max-length": TRACE_QUEUE_MAX}).method.queue
        ch.queue_bind(q, TRACE_EXCHANGE, "#")
        click.echo(f"Tracing vhost '{vhost}' (Ctrl-C to stop)", err=True)
        for method, props, body in ch.consume(q, auto_ack=True):
            headers = props.headers or {}
            if not _wanted(method.routing_key, headers, queue, pattern):
                continue
            click.echo(event_line(method.routing_key, headers, len(body), datetime.datetime.now()))
            sys.stdout.flush()
            seen += 1
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        try:
            conn.close()
        except pika.exceptions.AMQPError:
            pass
        if not was_on:
            api.call("PUT", f"vhosts/{quote(vhost)}", {"tracing": False})


# -- where ------------------------------------------------------------------------------------
def _copy_lines(c: dict) -> list[str]:
    """One copy of the message: where it is and its state, then its x-death history."""
    state = c["state"]
    if state == "unacked":
        d = c["delivered_to"]
        who = f"consumer '{d['consumer_tag']}'" if d.get("consumer_tag") else "basic.get"
        state = (f"delivered, not acked: {who} on connection {d['connection']} channel {d['channel']} "
                 f"(delivery tag {d['delivery_tag']}, user {d['user']})")
    elif state == "settled":
        state = c["settled"]
        if c.get("dead_lettered_to") is not None:
            state += f", dead-lettered to exchange '{c['dead_lettered_to'] or 'amq.default'}'"
    elif c.get("delivered_before"):
        state += " (delivered before, will be redelivered)"
    lines = [f"vhost '{c['vhost']}' queue '{c['queue']}': {state}; published to exchange "
             f"'{c['exchange'] or 'amq.default'}' with routing key '{c['routing_key']}', {c['payload_bytes']} bytes, "
             f"{'persistent' if c['persistent'] else 'transient'}"]
    for d in c.get("x_death") or []:
        lines.append(f"  x-death: {d.get('reason')} in queue '{d.get('queue')}' (count {d.get('count')}, "
                     f"exchange '{d.get('exchange') or 'amq.default'}', routing keys {d.get('routing-keys')})")
    return [printable(line) for line in lines]


@admin_command("where", listing=True)
@click.argument("message_id")
@click.option("-p", "--vhost", default=None, help="Only this virtual host (default: every one you can see).")
def where(api: AdminApi, message_id: str, vhost: str | None) -> None:
    """Which queues hold the persistent message MESSAGE_ID in their log, and what became of each
    copy: ready, delivered and not acked (to whom), acked, expired, rejected, dead-lettered."""
    query = None
    if vhost is not None:
        _vhost_json(api, vhost)
        query = {"vhost": vhost}
    r = api.call("GET", f"where/{quote(message_id)}", query=query)
    if api.as_json:
        import json

        click.echo(json.dumps(r, indent=2))
        return
    click.echo(f"message '{printable(message_id)}':")
    for c in r["copies"]:
        for line in _copy_lines(c):
            click.echo("  " + line)
    if r.get("truncated"):
        click.echo(f"  (only the first {len(r['copies'])} copies are shown)")


COMMANDS = (trace_on, trace_off, trace, where)
