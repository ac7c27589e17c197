"""Loopback ports for the servers the tests and the benchmark start.

A server started in this process binds port 0 itself and reads the port it got (aiohttp's
``TestServer``, the peers in ``tests/peers/``): nothing can take it in between. A server in
another process, or one whose port must be written into a config first, gets :func:`free_port`.
A client that must find nothing listening gets :func:`closed_port`.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import ephemeral_port_reserve

__all__ = ["LOOPBACK", "closed_port", "free_port"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on, kept from other processes for about a minute.

    Choosing a port and binding it later is a race with every other process on the machine
    (other test runs included). The port is left in TIME_WAIT (``ephemeral_port_reserve``): the
    kernel then hands it to no other ``bind(0)`` nor outgoing connection, while a server that
    binds it with ``SO_REUSEADDR`` (asyncio and aiohttp, aiosmtpd, ``http.server``, Go's net
    package: Prometheus and Alertmanager) still can.
    """
    return int(ephemeral_port_reserve.reserve(LOOPBACK))


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port where connections are refused while the block runs.

    The socket is bound and never listens, so a connection gets ECONNREFUSED, and no other
    process can start listening there meanwhile (as it could on a port merely found free).
    """
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        yield int(sock.getsockname()[1])
