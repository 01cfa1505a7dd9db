"""The hostile clients of ``serve_load.py --attacks`` (see its docstring for the usage).

Each attack is a function ``attack(target, deadline) -> Counter``: one attacker, on loopback, until
``time.monotonic()`` passes ``deadline`` (or ``target.abort`` is set); it returns what it saw, as
counts of outcomes: an HTTP status (``"413"``), ``"timeout"``, ``"closed"`` (the server closed the
connection without answering), ``"reset"``, ``"refused"``. Every socket has a timeout, every thread
is joined, so an attack returns at most :data:`GRACE_S` seconds after its deadline
(:func:`run_bounded` gives up on one 10 s later still). Raw sockets (not an HTTP library) send the
malformed and slow requests. :class:`Monitor` watches the server meanwhile (``/health``, RSS).
"""

from __future__ import annotations

import http.client
import io
import itertools
import random
import selectors
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

GRACE_S = 5.0
"""How long past its deadline an attack may still wait for an answer (its sockets' timeouts)."""

HEALTH_TIMEOUT_S = 2.0
"""The timeout of a ``/health`` poll; a failed one counts as this long at least."""


@dataclass
class Target:
    """The server under attack: its loopback ``port``, a normal ``photo`` (PNG bytes) and the
    ``abort`` event the harness sets when the server died."""

    port: int
    photo: bytes
    abort: threading.Event = field(default_factory=threading.Event)

    def until(self, deadline: float) -> bool:
        """Whether an attack should go on: before ``deadline`` and not aborted."""
        return not self.abort.is_set() and time.monotonic() < deadline

    def head(self, method: str, path: str, length: int | None = None, content_type: str = "image/png",
             headers: tuple[str, ...] = ()) -> bytes:  # fmt: skip
        """A request's head (``Connection: close``); ``headers`` replace the default ``Host``."""
        lines = [f"{method} {path} HTTP/1.1", "Connection: close", *headers]
        if not any(h.lower().startswith("host:") for h in headers):
            lines.append(f"Host: 127.0.0.1:{self.port}")
        if length is not None:
            lines += [f"Content-Length: {length}", f"Content-Type: {content_type}"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def connect(self, deadline: float) -> socket.socket:
        """A new connection whose timeout lasts until ``deadline`` + :data:`GRACE_S` (1 s at least)."""
        timeout = max(1.0, deadline + GRACE_S - time.monotonic())
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)


def failure(exc: BaseException) -> str:
    """The outcome name of a socket error."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    return type(exc).__name__


def read_status(sock: socket.socket) -> str:
    """The status of the answer arriving on ``sock`` (``"200"``), or ``"closed"``/``"timeout"``/...."""
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return "closed" if not data else "bad answer"
            data += chunk
    except OSError as exc:
        return failure(exc)
    fields = data.split(b" ", 2)
    return fields[1].decode() if len(fields) > 1 and fields[1].isdigit() else "bad answer"


def exchange(target: Target, head: bytes, body: bytes, deadline: float) -> str:
    """Send one request on a new connection and return the answer's status (or what happened).
    A server that answers before reading the whole body (413) is still heard."""
    try:
        sock = target.connect(deadline)
    except OSError as exc:
        return failure(exc)
    with sock:
        try:
            sock.sendall(head + body)
        except OSError as exc:
            if isinstance(exc, TimeoutError):
                return "timeout"
        return read_status(sock)


def in_threads(count: int, work: Callable[[int], Counter]) -> Counter:
    """Run ``work(0)`` ... ``work(count - 1)`` in ``count`` threads at once, join them, add their counts."""
    results: list[Counter] = [Counter() for _ in range(count)]

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(results, Counter())


def flat_png(width: int, height: int) -> bytes:
    """A flat grey PNG: a few KB on the wire, ``width × height`` pixels once decoded."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


def many_parts(target: Target, deadline: float, parts: int = 80_000) -> Counter:
    """A multipart form of ``parts`` tiny fields (~4 MB, under the upload limit) and no image,
    posted again and again: a server that parses every part (on its event loop) stalls."""
    boundary = "lrformer-attack-boundary"
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="p"\r\n\r\na\r\n'.encode()
    body = part * parts + f"--{boundary}--\r\n".encode()
    head = target.head("POST", "/predict", len(body), f"multipart/form-data; boundary={boundary}")
    seen = Counter()
    while target.until(deadline):
        seen[exchange(target, head, body, deadline)] += 1
    return seen


def pixel_bombs(target: Target, deadline: float, uploaders: int = 4) -> Counter:
    """``uploaders`` concurrent ``?format=overlay`` uploads, each cycling through a flat
    8000×8000 PNG (~80 KB, 64 megapixels decoded), a 20000×1 and a 40×9000 one."""
    images = {"8000x8000": flat_png(8000, 8000), "20000x1": flat_png(20000, 1), "40x9000": flat_png(40, 9000)}

    def upload(i: int) -> Counter:
        seen = Counter()
        for name in itertools.islice(itertools.cycle(images), i, None):
            if not target.until(deadline):
                break
            body = images[name]
            head = target.head("POST", "/predict?format=overlay", len(body))
            seen[f"{name} {exchange(target, head, body, deadline)}"] += 1
        return seen

    return in_threads(uploaders, upload)


def probe(sockets: dict[socket.socket, str]) -> Counter:
    """What became of each held connection (its kind in ``sockets``): answered (the status),
    ``closed`` by the server, or still ``held`` open, seen at once for all (0.5 s at most)."""
    seen = Counter()
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        readable = {key.fileobj for key, _ in selector.select(timeout=0.5)}
    for sock, kind in sockets.items():
        if sock not in readable:
            seen[f"{kind} held"] += 1
            continue
        sock.settimeout(0.5)
        seen[f"{kind} {read_status(sock)}"] += 1
    return seen


def slow_connections(target: Target, deadline: float, idle: int = 200, slowloris: int = 10,
                     partial: int = 8) -> Counter:  # fmt: skip
    """Connections that hold the server without finishing a request: one declaring a 1 MB body
    sent at 1 byte/s, ``partial`` each sending half of a declared 30 MB body then stalling,
    ``idle`` that never send a byte, ``slowloris`` sending their headers one byte a second.
    At the deadline each is probed: answered, closed by the server, or still held."""
    seen, held, lock = Counter(), {}, threading.Lock()
    half = bytes(15 << 20)

    def open_one(kind: str, first: bytes = b"") -> socket.socket | None:
        try:
            sock = target.connect(deadline)
            sock.sendall(first)
        except OSError as exc:
            with lock:
                seen[f"{kind} {failure(exc)}"] += 1
            return None
        with lock:
            held[sock] = kind
        return sock

    def upload_half(i: int) -> Counter:
        open_one("half-30MB", target.head("POST", "/predict", 30 << 20) + half)
        return Counter()

    uploads = threading.Thread(target=in_threads, args=(partial, upload_half), daemon=True)
    uploads.start()
    for _ in range(idle):
        open_one("idle")
    drip = open_one("1MB@1B/s", target.head("POST", "/predict", 1 << 20))
    loris_head = target.head("POST", "/predict")[:-2] + b"X-Slow: " + b"a" * 3600
    lorises = [sock for sock in (open_one("slowloris") for _ in range(slowloris)) if sock]
    for second in itertools.count():
        if not target.until(deadline):
            break
        for sock, byte in [(drip, b"\0")] + [(s, loris_head[second : second + 1]) for s in lorises]:
            if sock is not None and held.get(sock):
                try:
                    sock.send(byte)
                except OSError as exc:  # the server gave up on it
                    with lock:
                        seen[f"{held.pop(sock)} send {failure(exc)}"] += 1
                    sock.close()
        target.abort.wait(max(0.0, min(1.0, deadline - time.monotonic())))
    uploads.join()
    with lock:
        seen += probe(held)
        for sock in held:
            sock.close()
    return seen


def burst(target: Target, deadline: float) -> Counter:
    """Bursts of 10 to 30 photos posted at once (one connection each), the next as soon as the
    last is answered."""
    rng, seen = random.Random(0), Counter()
    head = target.head("POST", "/predict", len(target.photo))
    while target.until(deadline):
        seen += in_threads(rng.randint(10, 30), lambda i: Counter([exchange(target, head, target.photo, deadline)]))
    return seen


def disconnects(target: Target, deadline: float, pause_s: float = 0.05) -> Counter:
    """Uploads dropped half-way, again and again: the head and half a photo then a close (every
    other one an abortive close, RST), and every third upload sent whole then dropped before
    its answer (the server works for nobody)."""
    seen = Counter()
    body = target.photo
    head = target.head("POST", "/predict", len(body))
    for i in itertools.count():
        if not target.until(deadline):
            break
        kind = ("half+close", "half+RST", "whole+close")[i % 3]
        try:
            with target.connect(deadline) as sock:
                sock.sendall(head + (body if kind == "whole+close" else body[: len(body) // 2]))
                if kind == "half+RST":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            seen[kind] += 1
        except OSError as exc:
            seen[f"{kind} {failure(exc)}"] += 1
        target.abort.wait(pause_s)
    return seen


def hostile_origin(target: Target, deadline: float, pause_s: float = 0.5) -> Counter:
    """What a page on another site (``Origin: http://evil.example``) or one reached by DNS
    rebinding (``Host: evil.example``) could send: a photo to ``/predict`` and ``GET /model``,
    every ``pause_s``. A hardened server answers 403 to each (:func:`hostile_missed`)."""
    seen = Counter()
    variants = {"origin": ("Origin: http://evil.example",), "host": ("Host: evil.example",)}
    while target.until(deadline):
        for name, headers in variants.items():
            head = target.head("POST", "/predict", len(target.photo), headers=headers)
            seen[f"{name} predict {exchange(target, head, target.photo, deadline)}"] += 1
            seen[f"{name} model {exchange(target, target.head('GET', '/model', headers=headers), b'', deadline)}"] += 1
        target.abort.wait(pause_s)
    return seen


def hostile_missed(seen: Counter) -> bool:
    """Whether a hostile request got anything but 403."""
    return any(not outcome.endswith(" 403") for outcome in seen)


def flood(target: Target, deadline: float, requests: int = 200, connections: int = 4) -> Counter:
    """``requests`` rapid ``POST /predict`` with a bogus 1 KB body (not an image), ``connections``
    at a time; again each second (at most) until the deadline."""
    body = random.Random(1).randbytes(1024)
    head = target.head("POST", "/predict", len(body), "application/octet-stream")

    def send(i: int) -> Counter:
        mine = Counter()
        for _ in range(i, requests, connections):
            if not target.until(deadline):
                break
            mine[exchange(target, head, body, deadline)] += 1
        return mine

    seen = Counter()
    while target.until(deadline):
        started = time.monotonic()
        seen += in_threads(connections, send)
        target.abort.wait(max(0.0, min(started + 1.0, deadline) - time.monotonic()))
    return seen


class Monitor:
    """Two threads: one polls ``/health`` every 0.1 s with a fresh connection (a failure or a
    timeout counts as :data:`HEALTH_TIMEOUT_S` at least) into ``health`` ``(time, ms)``, one
    samples the server's RSS (with its children) every 0.5 s into ``rss`` ``(time, MB)`` and sets
    ``died`` (and ``died_at``) once the server exits."""

    def __init__(self, port: int, process: subprocess.Popen, died: threading.Event) -> None:
        self.port, self.process, self.died = port, process, died
        self.health: list[tuple[float, float]] = []
        self.rss: list[tuple[float, float]] = []
        self.stop, self.died_at = threading.Event(), float("inf")
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self.poll_health, self.sample_rss)]

    def __enter__(self) -> Monitor:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(HEALTH_TIMEOUT_S + 5)

    def poll_health(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=HEALTH_TIMEOUT_S)
            try:
                connection.request("GET", "/health")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                connection.close()
            elapsed = time.monotonic() - started
            self.health.append((started, 1e3 * (elapsed if ok else max(elapsed, HEALTH_TIMEOUT_S))))
            self.stop.wait(max(0.0, 0.1 - elapsed))

    def sample_rss(self) -> None:
        import psutil

        server = psutil.Process(self.process.pid)
        while not self.stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [server, *server.children(recursive=True)])
                self.rss.append((time.monotonic(), rss / 2**20))
            except psutil.Error:
                pass
            if self.process.poll() is not None:
                self.died_at = time.monotonic()
                self.died.set()
                return
            self.stop.wait(0.5)


def run_bounded(attack: Callable[[Target, float], Counter], target: Target, deadline: float) -> Counter:
    """``attack(target, deadline)`` in a thread, joined :data:`GRACE_S` + 10 s past the deadline at
    most: what it saw, or ``{"overran": 1}`` if it has not returned by then."""
    result: list[Counter] = []
    thread = threading.Thread(target=lambda: result.append(attack(target, deadline)), daemon=True)
    thread.start()
    thread.join(max(0.0, deadline - time.monotonic()) + GRACE_S + 10)
    return result[0] if result else Counter(overran=1)


ATTACKS: dict[str, Callable[[Target, float], Counter]] = {
    "many-parts": many_parts,
    "pixel-bombs": pixel_bombs,
    "slow-clients": slow_connections,
    "burst": burst,
    "disconnects": disconnects,
    "hostile-origin": hostile_origin,
    "flood": flood,
}
"""The attacks in the order they run."""
