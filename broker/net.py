"""Small facts about network addresses, shared by the AMQP, management and metrics listeners."""

from __future__ import annotations

import ipaddress
import platform
import socket
from typing import Any


def node_name() -> str:
    """This broker's node name, as RabbitMQ's listings show a node (``rabbit@host``)."""
    return f"burrowmq@{platform.node() or 'localhost'}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a peer address as a socket reports it) is this machine's loopback.

    Any address in 127.0.0.0/8, ``::1`` (in any spelling, with or without a zone),
    an IPv4-mapped ``::ffff:127.x.y.z``, and the name ``localhost``: the users of
    ``loopback_users`` (the stock ``guest``) may log in from these only."""
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


def set_buffer_sizes(sock: Any, recbuf: int, sndbuf: int) -> None:
    """RabbitMQ's ``tcp_listen_options`` ``recbuf`` / ``sndbuf``: set on a listening socket
    (a ``socket.socket`` or asyncio's wrapper of one) before it accepts, they apply to every
    connection it accepts; 0 leaves the kernel's autotuning.  Linux doubles the value for its
    own bookkeeping."""
    if recbuf > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recbuf)
    if sndbuf > 0:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
