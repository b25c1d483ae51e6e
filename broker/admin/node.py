"""Admin verbs for the broker as a whole: definitions export and import, the lost+found area
that recovery fills, and status (rabbitmqctl's)."""

from __future__ import annotations

import json
import sys

import click

from .client import AdminApi, AdminError, print_rows, quote
from .command import admin_command


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
        if file == "-":
            raw = sys.stdin.read()
        else:
            with open(file, encoding="utf-8") as f:
                raw = f.read()
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
    for item in (answer or {}).get("not_applied", []):
        what = f"{item.get('section')} '{item.get('item')}'" if item.get("item") else str(item.get("section"))
        if item.get("vhost"):
            what += f" in vhost '{item['vhost']}'"
        if item.get("field"):
            what += f", field '{item['field']}'"
        click.echo(f"Not applied: {what}: {item.get('reason')}")
    click.echo("Done")


LOST_FOUND_COLUMNS = {c: c for c in ("id", "vhost", "queue", "messages", "message_bytes", "moved_at")}


@admin_command("list-lost-found", listing=True)
def list_lost_found(api: AdminApi) -> None:
    """Queue data that recovery found with no declared queue and kept aside."""
    print_rows(api, api.call("GET", "lost-found"), list(LOST_FOUND_COLUMNS), LOST_FOUND_COLUMNS)


@admin_command("import-lost-found")
@click.argument("entry")
@click.option("-p", "--vhost", default=None, help="Target vhost (default: the one the data was made for).")
@click.option("--queue", default=None, help="Target queue (default: the one the data was made for).")
def import_lost_found(api: AdminApi, entry: str, vhost: str | None, queue: str | None) -> None:
    """Publish the messages of a lost+found ENTRY into a durable queue, then remove the entry."""
    body = {k: v for k, v in (("vhost", vhost), ("queue", queue)) if v is not None}
    r = api.call("POST", f"lost-found/{quote(entry)}/import", body,
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
    api.call("DELETE", f"lost-found/{quote(entry)}", not_found=missing)
    click.echo(f"Deleted lost+found entry {entry}")


@admin_command("status", listing=True)
def status(api: AdminApi) -> None:
    """The broker's version, listeners, object counts and message totals."""
    ov = api.call("GET", "overview")
    try:
        node = api.call("GET", f"nodes/{quote(ov.get('node', ''))}")
    except AdminError:
        node = {}
    if api.as_json:
        click.echo(json.dumps({"overview": ov, "node": node}, indent=2))
        return
    ot, qt, ms = ov.get("object_totals", {}), ov.get("queue_totals", {}), ov.get("message_stats", {})
    lines = [
        ("Product", (f"{ov.get('product_name')} {ov.get('product_version')} "
                     f"(RabbitMQ API {ov.get('rabbitmq_version')})")),
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


@admin_command("reload-certs")
def reload_certs(api: AdminApi) -> None:
    """Reload every TLS certificate, key and CA bundle from its files (as SIGHUP); all or none."""
    for item in api.call("POST", "certificates/reload") or []:
        click.echo(f"{item.get('listener')}: {item.get('certificate')} ({item.get('subject')}), "
                   f"valid until {item.get('not_after')}")


COMMANDS = (
    export_definitions, import_definitions, list_lost_found, import_lost_found, delete_lost_found, status,
    reload_certs,
)
