"""Loopback load test of ``lrformer serve``: N requests from C concurrent clients, every answer
checked against the predictor's own label map for its image; throughput and p50/p95 latency.

    python benchmarks/serve_load.py --weights work_dirs/demo/iter_500.pth --requests 300 --clients 16
    python benchmarks/serve_load.py --weights ... --max-batch 1      # micro-batching off

A 503 (queue full) is counted and retried after its ``Retry-After``; any other non-200 answer or a
wrong label map is a failure (exit status 1).

Adversarial mode: 8 normal clients send 640×480 photos (each answer checked exact) while one
attacker runs each attack of ``serve_attacks.py`` in turn for ``--attack-seconds``, then a quiet
``--quiet-seconds``; a monitor polls ``/health`` every 0.1 s (a fresh connection each time) and
samples the server's RSS every 0.5 s. A baseline without attack (``--baseline-seconds``) comes first.

    python benchmarks/serve_load.py --weights work_dirs/demo/iter_500.pth --attacks
    python benchmarks/serve_load.py --weights ... --attacks --attack-seconds 5 --only burst flood
    python benchmarks/serve_load.py --weights ... --attacks -- --token s3cret --max-upload-mb 8

Arguments after ``--`` (or each ``--server-arg=ARG``) go to ``lrformer serve``; a ``--token``
among them is sent by the normal clients (not by the attackers). Per phase: /health max and p99
(over the attack and its quiet interval), the normal clients' throughput during the attack
against the baseline's, their 503s, 504s and other failures, wrong answers, the server's peak RSS
and what the attacker saw; a markdown table, exit status 1 if a target is missed: /health ≤ 100 ms,
throughput ≥ 80% of the baseline, no 504 or other failure (503 is retried), no wrong answer,
RSS ≤ ``--rss-limit-mb``, 403 to every hostile ``Host``/``Origin``, the server alive.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

HEALTH_LIMIT_MS, THROUGHPUT_RATIO = 100.0, 0.8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(argv: list[str], port: int, timeout: float = 120.0) -> subprocess.Popen:
    """``lrformer serve ARGV --port PORT`` in a subprocess, once ``/health`` answers; its output
    goes to a temporary file, ``process.log`` (a pipe nobody reads could block it)."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen([sys.executable, "-m", "lrformer", "serve", *argv, "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    process.log = log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {server_output(process)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    stop_server(process)
    raise RuntimeError("the server did not answer /health in time")


def server_output(process: subprocess.Popen, chars: int = 2000) -> str:
    """The end of what the server printed."""
    process.log.flush()
    process.log.seek(0)
    return process.log.read()[-chars:]


def stop_server(process: subprocess.Popen) -> None:
    """Terminate the server; kill it if it is not gone within 10 s."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def post(url: str, body: bytes, timeout: float = 120, headers: dict | None = None) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def run_load(url: str, bodies: list[bytes], expected: list[np.ndarray], requests: int, clients: int,
             headers: dict | None = None) -> dict:  # fmt: skip
    """Send ``requests`` requests (cycling over ``bodies``) from ``clients`` threads; returns the
    figures and the failures (wrong label maps, unexpected statuses)."""

    def one(i: int) -> tuple[float, int, str | None, int]:
        body, truth = bodies[i % len(bodies)], expected[i % len(bodies)]
        started, busy = time.perf_counter(), 0
        while True:
            status, content, answer = post(url, body, headers=headers)
            if status != 503:
                break
            busy += 1
            time.sleep(float(answer.get("Retry-After", "1")))
        latency = time.perf_counter() - started
        if status != 200:
            return latency, busy, f"request {i}: status {status}: {content[:200]!r}", status
        if not np.array_equal(np.asarray(Image.open(io.BytesIO(content))), truth):
            return latency, busy, f"request {i}: a wrong label map", status
        return latency, busy, None, status

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - began
    latencies = sorted(r[0] for r in results)
    return {
        "requests": requests, "clients": clients, "seconds": round(elapsed, 2),
        "requests_per_s": round(requests / elapsed, 2),
        "p50_ms": round(statistics.median(latencies) * 1e3, 1),
        "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1e3, 1),
        "busy_503": sum(r[1] for r in results), "statuses": dict(Counter(str(r[3]) for r in results)),
        "failures": [r[2] for r in results if r[2]],
    }  # fmt: skip


def outcome_of(exc: BaseException) -> str:
    """A short name for a failed request: ``timeout``, ``ConnectionRefusedError``, ..."""
    reason = getattr(exc, "reason", exc)
    return "timeout" if isinstance(reason, TimeoutError) else type(reason).__name__


class NormalClients:
    """``count`` threads posting the photos in turn until closed; each answer goes into ``events``
    as ``(time, outcome)``: ``"200"`` (exact), ``"wrong"``, another status or an error name. A 503
    is recorded, then retried after its ``Retry-After``."""

    def __init__(self, url: str, bodies: list[bytes], expected: list[np.ndarray], count: int,
                 timeout: float, headers: dict, died: threading.Event) -> None:  # fmt: skip
        self.url, self.bodies, self.expected, self.timeout, self.headers = url, bodies, expected, timeout, headers
        self.events: list[tuple[float, str]] = []
        self.stop, self.died = threading.Event(), died
        self.threads = [threading.Thread(target=self.client, args=(i,), daemon=True) for i in range(count)]

    def __enter__(self) -> NormalClients:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(self.timeout + 5)

    def client(self, index: int) -> None:
        for i in range(index, 1 << 62):
            if self.stop.is_set() or self.died.is_set():
                return
            body, truth = self.bodies[i % len(self.bodies)], self.expected[i % len(self.bodies)]
            pause = 0.0
            try:
                status, content, answer = post(self.url, body, self.timeout, self.headers)
                outcome = str(status)
                if status == 200 and not np.array_equal(np.asarray(Image.open(io.BytesIO(content))), truth):
                    outcome = "wrong"
                pause = float(answer.get("Retry-After", "1")) if status == 503 else 0.0
            except (OSError, http.client.HTTPException, ValueError) as exc:
                outcome, pause = outcome_of(exc), 0.1
            self.events.append((time.monotonic(), outcome))
            self.stop.wait(pause)


def phase_row(name: str, began: float, attacked: float, ended: float, monitor, clients: NormalClients,
              baseline: float | None, seen: Counter | None, args) -> dict:  # fmt: skip
    """The figures of one phase: the attack ran from ``began`` to ``attacked``, its quiet interval
    to ``ended``; ``baseline`` is the unloaded throughput (``None``: this is the baseline)."""
    from serve_attacks import hostile_missed

    health = sorted(ms for t, ms in monitor.health if began <= t <= ended) or [float("nan")]
    rss = max((mb for t, mb in monitor.rss if began <= t <= ended), default=float("nan"))
    outcomes = Counter(o for t, o in clients.events if began <= t <= ended)
    rate = sum(1 for t, o in clients.events if began <= t <= attacked and o == "200") / max(attacked - began, 1e-9)
    ratio = rate / baseline if baseline else 1.0
    others = {o: n for o, n in outcomes.items() if o not in ("200", "503", "504", "wrong")}
    missed = [
        f"/health {health[-1]:.0f} ms" if not health[-1] <= HEALTH_LIMIT_MS else "",
        f"throughput {100 * ratio:.0f}%" if ratio < THROUGHPUT_RATIO else "",
        "504" if outcomes["504"] else "", "wrong answers" if outcomes["wrong"] else "",
        "failures" if others else "", f"RSS {rss:.0f} MB" if rss > args.rss_limit_mb else "",
        "not 403" if name == "hostile-origin" and seen is not None and hostile_missed(seen) else "",
        "attack overran" if seen is not None and seen["overran"] else "",
        "no exact answer" if rate == 0 else "", "server died" if began <= monitor.died_at <= ended else "",
    ]  # fmt: skip
    return {
        "phase": name, "health_max_ms": round(health[-1], 1),
        "health_p99_ms": round(health[min(len(health) - 1, int(0.99 * len(health)))], 1),
        "requests_per_s": round(rate, 2), "vs_baseline": f"{100 * ratio:.0f}%",
        "busy_503": outcomes["503"], "timeout_504": outcomes["504"], "other_failures": others,
        "wrong": outcomes["wrong"], "peak_rss_mb": round(rss), "attacker_saw": dict(seen or {}),
        "missed": [m for m in missed if m],
    }  # fmt: skip


def run_attacks(args, port: int, process: subprocess.Popen, bodies: list[bytes], expected: list[np.ndarray],
                headers: dict) -> list[dict]:  # fmt: skip
    """The baseline, then each attack and its quiet interval, the normal clients and the monitor
    running throughout; one row of figures per phase. Stops early once the server died."""
    from serve_attacks import ATTACKS, Monitor, Target, run_bounded

    died = threading.Event()
    target = Target(port, bodies[0], died)
    url = f"http://127.0.0.1:{port}/predict"
    rows: list[dict] = []
    with Monitor(port, process, died) as monitor, \
            NormalClients(url, bodies, expected, args.clients, args.client_timeout, headers, died) as clients:  # fmt: skip
        warm = time.monotonic() + 30  # first, an answer per client (the server warms up)
        while len(clients.events) < args.clients and time.monotonic() < warm and not died.wait(0.1):
            pass
        began = time.monotonic()
        died.wait(args.baseline_seconds)
        now = time.monotonic()
        rows.append(phase_row("baseline", began, now, now, monitor, clients, None, None, args))
        baseline = rows[0]["requests_per_s"]
        print(json.dumps(rows[-1]), flush=True)
        for name in args.only or ATTACKS:
            if died.is_set():
                rows.append({"phase": name, "missed": ["not run: the server died"]})
                continue
            began = time.monotonic()
            seen = run_bounded(ATTACKS[name], target, began + args.attack_seconds)
            attacked = time.monotonic()
            died.wait(args.quiet_seconds)
            rows.append(phase_row(name, began, attacked, time.monotonic(), monitor, clients, baseline, seen, args))
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The phases as a markdown table."""
    columns = ["phase", "health_max_ms", "health_p99_ms", "requests_per_s", "vs_baseline", "busy_503",
               "timeout_504", "other_failures", "wrong", "peak_rss_mb", "attacker_saw", "missed"]  # fmt: skip

    def cell(value) -> str:
        if isinstance(value, dict):
            value = ", ".join(f"{k}×{n}" for k, n in sorted(value.items(), key=lambda kv: -kv[1])[:6]) or "-"
        elif isinstance(value, list):
            value = "; ".join(value) or "ok"
        return str(value).replace("|", "/")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The options; whatever follows ``--`` is added to ``--server-arg``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", nargs="*", default=None, help="images to send (default: 8 synthetic ones)")
    parser.add_argument("--photo-size", default=None, help="WxH of the synthetic photos (default 320x256; "
                        "640x480 with --attacks)")  # fmt: skip
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=None, help="concurrent normal clients (16; 8 with --attacks)")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue", type=int, default=32)
    parser.add_argument("--server-arg", action="append", default=[], help="passed to lrformer serve (repeatable)")
    attacks = parser.add_argument_group("adversarial mode")
    attacks.add_argument("--attacks", action="store_true", help="run the attacks against normal clients")
    attacks.add_argument("--only", nargs="+", default=None, help="these attacks only (names in serve_attacks.py)")
    attacks.add_argument("--attack-seconds", type=float, default=25.0)
    attacks.add_argument("--quiet-seconds", type=float, default=5.0)
    attacks.add_argument("--baseline-seconds", type=float, default=20.0)
    attacks.add_argument("--client-timeout", type=float, default=75.0, help="s (above the server's --timeout)")
    attacks.add_argument("--rss-limit-mb", type=float, default=2500.0)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.server_arg += argv[split + 1 :]
    if args.clients is None:
        args.clients = 8 if args.attacks else 16
    if args.only:
        from serve_attacks import ATTACKS

        unknown = set(args.only) - set(ATTACKS)
        if unknown:
            parser.error(f"unknown attacks {sorted(unknown)}; known: {', '.join(ATTACKS)}")
    return args


def token_headers(server_args: list[str]) -> dict:
    """``Authorization: Bearer TOKEN`` when the server is given ``--token TOKEN`` (or finds it in
    ``$LRFORMER_SERVE_TOKEN``), else nothing."""
    token = os.environ.get("LRFORMER_SERVE_TOKEN")
    for i, arg in enumerate(server_args):
        if arg.startswith("--token="):
            token = arg.split("=", 1)[1]
        elif arg == "--token" and i + 1 < len(server_args):
            token = server_args[i + 1]
    return {"Authorization": f"Bearer {token}"} if token else {}


def main() -> int:
    args = parse_args(sys.argv[1:])

    import cv2

    from lrformer import Predictor, create_model

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.helpers import synthetic_photo

    width, height = map(int, (args.photo_size or ("640x480" if args.attacks else "320x256")).split("x"))
    if args.images:
        bodies = [open(path, "rb").read() for path in args.images]
    else:
        bodies = [cv2.imencode(".png", synthetic_photo(height, width, seed=i))[1].tobytes() for i in range(8)]
    model = create_model(args.model or args.weights, pretrained=args.weights if args.model else None)
    predictor = Predictor(model, input_format="bgr")
    expected = [predictor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)) for b in bodies]
    port = free_port()
    serve = [
        "--weights",
        args.weights,
        "--max-batch",
        str(args.max_batch),
        "--queue",
        str(args.queue),
        "--device",
        "cpu",
    ]
    if args.model:
        serve += ["--model", args.model]
    headers = token_headers(args.server_arg)
    server = start_server(serve + args.server_arg, port)
    try:
        if args.attacks:
            rows = run_attacks(args, port, server, bodies, expected, headers)
        else:
            url = f"http://127.0.0.1:{port}/predict"
            figures = run_load(url, bodies, expected, args.requests, args.clients, headers)
    finally:
        died = server.poll() is not None
        stop_server(server)
    if died:
        print(f"the server died; its last output:\n{server_output(server)}")
    if not args.attacks:
        print(json.dumps({**figures, "max_batch": args.max_batch, "failures": figures["failures"][:5]}, indent=1))
        return 1 if figures["failures"] or died else 0
    print(markdown_table(rows))
    missed = [row["phase"] for row in rows if row["missed"]]
    print(f"targets missed in: {', '.join(missed)}" if missed else "every target met")
    return 1 if missed or died else 0


if __name__ == "__main__":
    sys.exit(main())
