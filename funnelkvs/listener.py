"""The node's listening socket: bind, accept in bounded bursts, back off when accept() fails.

A burst of connects is accepted :data:`ACCEPT_BATCH` at a time, so that it does not starve established
clients; when accept() fails (out of file descriptors: the listener stays readable, and retrying at
once would spin) the listener stops for :data:`ACCEPT_BACKOFF` seconds while established clients go
on being served.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from funnelkvs.errors import FunnelKVSError
from funnelkvs.loop import EVENT_READ, EventLoop

log = logging.getLogger("funnelkvs.node")

#: Connections accepted per readable event on the listener.
ACCEPT_BATCH = 128
#: How long the node stops accepting after accept() failed, in seconds.
ACCEPT_BACKOFF = 0.5


class Listener:
    """Accepts connections on ``(host, port)`` for ``loop``; each goes to ``on_connection(sock,
    address)`` unless ``accepting()`` says no (the connection limit): then it is closed at once."""

    def __init__(
        self,
        loop: EventLoop,
        host: str,
        port: int,
        on_connection: Callable[[socket.socket, str], None],
        accepting: Callable[[], bool],
    ) -> None:
        self.loop = loop
        self.on_connection = on_connection
        self.accepting = accepting
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        # SO_REUSEADDR: a stopped node can start again on the same port at once (TIME_WAIT).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise FunnelKVSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sock.listen(1024)
        sock.setblocking(False)
        self.sock: socket.socket | None = sock
        self.host, self.port = sock.getsockname()[:2]

    def start(self) -> None:
        if self.sock is not None:
            self.loop.register(self.sock, EVENT_READ, self._on_accept)

    def close(self) -> None:
        if self.sock is not None:
            self.loop.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def _on_accept(self, mask: int) -> None:
        listener = self.sock
        if listener is None:
            return
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer_address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accept failed (%s); not accepting for %.1f s", exc, ACCEPT_BACKOFF)
                self.loop.unregister(listener)
                self.loop.call_later(ACCEPT_BACKOFF, self.start)
                return
            address = f"{peer_address[0]}:{peer_address[1]}"
            if not self.accepting():
                log.warning("connection limit reached; refusing %s", address)
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.on_connection(sock, address)
