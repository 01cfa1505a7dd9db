"""The listening socket and the HTTP server of ``lrformer serve`` (needs ``lrformer[serve]``).

The socket is bound before the model loads (:func:`bind`), so a busy port or a wrong ``--host``
fails at once, as one line naming the fix. The server (:func:`serve`) is uvicorn on that socket
with connection hygiene: a connection must deliver its request line and headers within
``header_timeout_s`` of opening or of its previous response (a client trickling header bytes is
cut off; uvicorn's keep-alive timer restarts on every byte), an idle keep-alive connection closes
after ``keep_alive_s``, headers are capped at 16 KB, connections beyond ``max_connections`` are
closed as they open (uvicorn answers 503 to requests once the limit is reached), and a client
that goes away mid-request leaves no traceback in the log.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import re
import socket

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 << 10
"""Largest request line + headers: beyond, 400 while they arrive (h11's incomplete-event cap) or
431 when they arrive at once (h11 alone would take whatever one read holds, up to 256 KB)."""

_END_OF_HEADERS = re.compile(rb"\n\r?\n")

_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
                      b"connection: close\r\ncontent-length: 27\r\n\r\nRequest headers too large.\n")  # fmt: skip

BACKLOG = 2048
"""Connections the kernel queues before they are accepted (uvicorn's default)."""

EVERYWHERE = "0.0.0.0 (all interfaces)"
"""How the messages name the wildcard address, as an alternative ``--host``."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` and listening, or a :class:`ConfigError` of one line
    naming the problem and the fix: a busy port, an address not on this machine, a name that does
    not resolve, a privileged port. ``host`` is an IPv4 or IPv6 address or a name (an IPv4 address
    is preferred when a name has both); ``::`` listens on IPv6 and, where the system allows, IPv4.
    ``port`` 0 picks a free port (read it from ``getsockname()``)."""
    if not host.strip():
        raise ConfigError(f"--host is empty: give an address, e.g. 127.0.0.1 (this machine only) or {EVERYWHERE}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is not a TCP port: give one from 1024 to 65535, e.g. 8000")
    family, address = _resolve(host, port)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise bind_error(exc, host, port) from None
    try:
        _set_options(sock, family, host)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port) from None
    return sock


def _resolve(host: str, port: int) -> tuple[int, tuple]:
    """``(family, socket address)`` of ``host``: IPv4 first when a name has both."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"--host {host} does not resolve to an address ({reason}): give an IP address, "
                          f"e.g. 127.0.0.1 (this machine only) or {EVERYWHERE}") from None  # fmt: skip
    found.sort(key=lambda entry: entry[0] != socket.AF_INET)
    family, _, _, _, address = found[0]
    return family, address


def _set_options(sock: socket.socket, family: int, host: str) -> None:
    """Reuse a port left in TIME_WAIT, as uvicorn does (Windows: exclusive use instead, since its
    ``SO_REUSEADDR`` would let two servers share a port); ``::`` also takes IPv4 connections."""
    if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
    else:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6 and is_wildcard(host) and hasattr(socket, "IPV6_V6ONLY"):
        try:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        except OSError:  # a system without dual-stack sockets: IPv6 only
            pass


def bind_error(exc: OSError, host: str, port: int) -> ConfigError:
    """The one-line :class:`ConfigError` of a failed ``socket()`` or ``bind()`` on ``host:port``."""
    code = exc.errno
    if code == errno.EADDRINUSE:
        return ConfigError(f"port {port} on {host} is in use by another program: choose another with --port, "
                           "or stop that program")  # fmt: skip
    if code == errno.EADDRNOTAVAIL:
        return ConfigError(f"--host {host} is not an address of this machine: give one of its addresses, "
                           f"127.0.0.1 (this machine only) or {EVERYWHERE}")  # fmt: skip
    if code == errno.EAFNOSUPPORT:
        return ConfigError(f"--host {host} is IPv6, which this machine does not support: give an IPv4 address, "
                           "e.g. 127.0.0.1")  # fmt: skip
    if code in (errno.EACCES, errno.EPERM) and port < 1024:
        return ConfigError(f"port {port} is privileged (below 1024): only an administrator may listen on it; "
                           "choose --port 1024 or above, e.g. --port 8000")  # fmt: skip
    reason = exc.strerror or type(exc).__name__
    return ConfigError(f"cannot listen on port {port} of {host} ({reason}): choose another --port or --host")


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host`` as an IP address (an IPv6 zone ``%eth0`` ignored), or ``None`` for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_wildcard(host: str) -> bool:
    """Whether ``host`` is ``0.0.0.0`` or ``::``: every interface of the machine."""
    address = _address(host)
    return address is not None and address.is_unspecified


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only: a loopback address (``127.0.0.0/8``,
    ``::1``, IPv4-mapped ``::ffff:127.x``) or ``localhost``. Other names are not resolved and
    count as reachable from the network."""
    address = _address(host)
    if address is None:
        name = host.rstrip(".").lower()
        return name == "localhost" or name.endswith(".localhost")
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def url(host: str, port: int) -> str:
    """The URL to print for a server on ``host:port``: an IPv6 address in brackets (its zone
    escaped as ``%25``); for a wildcard bind, the loopback address of its family, which a browser
    on this machine can open."""
    if is_wildcard(host):
        host = "::1" if ":" in host else "127.0.0.1"
    if ":" in host:
        host = "[" + host.replace("%", "%25") + "]"
    return f"http://{host}:{port}"


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for the request line and headers, a cap on their size
    (``config.h11_max_incomplete_event_size``) and a cap on the connections open at once.

    The deadline runs from the connection opening, and from each response completing, until the
    next request's headers have been parsed; bytes arriving meanwhile do not extend it (uvicorn's
    keep-alive timer, by contrast, is cancelled by any data, so a client sending one byte a second
    would hold the connection forever). The body is not covered: the app bounds its upload time.
    Create it through :func:`protocol_factory`.
    """

    def __init__(self, *args, header_timeout_s: float = 10.0, max_connections: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.max_connections is not None and len(self.connections) > self.max_connections:
            logger.debug("%s: closed at once, %d connections are open", self._peer(), self.max_connections)
            transport.close()
            return
        self._watch_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is not None and self.conn.their_state is h11.IDLE:  # headers awaited
            end = _END_OF_HEADERS.search(self.conn.trailing_data[0] + data)
            if end is not None and end.start() > (self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES):
                logger.debug("%s: closed, request headers above the cap", self._peer())
                self.transport.write(_HEADERS_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_headers()

    def handle_websocket_upgrade(self, event) -> None:
        self._stop_header_timer()
        super().handle_websocket_upgrade(event)

    def _watch_headers(self) -> None:
        """Run the header deadline while no request is in progress on an open connection that is
        still ours (not closing, not upgraded to WebSocket); stop it once a request is parsed."""
        waiting = (
            not self.transport.is_closing()
            and self.transport.get_protocol() is self
            and (self.cycle is None or self.cycle.response_complete)
        )
        if not waiting:
            self._stop_header_timer()
        elif self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            logger.debug("%s: closed, no request headers within %g s", self._peer(), self.header_timeout_s)
            self.transport.close()

    def _peer(self) -> str:
        return "%s:%d" % self.client if self.client else "a client"


def protocol_factory(header_timeout_s: float, max_connections: int | None = None):
    """What ``uvicorn.Config(http=...)`` takes: builds a :class:`GuardedH11Protocol` per connection."""
    return functools.partial(GuardedH11Protocol, header_timeout_s=header_timeout_s, max_connections=max_connections)


class QuietDisconnects:
    """ASGI middleware: an exception an HTTP request raises after its client disconnected (e.g.
    Starlette's ``ClientDisconnect`` while reading the body) ends the request with a debug line
    instead of uvicorn's "Exception in ASGI application" traceback; nobody is left to answer."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        gone = False

        async def watched_receive():
            nonlocal gone
            message = await receive()
            gone = gone or message["type"] == "http.disconnect"
            return message

        try:
            await self.app(scope, watched_receive, send)
        except Exception as exc:
            if not gone:
                raise
            logger.debug("%s %s: the client disconnected (%s)", scope["method"], scope["path"], type(exc).__name__)


def server_config(app, *, header_timeout_s: float = 10.0, keep_alive_s: float = 5.0, max_connections: int = 512,
                  graceful_s: float | None = 30.0) -> uvicorn.Config:  # fmt: skip
    """The uvicorn configuration of ``lrformer serve``: warnings only, no access log, the
    :class:`GuardedH11Protocol` with ``header_timeout_s``, idle keep-alive connections closed
    after ``keep_alive_s``, headers capped at :data:`MAX_HEADER_BYTES`, at most
    ``max_connections`` connections (requests answered 503 once reached), and ``graceful_s``
    seconds for running requests to finish on shutdown."""
    return uvicorn.Config(
        QuietDisconnects(app),
        http=protocol_factory(header_timeout_s, max_connections),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=keep_alive_s,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=max_connections,
        timeout_graceful_shutdown=graceful_s,
    )


def serve(app, sock: socket.socket, **settings) -> None:
    """Serve the ASGI ``app`` on the listening ``sock`` (from :func:`bind`) until Ctrl+C or
    SIGTERM; ``settings`` are :func:`server_config`'s (``header_timeout_s``, ``keep_alive_s``,
    ``max_connections``, ``graceful_s``). uvicorn closes ``sock`` on the way out."""
    uvicorn.Server(server_config(app, **settings)).run(sockets=[sock])
