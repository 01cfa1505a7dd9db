"""Loopback load test of ``lrformer serve``: N requests from C concurrent clients, every answer
checked against the predictor's own label map for its image; throughput and p50/p95 latency.

    python benchmarks/serve_load.py --weights work_dirs/demo/iter_500.pth --requests 300 --clients 16
    python benchmarks/serve_load.py --weights ... --max-batch 1      # micro-batching off

A 503 (queue full) is counted and retried after its ``Retry-After``; any other non-200 answer or a
wrong label map is a failure (exit status 1).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(argv: list[str], port: int, timeout: float = 120.0) -> subprocess.Popen:
    """``lrformer serve ARGV --port PORT`` in a subprocess, once ``/health`` answers."""
    process = subprocess.Popen([sys.executable, "-m", "lrformer", "serve", *argv, "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not answer /health in time")


def post(url: str, body: bytes) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def run_load(url: str, bodies: list[bytes], expected: list[np.ndarray], requests: int, clients: int) -> dict:
    """Send ``requests`` requests (cycling over ``bodies``) from ``clients`` threads; returns the
    figures and the failures (wrong label maps, unexpected statuses)."""

    def one(i: int) -> tuple[float, int, str | None]:
        body, truth = bodies[i % len(bodies)], expected[i % len(bodies)]
        started, busy = time.perf_counter(), 0
        while True:
            status, content, headers = post(url, body)
            if status != 503:
                break
            busy += 1
            time.sleep(float(headers.get("Retry-After", "1")))
        latency = time.perf_counter() - started
        if status != 200:
            return latency, busy, f"request {i}: status {status}: {content[:200]!r}"
        if not np.array_equal(np.asarray(Image.open(io.BytesIO(content))), truth):
            return latency, busy, f"request {i}: a wrong label map"
        return latency, busy, None

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
        "busy_503": sum(r[1] for r in results), "failures": [r[2] for r in results if r[2]],
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--images", nargs="*", default=None, help="images to send (default: 8 synthetic ones)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--queue", type=int, default=32)
    args = parser.parse_args()

    import cv2

    from lrformer import Predictor, create_model

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.helpers import synthetic_photo

    if args.images:
        bodies = [open(path, "rb").read() for path in args.images]
    else:
        bodies = [cv2.imencode(".png", synthetic_photo(256, 320, seed=i))[1].tobytes() for i in range(8)]
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
    server = start_server(serve, port)
    try:
        figures = run_load(f"http://127.0.0.1:{port}/predict", bodies, expected, args.requests, args.clients)
    finally:
        server.terminate()
        server.wait(60)
    print(json.dumps({**figures, "max_batch": args.max_batch, "failures": figures["failures"][:5]}, indent=1))
    return 1 if figures["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
