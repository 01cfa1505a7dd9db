"""``lrformer serve``'s socket and HTTP server (:mod:`lrformer.serving.server`): start-up errors as
one line before the model loads, printable URLs, the network warning, and connection hygiene on a
real uvicorn server running a tiny Starlette app: a client trickling its headers is cut off at the
header deadline while others are served, an idle keep-alive connection closes, connections beyond
the cap are closed, and a client leaving mid-body leaves no traceback."""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import select
import socket
import struct
import sys
import threading
import time

import pytest

uvicorn = pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

from lrformer.cli import serve as serve_command  # noqa: E402
from lrformer.cli.main import build_parser  # noqa: E402
from lrformer.errors import ConfigError  # noqa: E402
from lrformer.serving import server  # noqa: E402

from .helpers import run_bounded, wait_until  # noqa: E402

WAIT = 30
"""Seconds a condition is waited for at most (reaching it means a hang, not a slow machine)."""


# -- start-up: binding, URLs, messages ------------------------------------------------------------


@pytest.fixture()
def busy_port():
    """A port another socket is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_busy_port_is_one_line_before_the_model_loads(busy_port, tmp_path):
    missing = tmp_path / "missing.pth"  # loading it would fail with another message
    done = run_bounded([sys.executable, "-m", "lrformer", "serve", "--weights", str(missing), "--port", str(busy_port)],
                       capture_output=True, text=True, timeout=WAIT)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""  # nothing loaded, nothing served
    assert done.stderr == (f"lrformer serve: error: port {busy_port} on 127.0.0.1 is in use by another program: "
                           "choose another with --port, or stop that program\n")  # fmt: skip


def test_bind_refuses_an_address_or_name_not_on_this_machine(busy_port, monkeypatch):
    with pytest.raises(ConfigError, match=f"port {busy_port} on 127.0.0.1 is in use.*--port"):
        server.bind("127.0.0.1", busy_port)
    with pytest.raises(ConfigError, match=r"--host 192\.0\.2\.7 is not an address of this machine: .* 127\.0\.0\.1"):
        server.bind("192.0.2.7", 0)  # TEST-NET-1: nobody's address
    with pytest.raises(ConfigError, match="--host is empty"):
        server.bind(" ", 0)

    def unknown(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    with pytest.raises(ConfigError, match=r"--host nowhere\.invalid does not resolve .*give an IP address"):
        server.bind("nowhere.invalid", 0)


@pytest.mark.parametrize(
    "code, port, expected",
    [
        (errno.EADDRINUSE, 8000, "port 8000 on HOST is in use by another program: choose another with --port"),
        (errno.EADDRNOTAVAIL, 8000, "--host HOST is not an address of this machine"),
        (errno.EACCES, 80, "port 80 is privileged (below 1024): only an administrator may listen on it; choose --port"),
        (errno.EAFNOSUPPORT, 8000, "--host HOST is IPv6, which this machine does not support"),
        (errno.EACCES, 8000, "cannot listen on port 8000 of HOST (Permission denied): choose another --port"),
    ],
)
def test_bind_errors_are_one_line_naming_the_fix(code, port, expected):
    message = str(server.bind_error(OSError(code, "Permission denied"), "HOST", port))
    assert message.startswith(expected) and "\n" not in message


def _connects(sock: socket.socket, address: str) -> bool:
    with socket.create_connection((address, sock.getsockname()[1]), timeout=WAIT):
        return True


def test_bind_listens_on_ipv4_ipv6_names_and_all_interfaces():
    with server.bind("127.0.0.1", 0) as sock:
        assert sock.family == socket.AF_INET and _connects(sock, "127.0.0.1")
    with server.bind("localhost", 0) as sock:  # IPv4 preferred when a name has both
        assert sock.getsockname()[0].startswith("127.") and _connects(sock, "127.0.0.1")
    try:
        six = server.bind("::1", 0)
    except ConfigError:
        pytest.skip("no IPv6 on this machine")
    with six:
        assert six.family == socket.AF_INET6 and _connects(six, "::1")
    with server.bind("::", 0) as sock:  # dual-stack: IPv4 clients too
        assert _connects(sock, "::1") and _connects(sock, "127.0.0.1")


@pytest.mark.parametrize(
    "host, expected",
    [
        ("127.0.0.1", "http://127.0.0.1:8000"),
        ("localhost", "http://localhost:8000"),
        ("::1", "http://[::1]:8000"),
        ("0.0.0.0", "http://127.0.0.1:8000"),  # all interfaces: the one a local browser opens
        ("::", "http://[::1]:8000"),
        ("fe80::1%eth0", "http://[fe80::1%25eth0]:8000"),
        ("192.168.1.20", "http://192.168.1.20:8000"),
    ],
)
def test_url_is_one_a_browser_opens(host, expected):
    assert server.url(host, 8000) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1", "localhost", "LOCALHOST."])
def test_loopback_hosts(host):
    assert server.is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "fe80::1%eth0", "example.com", "my-laptop"])
def test_hosts_reachable_from_the_network(host):
    assert not server.is_loopback(host)


def test_banner_names_the_url_and_never_the_token():
    assert serve_command.banner("lrformer_t", "127.0.0.1", 8000, False) == (
        "serving lrformer_t on http://127.0.0.1:8000 (Ctrl+C stops)"
    )
    everywhere = serve_command.banner("m", "0.0.0.0", 8000, True)
    assert everywhere.startswith("serving m on http://127.0.0.1:8000 (listening on all interfaces; Ctrl+C stops)")
    assert "?token=YOUR_TOKEN" in everywhere


def test_network_warning_only_off_loopback():
    assert serve_command.exposure_warning("127.0.0.1", 8000, False) is None
    assert serve_command.exposure_warning("::1", 8000, False) is None
    open_to_all = serve_command.exposure_warning("0.0.0.0", 8000, False)
    assert "0.0.0.0 (all interfaces) without a token: anyone" in open_to_all and "--token" in open_to_all
    assert "unencrypted" in serve_command.exposure_warning("192.168.1.20", 8000, True)
    assert all("\n" not in line for line in (open_to_all, serve_command.exposure_warning("::", 1, True)))


def test_token_comes_from_the_option_or_the_environment(monkeypatch):
    monkeypatch.setenv(serve_command.TOKEN_VARIABLE, " from-env ")
    assert serve_command.resolve_token(None) == "from-env"
    assert serve_command.resolve_token("given") == "given"
    monkeypatch.setenv(serve_command.TOKEN_VARIABLE, "")
    assert serve_command.resolve_token(None) is None
    with pytest.raises(ConfigError, match="--token is empty"):
        serve_command.resolve_token("  ")


def test_allowed_hosts_are_names_without_port():
    assert serve_command.allowed_hosts(["Box.LAN", "*", "::1", "[::1]"]) == ("box.lan", "*", "::1", "[::1]")
    assert serve_command.allowed_hosts(None) == ()
    for wrong in ("box.lan:8000", "http://box.lan", ""):
        with pytest.raises(ConfigError, match="--allow-host .* is not a host name"):
            serve_command.allowed_hosts([wrong])


def test_serve_options_keep_the_servers_defaults_unless_given():
    from lrformer.serving.app import ServeOptions

    parse = build_parser().parse_args
    args = parse(["serve", "--weights", "w.pth"])
    assert args.max_pixels is None and args.header_timeout == 10 and args.max_connections == 512
    options = serve_command.serve_options(args, args.max_pixels, None, ())
    assert options == ServeOptions()  # the command line's defaults are the server's
    args = parse(["serve", "--weights", "w.pth", "--host", "::", "--max-uploads", "3", "--upload-timeout", "4.5",
                  "--max-queued-mp", "2.5", "--max-pixels", "1000", "--allow-host", "a", "--allow-host", "*",
                  "--queue", "5", "--max-batch", "2", "--timeout", "9", "--max-upload-mb", "1"])  # fmt: skip
    options = serve_command.serve_options(args, args.max_pixels, "secret", ("a", "*"))
    assert (options.max_uploads, options.upload_timeout_s, options.max_queued_pixels) == (3, 4.5, 2_500_000)
    assert (options.max_pixels, options.host, options.allow_hosts, options.token) == (1000, "::", ("a", "*"), "secret")
    assert (options.max_queue, options.max_batch, options.timeout_s, options.max_upload_bytes) == (5, 2, 9, 1 << 20)


# -- a real server --------------------------------------------------------------------------------


def tiny_app():
    """``GET /health`` and ``POST /upload`` (reads the whole body), nothing of lrformer's app."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(request):
        return JSONResponse({"status": "ok"})

    async def upload(request):
        return JSONResponse({"bytes": len(await request.body())})

    return Starlette(routes=[Route("/health", health), Route("/upload", upload, methods=["POST"])])


class Records(logging.Handler):
    """Every record of the loggers it is attached to, formatted with its traceback."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))

    def text(self) -> str:
        return "\n".join(self.lines)


@contextlib.contextmanager
def running(**settings):
    """A uvicorn server of :func:`tiny_app` with :func:`server.server_config`'s ``settings`` on a
    free loopback port, in a thread: yields ``(port, uvicorn.Server, Records)``."""
    sock = server.bind("127.0.0.1", 0)
    uv = uvicorn.Server(server.server_config(tiny_app(), **settings))  # configures uvicorn's logging
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio", "lrformer")]
    for logger in loggers:
        logger.addHandler(records)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: uv.started, "the server started", WAIT)
        yield sock.getsockname()[1], uv, records
    finally:
        uv.should_exit = True
        thread.join(WAIT)
        for logger in loggers:
            logger.removeHandler(records)
    assert not thread.is_alive()


def health(port: int) -> float:
    """Seconds ``GET /health`` took on a new connection (asserting it answered 200)."""
    started = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT)
    try:
        connection.request("GET", "/health")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b'{"status":"ok"}'
    finally:
        connection.close()
    return time.monotonic() - started


def is_closed(sock: socket.socket, wait: float = 0.0) -> bool:
    """Whether the server closed ``sock`` (an end of file or a reset), waiting ``wait`` s for it."""
    if not select.select([sock], [], [], wait)[0]:
        return False
    try:
        return sock.recv(1 << 16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def answer(sock: socket.socket, request: bytes) -> int:
    """Send ``request`` on ``sock`` and read the whole response, keeping the connection; its status."""
    sock.sendall(request)
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.mark.parametrize("before", ["nothing", "one byte a tick", "a response, then one byte a tick"])
def test_slow_headers_are_cut_off_while_others_are_served(before):
    timeout = 0.5
    with running(header_timeout_s=timeout, keep_alive_s=30) as (port, _, records):
        slow = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        if before.startswith("a response"):
            assert answer(slow, GET_HEALTH) == 200  # the deadline restarts when a response completes
        started, trickle = time.monotonic(), iter(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000)
        answers = []
        while not is_closed(slow, wait=0.1):  # the pace of the slow client, not a synchronisation
            if time.monotonic() - started > WAIT:
                pytest.fail(f"a client trickling headers still connected after {WAIT} s")
            if before != "nothing":
                with contextlib.suppress(OSError):
                    slow.send(bytes([next(trickle)]))
            answers.append(health(port))  # meanwhile, other clients are served
        elapsed = time.monotonic() - started
        slow.close()
    assert timeout * 0.9 <= elapsed < 10 * timeout  # not uvicorn's keep-alive (30 s), not never
    assert len(answers) >= 2 and min(answers) < timeout
    assert "Traceback" not in records.text()


def test_an_idle_keep_alive_connection_closes_after_keep_alive():
    with running(header_timeout_s=30, keep_alive_s=0.5) as (port, _, records):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as idle:
            assert answer(idle, GET_HEALTH) == 200
            answered = time.monotonic()
            assert is_closed(idle, wait=WAIT)
            assert 0.4 <= time.monotonic() - answered < 15  # keep-alive, not the header deadline (30 s)
    assert records.lines == []


@pytest.mark.parametrize("arriving", ["at once", "incomplete"])
def test_headers_above_the_cap_are_refused(arriving):
    big = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * server.MAX_HEADER_BYTES + b"\r\n\r\n"
    with running() as (port, _, records):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as client:
            # at once (usually one read, which h11 would take whole): 431 from the protocol; incomplete
            # (or split by the kernel): 400 from h11's cap on an incomplete request
            status = answer(client, big if arriving == "at once" else big[:-4])
    assert status in ((400, 431) if arriving == "at once" else (400,))
    assert "Traceback" not in records.text() and len(records.lines) <= 1  # uvicorn's one warning for a 400


def test_connections_beyond_the_cap_are_closed_at_once():
    with running(max_connections=3) as (port, uv, records):
        idle = [socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(3)]
        wait_until(lambda: len(uv.server_state.connections) == 3, "3 connections open", WAIT)
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as beyond:
            assert is_closed(beyond, wait=WAIT)
        assert answer(idle[0], GET_HEALTH) == 503  # at the cap: uvicorn's 503
        for sock in idle:
            sock.close()
        wait_until(lambda: not uv.server_state.connections, "the connections closed", WAIT)
        health(port)  # served again
    assert "Traceback" not in records.text()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_a_client_leaving_mid_body_leaves_no_traceback(how, capfd):
    with running() as (port, uv, records):
        client = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        client.sendall(b"POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        wait_until(lambda: uv.server_state.tasks, "the upload started", WAIT)
        if how == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        wait_until(lambda: not uv.server_state.tasks and not uv.server_state.connections, "the upload ended", WAIT)
        health(port)
    assert records.lines == []
    assert "Traceback" not in capfd.readouterr().err
