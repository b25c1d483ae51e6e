"""The management HTTP API (RabbitMQ's ``/api/...`` JSON shape) on the broker's own loop.

:class:`ManagementServer` is started next to the AMQP listener::

    mgmt = ManagementServer(broker, host="127.0.0.1", port=15672)   # port 0: any free port
    await mgmt.start()        # mgmt.port is the port it bound
    ...
    await mgmt.stop()

Requests are served by aiohttp on the same asyncio loop as the AMQP
connections: every handler reads or changes the engine's objects directly and
runs to completion without awaiting (except where a publish waits for its
fsync), so there is no locking and no copy of the engine's state.  Message
rates come from :class:`~broker.management.stats.Stats`, which samples the
engine's counters every few seconds.

Modules, from the bottom up (each imports only those above it):

- ``stats``: rates sampled from the engine's counters;
- ``http``: errors, the request context (``Ctx``), routing, JSON answers;
- ``views``: the engine's objects as the API shows them, list queries;
- ``login``: Basic authentication and what each user tag may do;
- ``messages``: message properties as JSON, building a message, waiting for its fsync;
- one module per resource, each with its own ``routes``: ``connections``,
  ``overview``, ``health``, ``exchanges``, ``queues``, ``bindings``,
  ``vhosts``, ``users``, ``definitions``, ``lost_found``;
- ``server``: the listener; chains every resource's routes and dispatches requests.
"""

from .server import ManagementServer

__all__ = ["ManagementServer"]
