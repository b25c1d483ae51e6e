"""Messages in and out of the HTTP API: properties as JSON, building a message, waiting for its fsync.

Used by the HTTP publish (:mod:`.exchanges`), getting messages (:mod:`.queues`),
the aliveness test (:mod:`.health`) and the lost+found import (:mod:`.lost_found`).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
from typing import Any

from pamqp import commands as C

from protocol import framing, names

from ..message import Message
from .http import Ctx, HTTPError, bad_request

PROPERTY_NAMES = {  # the API's property names -> pamqp's attribute names
    "content_type": "content_type",
    "content_encoding": "content_encoding",
    "headers": "headers",
    "delivery_mode": "delivery_mode",
    "priority": "priority",
    "correlation_id": "correlation_id",
    "reply_to": "reply_to",
    "expiration": "expiration",
    "message_id": "message_id",
    "timestamp": "timestamp",
    "type": "message_type",
    "user_id": "user_id",
    "app_id": "app_id",
    "cluster_id": "cluster_id",
}
_INT_PROPS = ("delivery_mode", "priority")


def parse_properties(raw: Any) -> C.Basic.Properties:
    """The AMQP properties of a publish's ``properties`` object (400 naming a bad one)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise bad_request("'properties' must be a JSON object")
    kw: dict = {}
    for k, v in raw.items():
        attr = PROPERTY_NAMES.get(k)
        if attr is None:
            raise bad_request(f"unknown message property '{k}'")
        if v is None:
            continue
        if k in _INT_PROPS:
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 255:
                raise bad_request(f"property '{k}' must be an integer from 0 to 255")
        elif k == "timestamp":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad_request("property 'timestamp' must be seconds since the epoch")
            v = datetime.datetime.fromtimestamp(int(v), datetime.UTC)
        elif k == "headers":
            if not isinstance(v, dict):
                raise bad_request("property 'headers' must be a JSON object")
        elif k == "expiration" and isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        elif not isinstance(v, str):
            raise bad_request(f"property '{k}' must be a string")
        kw[attr] = v
    try:
        return C.Basic.Properties(**kw)
    except (TypeError, ValueError) as exc:
        raise bad_request(f"invalid message properties: {exc}") from None


def make_message(exchange: str, routing_key: str, props: C.Basic.Properties, body: bytes) -> Message:
    """An engine message, as if published over AMQP (400 if the properties cannot be encoded)."""
    try:
        header = framing.content_header_payload(len(body), props)
    except Exception as exc:  # pamqp refuses values it cannot encode
        raise bad_request(f"invalid message properties: {exc}") from None
    m = Message(exchange, routing_key, names.shortstr(exchange), names.shortstr(routing_key), header, body)
    m._props = props
    return m


async def wait_fsync(ctx: Ctx) -> None:
    """Return once the disk has everything written so far (500 if it failed, or after 30 s)."""
    try:
        await asyncio.wait_for(ctx.broker.store.wait_synced(), 30.0)
    except TimeoutError:
        raise HTTPError(500, "internal_error", "timed out waiting for the disk") from None
    except Exception as exc:
        raise HTTPError(500, "internal_error", f"the message could not be written to disk: {exc}") from None


def properties_json(msg: Message) -> dict:
    """A message's properties under the API's names (the inverse of :func:`parse_properties`)."""
    p = msg.properties
    out: dict = {}
    for key, attr in PROPERTY_NAMES.items():
        v = getattr(p, attr, None)
        if v is None or (key == "cluster_id" and v == ""):
            continue
        if isinstance(v, datetime.datetime):
            v = int(v.timestamp())
        out[key] = v
    return out


def payload_json(data: bytes, encoding: str) -> tuple[str, str]:
    """A body as the API shows it: ``(payload, payload_encoding)``, a string when
    ``encoding`` is ``auto`` and the bytes are UTF-8, base64 otherwise."""
    if encoding == "auto":
        try:
            return data.decode("utf-8"), "string"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(data).decode("ascii"), "base64"
