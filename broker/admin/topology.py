"""Admin verbs for what messages flow through: queues, exchanges, bindings, connections and
consumers (rabbitmqctl's)."""

from __future__ import annotations

import click

from .client import AdminApi, choose_columns, print_rows, quote
from .command import VHOST_OPTION, admin_command

# listing columns: rabbitmqctl's names -> paths in the API's JSON
QUEUE_COLUMNS = {
    c: c for c in (
        "name", "vhost", "durable", "auto_delete", "exclusive", "arguments", "messages", "messages_ready",
        "messages_unacknowledged", "consumers", "state", "type", "policy", "exclusive_consumer_tag",
        "message_bytes", "message_bytes_ready", "node", "first_offset", "last_offset", "committed_offset", "segments",
    )
}
QUEUE_COLUMNS.update({c: c for c in ("leader", "members", "online", "delivery_limit")})  # quorum queues
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
    "auth_mechanism", "type", "node", "ssl_protocol", "ssl_key_exchange", "ssl_cipher", "ssl_hash",
    "peer_cert_subject", "peer_cert_issuer", "peer_cert_validity",
)}
CONSUMER_COLUMNS = {
    "queue_name": "queue.name", "channel_pid": "channel_details.name", "channel": "channel_details.name",
    "connection": "channel_details.connection_name", "consumer_tag": "consumer_tag",
    "ack_required": "ack_required", "prefetch_count": "prefetch_count", "active": "active",
    "activity_status": "activity_status", "arguments": "arguments", "exclusive": "exclusive",
}


@admin_command("list-queues", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_queues(api: AdminApi, vhost: str, columns: tuple[str, ...]) -> None:
    """Queues of a vhost [COLUMNS: name messages messages_ready messages_unacknowledged consumers durable ...]."""
    cols = choose_columns(columns, ["name", "messages"], QUEUE_COLUMNS)
    qs = api.call("GET", f"queues/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, qs, cols, QUEUE_COLUMNS)


@admin_command("list-exchanges", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_exchanges(api: AdminApi, vhost: str, columns: tuple[str, ...]) -> None:
    """Exchanges of a vhost [COLUMNS: name type durable auto_delete internal arguments]."""
    cols = choose_columns(columns, ["name", "type"], EXCHANGE_COLUMNS)
    xs = api.call("GET", f"exchanges/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, xs, cols, EXCHANGE_COLUMNS)


@admin_command("list-bindings", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_bindings(api: AdminApi, vhost: str, columns: tuple[str, ...]) -> None:
    """Bindings of a vhost [COLUMNS: source_name source_kind destination_name destination_kind routing_key
    arguments]."""
    cols = choose_columns(
        columns,
        ["source_name", "source_kind", "destination_name", "destination_kind", "routing_key", "arguments"],
        BINDING_COLUMNS,
    )
    bs = api.call("GET", f"bindings/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    for b in bs:
        b["source_kind"] = "exchange"
    print_rows(api, bs, cols, BINDING_COLUMNS)


@admin_command("list-connections", listing=True)
@click.argument("columns", nargs=-1)
def list_connections(api: AdminApi, columns: tuple[str, ...]) -> None:
    """Client connections [COLUMNS: name user vhost peer_host peer_port state channels ...]."""
    cols = choose_columns(columns, ["user", "peer_host", "peer_port", "state"], CONNECTION_COLUMNS)
    print_rows(api, api.call("GET", "connections"), cols, CONNECTION_COLUMNS)


@admin_command("list-consumers", listing=True)
@VHOST_OPTION
@click.argument("columns", nargs=-1)
def list_consumers(api: AdminApi, vhost: str, columns: tuple[str, ...]) -> None:
    """Consumers of a vhost [COLUMNS: queue_name channel_pid consumer_tag ack_required prefetch_count ...]."""
    cols = choose_columns(
        columns,
        ["queue_name", "channel_pid", "consumer_tag", "ack_required", "prefetch_count", "active", "arguments"],
        CONSUMER_COLUMNS,
    )
    cs = api.call("GET", f"consumers/{quote(vhost)}", not_found=f"vhost '{vhost}' does not exist")
    print_rows(api, cs, cols, CONSUMER_COLUMNS)


@admin_command("purge-queue")
@VHOST_OPTION
@click.argument("queue")
def purge_queue(api: AdminApi, vhost: str, queue: str) -> None:
    """Remove the ready messages of a queue."""
    missing = f"queue '{queue}' in vhost '{vhost}' does not exist"
    click.echo(f'Purging queue "{queue}" in vhost "{vhost}" ...')
    q = api.call("GET", f"queues/{quote(vhost)}/{quote(queue)}", not_found=missing)
    api.call("DELETE", f"queues/{quote(vhost)}/{quote(queue)}/contents", not_found=missing)
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
    q = api.call("GET", f"queues/{quote(vhost)}/{quote(queue)}", not_found=missing)
    query = {k: "true" for k, v in (("if-empty", if_empty), ("if-unused", if_unused)) if v}
    api.call("DELETE", f"queues/{quote(vhost)}/{quote(queue)}", not_found=missing, query=query)
    click.echo(f"Queue was successfully deleted with {q.get('messages_ready', 0)} ready messages")


COMMANDS = (
    list_queues, list_exchanges, list_bindings, list_connections, list_consumers, purge_queue, delete_queue,
)
