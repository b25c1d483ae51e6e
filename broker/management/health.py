"""Health checks (RabbitMQ's ``/api/health/checks/...``) and the aliveness test.

A check answers 200 ``{"status": "ok"}`` or 503 ``{"status": "failed", "reason": ...}``
with what failed, so that a load balancer or an orchestrator can act on the status alone.
"""

from __future__ import annotations

from typing import Any

from pamqp import commands as C

from .http import Ctx, Router, bad_request
from .messages import make_message
from .views import node_name, vhost_running

routes = Router()


def _alarms(ctx: Ctx) -> Any:
    alarms: list[dict] = [{"node": node_name(), "resource": r} for r in ctx.broker.monitor.reasons()]
    journal = ctx.broker.journal
    if journal.alarmed:
        alarms.append({"node": node_name(), "resource": "metadata", "reason": journal.failure})
    if not alarms:
        return {"status": "ok"}
    return 503, {"status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": alarms}


@routes.route("api/health/checks/alarms")
async def health_alarms(ctx: Ctx) -> Any:
    return _alarms(ctx)


@routes.route("api/health/checks/local-alarms")
async def health_local_alarms(ctx: Ctx) -> Any:
    return _alarms(ctx)


@routes.route("api/health/checks/virtual-hosts")
async def health_vhosts(ctx: Ctx) -> Any:
    """503 when a vhost is not running (see :func:`.views.vhost_running`), listing those
    the user may see: the status is the node's, the names stay within the user's vhosts."""
    store = ctx.broker.store
    down = [name for name, vh in ctx.broker.vhosts.items() if not vhost_running(vh, store)]
    if not down:
        return {"status": "ok"}
    return 503, {"status": "failed", "reason": "Some virtual hosts are down",
                 "virtual-hosts": [name for name in down if ctx.can_see_vhost(name)]}


@routes.route("api/health/checks/port-listener/:port")
async def health_port(ctx: Ctx) -> Any:
    ports = [ctx.broker.port, ctx.server.port]
    try:
        port = int(ctx.params["port"])
    except ValueError:
        raise bad_request("the port must be an integer") from None
    if port in ports:
        return {"status": "ok", "port": port}
    return 503, {"status": "failed", "reason": "No active listener", "missing": port, "ports": ports}


ALIVENESS_QUEUE = "aliveness-test"  # RabbitMQ's name: the one permissions are checked on
ALIVENESS_PROBE = "amq.aliveness-test"  # the queue really used: clients cannot declare amq.* names


@routes.route("api/aliveness-test/:vhost")
async def aliveness(ctx: Ctx) -> Any:
    """RabbitMQ's aliveness test: declare a queue, publish to it, get the message back.

    The user needs what RabbitMQ's test needs: configure and read on the queue
    'aliveness-test', write on the default exchange.  The queue used is the broker's
    own ``amq.aliveness-test``, made and removed within this one synchronous step: it
    never holds a client's message, nor shows in a listing."""
    vh = ctx.vhost_for_write()
    ctx.check(vh, "configure", "queue", ALIVENESS_QUEUE)
    ctx.check(vh, "write", "exchange", "amq.default")
    ctx.check(vh, "read", "queue", ALIVENESS_QUEUE)
    q, created = vh.declare_queue(ALIVENESS_PROBE, False, False, False, {}, None, server_named=True)
    if not created:
        return 503, {"status": "failed", "reason": f"a queue named '{ALIVENESS_PROBE}' already exists"}
    try:
        x = vh.default_exchange
        msg = make_message(x.name, ALIVENESS_PROBE, C.Basic.Properties(), b"test_message")
        vh.publish(x, msg, from_client=False)
        got = q.get()
        if got is None:
            return 503, {"status": "failed", "reason": "aliveness-test queue is empty"}
        q.settle(got)
    finally:
        vh.delete_queue(q)
    return {"status": "ok"}
