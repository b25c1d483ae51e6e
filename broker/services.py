"""The broker-wide objects the engine's parts use, handed to them by the Broker.

A connection, its channels and each vhost receive one :class:`Services` when
they are made, and use only what is in it: users and permissions, the login
throttle, the resource monitor (alarms), the metadata journal, the message
store, the counters, the direct reply-to registry and the connection registry.
Nothing below the Broker walks back up to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from storage.log import LogStore

from .alarms import ResourceMonitor
from .auth import UserStore
from .flow import FLOW_THRESHOLD
from .login_throttle import LoginThrottle
from .metadata import MetadataJournal
from .reply_to import ReplyRegistry
from .stats import Stats


@dataclass(frozen=True)
class ConnectionLimits:
    """What the broker offers in Connection.Tune, and how long a handshake may take."""

    frame_max: int = 131072
    channel_max: int = 2047
    heartbeat: int = 60
    handshake_timeout: float = 10.0
    max_connections: int = 0  # open connections allowed (0: no limit)


class ConnectionRegistry:
    """Every client connection (``all``), and those past Connection.Open (``open``)."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.all: set[Any] = set()
        self.open: set[Any] = set()

    def opened(self, conn: Any) -> None:
        """Connection.Open succeeded."""
        self.open.add(conn)
        self.stats.connections_opened += 1

    def gone(self, conn: Any) -> None:
        """The connection is torn down (its channels and exclusive queues are gone)."""
        if conn in self.open:
            self.open.discard(conn)
            self.stats.connections_closed += 1


@dataclass(eq=False)
class Services:
    """What connections, channels and vhosts are given instead of the Broker."""

    users: UserStore
    login_throttle: LoginThrottle
    loopback_users: set[str]
    monitor: ResourceMonitor
    journal: MetadataJournal
    store: LogStore | None
    stats: Stats
    limits: ConnectionLimits
    vhosts: dict[str, Any]  # name -> broker.vhost.VHost
    tls_login_from: str = "common_name"  # EXTERNAL's user name: the client certificate's CN or whole DN
    replies: ReplyRegistry = field(default_factory=ReplyRegistry)
    connections: ConnectionRegistry = field(init=False)
    loop: asyncio.AbstractEventLoop | None = None  # set when the broker starts
    # how long a delivery may stay unacked (ms), and what then: notify-consumer or close-channel
    consumer_timeout_ms: int = 1_800_000
    consumer_timeout_response: str = "notify-consumer"
    scratch: LogStore | None = None  # where queues without a log page a backlog (emptied at start)
    flow_threshold: int = FLOW_THRESHOLD  # ready messages above which publishers are held back (0: never)

    def __post_init__(self) -> None:
        self.connections = ConnectionRegistry(self.stats)
