"""The ASGI application of ``lrformer serve`` (Starlette): a local web page and an HTTP API.

Routes:
    ``GET /``: the page (static files shipped in the package, no CDN);
    ``POST /predict``: an image (raw body or multipart field ``image``) → the label map as a
    palette PNG, or ``?format=json`` (class fractions, size, model, time), ``?format=overlay``;
    ``GET /health``; ``GET /model`` (variant, classes, palette, test settings).

Every refused request is a 4xx (or 503 when busy) JSON ``{"error": "..."}`` naming the problem;
nothing a client sends reaches the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import json
import time
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..image import class_table, overlay
from ..image.io import ImageReadError, decode_image, encode_image, encode_label_png
from ..inference import Predictor, prepare
from .worker import Busy, Closed, InferenceWorker

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the server: upload size, queue, micro-batch, per-request time (waiting in the queue
    and running), and how many uploads are decoded at once."""

    max_upload_bytes: int = 32 << 20
    max_queue: int = 32
    max_batch: int = 8
    timeout_s: float = 60.0
    retry_after_s: int = 2
    max_decoding: int = 2


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


MULTIPART_SLACK = 64 << 10
"""Bytes a multipart body may hold beyond the image (boundaries and part headers)."""


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The request body, counted as it arrives (chunked or not): ``None`` past ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _form_image(body: bytes, content_type: str) -> bytes | None:
    """The ``image`` part of a ``multipart/form-data`` body, parsed in memory (nothing goes to disk)."""
    message = BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
    )
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "image":
            return part.get_payload(decode=True) or b""
    return None


async def _read_upload(request: Request, limit: int) -> bytes | JSONResponse:
    """The image bytes of a raw body or of a multipart form's ``image`` field, at most ``limit``."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.lower().startswith("multipart/form-data")
    body = await _read_body(request, limit + (MULTIPART_SLACK if multipart else 0))
    too_large = _error(413, f"the upload is above the limit of {limit / 2**20:.0f} MB (--max-upload-mb)")
    if body is None:
        return too_large
    data = body
    if multipart:
        data = _form_image(body, content_type)
        if data is None:
            return _error(400, "the multipart form has no field 'image': send the image file as the field 'image'")
    if len(data) > limit:
        return too_large
    if not data:
        return _error(400, "the upload is empty: send the image file as the request body or the form field 'image'")
    return data


def create_app(predictor: Predictor, description: dict, options: ServeOptions | None = None) -> Starlette:
    """The application serving ``predictor``.

    Args:
        predictor: a predictor of the loaded model (run by one worker thread).
        description: what ``GET /model`` answers: ``name``, ``classes``, ``palette`` (RGB per class),
            ``test`` (the test-time settings); ``classes`` and ``palette`` also draw the overlays.
        options: limits (:class:`ServeOptions`).
    """
    import numpy as np

    options = options or ServeOptions()
    palette = np.asarray(description["palette"], dtype=np.uint8)
    names = description["classes"]
    state: dict = {}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def health(request: Request) -> Response:
        worker = state.get("worker")
        return JSONResponse({"status": "ok", "waiting": worker.waiting if worker else 0})

    async def model_info(request: Request) -> Response:
        return JSONResponse(description)

    async def predict(request: Request) -> Response:
        started = time.perf_counter()
        kind = request.query_params.get("format", "png")
        if kind not in ("png", "json", "overlay"):
            return _error(400, f"format must be png, json or overlay, got {kind!r}")
        worker = state["worker"]
        busy = {"Retry-After": str(options.retry_after_s)}
        if worker.waiting >= options.max_queue:  # before reading and decoding the upload
            return _error(503, f"busy: {worker.waiting} requests are already waiting; retry later", busy)
        data = await _read_upload(request, options.max_upload_bytes)
        if isinstance(data, Response):
            return data
        try:
            async with state["decoding"]:  # a few decoded images in memory at a time, not one per thread
                prepared = await run_in_threadpool(_prepare, data, predictor, kind == "overlay")
        except ImageReadError as exc:
            return _error(413 if "above the limit" in str(exc) else 415, str(exc))
        try:
            future = worker.submit(prepared)
        except Busy as exc:
            return _error(503, f"busy: {exc}; retry later", busy)
        except Closed as exc:
            return _error(503, str(exc), busy)
        try:
            label = await asyncio.wait_for(asyncio.wrap_future(future), options.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            return _error(504, f"the prediction waited and ran longer than {options.timeout_s:g} s")
        except Exception as exc:  # an inference failure (e.g. out of memory): this request only
            return _error(500, f"inference failed: {type(exc).__name__}: {str(exc).strip()[:300]}")
        if kind == "json":
            return JSONResponse({
                "model": description.get("name"), "size": list(label.shape),
                "time_ms": round((time.perf_counter() - started) * 1e3, 1), "classes": class_table(label, names),
            })  # fmt: skip
        if kind == "overlay":
            picture = await run_in_threadpool(overlay, prepared.bgr, label, palette, 0.5, names, True, True)
            return Response(await run_in_threadpool(encode_image, picture, ".png"), media_type="image/png")
        table = json.dumps(class_table(label, names), separators=(",", ":"))
        return Response(
            await run_in_threadpool(encode_label_png, label, palette), media_type="image/png",
            headers={"X-Classes": table},  # what the page's legend shows
        )  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state["worker"] = InferenceWorker(predictor, options.max_queue, options.max_batch)
        state["decoding"] = asyncio.Semaphore(options.max_decoding)
        yield
        await run_in_threadpool(state["worker"].close)  # finish the queued requests

    routes = [
        Route("/", index),
        Route("/health", health),
        Route("/model", model_info),
        Route("/predict", predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def _prepare(data: bytes, predictor: Predictor, keep_image: bool):
    """Decode (refusing pixel bombs from the header) and build the network inputs."""
    bgr = decode_image(data, "the upload")
    return prepare(bgr, predictor.config, keep_image=keep_image, input_format="bgr")
