"""The ASGI application of ``lrformer serve`` (Starlette): a local web page and an HTTP API.

Routes:
    ``GET /``: the page (static files shipped in the package, no CDN);
    ``POST /predict``: an image (raw body or multipart field ``image``) → the label map as a
    palette PNG, or ``?format=json`` (class fractions, size, model, time), ``?format=overlay``;
    ``GET /health``; ``GET /model`` (variant, classes, palette, test settings).

Every refused request is answered with JSON ``{"error": "..."}`` naming the problem, its status
taken from the error's type (:func:`error_response`: 4xx, 503 when busy, 504 past the timeout);
nothing a client sends reaches the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import json
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from email.parser import BytesParser
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import DeadlineError, InputError, LRFormerError, ServerBusyError, UploadTooLargeError
from ..image import class_table, overlay
from ..image.io import decode_image, encode_image, encode_label_png
from ..inference import Predictor, prepare
from .worker import InferenceWorker

STATIC = Path(__file__).parent / "static"
FORMATS = ("png", "json", "overlay")
"""What ``POST /predict?format=`` answers: the label map as a palette PNG, class fractions, an overlay."""


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the server: upload size, queue, micro-batch, per-request time (waiting in the queue
    and running), how many uploads are decoded at once, and the pixel limit of an image
    (``None``: ``LRFORMER_MAX_PIXELS`` or 2^28, see :func:`~lrformer.image.io.pixel_limit`)."""

    max_upload_bytes: int = 32 << 20
    max_queue: int = 32
    max_batch: int = 8
    timeout_s: float = 60.0
    retry_after_s: int = 2
    max_decoding: int = 2
    max_pixels: int | None = None


def error_response(exc: BaseException, options: ServeOptions) -> JSONResponse:
    """The answer ``{"error": "..."}`` to a request that raised ``exc``: the status comes from the
    type (:attr:`LRFormerError.http_status <lrformer.errors.LRFormerError.http_status>`: 400, 413,
    415, 503 with ``Retry-After``, 504); anything else is a failure of the inference, 500."""
    if not isinstance(exc, LRFormerError):
        message = f"inference failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return JSONResponse({"error": message}, status_code=500)
    headers = {"Retry-After": str(options.retry_after_s)} if exc.http_status == 503 else None
    return JSONResponse({"error": exc.summary or str(exc)}, status_code=exc.http_status, headers=headers)


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


async def read_upload(request: Request, limit: int) -> bytes:
    """The image bytes of a raw body or of a multipart form's ``image`` field, at most ``limit``;
    raises :class:`~lrformer.errors.UploadTooLargeError` or :class:`~lrformer.errors.InputError`."""
    content_type = request.headers.get("content-type", "")
    multipart = content_type.lower().startswith("multipart/form-data")
    body = await _read_body(request, limit + (MULTIPART_SLACK if multipart else 0))
    data = _form_image(body, content_type) if multipart and body is not None else body
    if multipart and body is not None and data is None:
        raise InputError("the multipart form has no field 'image': send the image file as the field 'image'")
    if data is None or len(data) > limit:
        raise UploadTooLargeError(f"the upload is above the limit of {limit / 2**20:.0f} MB (--max-upload-mb)")
    if not data:
        raise InputError("the upload is empty: send the image file as the request body or the form field 'image'")
    return data


def create_app(
    predictor: Predictor,
    description: dict,
    options: ServeOptions | None = None,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> Starlette:
    """The application serving ``predictor``.

    Args:
        predictor: a predictor of the loaded model (run by one worker thread).
        description: what ``GET /model`` answers: ``name``, ``classes``, ``palette`` (RGB per class),
            ``test`` (the test-time settings), ``export`` (an exported model's runtime, size and
            precision; ``None`` for PyTorch); ``classes`` and ``palette`` also draw the overlays.
        options: limits (:class:`ServeOptions`).
        sleep: how a request's deadline (``options.timeout_s``) is waited out, :func:`asyncio.sleep`;
            a test passes a clock of its own to decide when deadlines pass.
    """
    handlers = Handlers(predictor, description, options or ServeOptions(), sleep)
    routes = [
        Route("/", handlers.index),
        Route("/health", handlers.health),
        Route("/model", handlers.model),
        Route("/predict", handlers.predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes, lifespan=handlers.lifespan)


class Handlers:
    """The handlers of the routes: the predictor, its description and limits, and while the
    application runs, the inference worker and the semaphore bounding the uploads decoded at once;
    ``sleep`` waits out the deadline of a request (:func:`asyncio.sleep`)."""

    def __init__(
        self,
        predictor: Predictor,
        description: dict,
        options: ServeOptions,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self.predictor, self.description, self.options, self.sleep = predictor, description, options, sleep
        self.palette = np.asarray(description["palette"], dtype=np.uint8)  # (C, 3) RGB
        self.names = description["classes"]
        self.worker: InferenceWorker | None = None
        self.decoding: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        self.worker = InferenceWorker(self.predictor, self.options.max_queue, self.options.max_batch)
        self.decoding = asyncio.Semaphore(self.options.max_decoding)
        yield
        await run_in_threadpool(self.worker.close)  # finish the queued requests

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "waiting": self.worker.waiting if self.worker else 0})

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.description)

    async def predict(self, request: Request) -> Response:
        """``POST /predict?format=png|json|overlay``: the answer in that format, or the error."""
        started = time.perf_counter()
        kind = request.query_params.get("format", "png")
        try:
            if kind not in FORMATS:
                raise InputError(f"format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got {kind!r}")
            prepared, label = await self.segment(request, kind)
        except Exception as exc:  # a refused request (4xx, 503, 504) or a failed inference (500): this one only
            return error_response(exc, self.options)
        if kind == "json":
            return self.json_answer(label, started)
        if kind == "overlay":
            return await self.overlay_answer(prepared.bgr, label)
        return await self.png_answer(label)

    async def segment(self, request: Request, kind: str):
        """The upload decoded, prepared and segmented: ``(prepared image, label map (H, W))``."""
        worker, options = self.worker, self.options
        if worker.waiting >= options.max_queue:  # before reading and decoding the upload
            raise ServerBusyError(f"busy: {worker.waiting} requests are already waiting; retry later")
        data = await read_upload(request, options.max_upload_bytes)
        async with self.decoding:  # a few decoded images in memory at a time, not one per thread
            prepared = await run_in_threadpool(_prepare, data, self.predictor, kind == "overlay", options.max_pixels)
        return prepared, await self.result_within(worker.submit(prepared), options.timeout_s)

    async def result_within(self, future: Future, timeout_s: float) -> np.ndarray:
        """What the worker's ``future`` resolves to (the label map) or raises, or a
        :class:`~lrformer.errors.DeadlineError` once ``self.sleep(timeout_s)`` returns first. Past
        the deadline, or when the request is cancelled, a job still waiting in the queue is cancelled
        (the worker skips it); a running one finishes unobserved."""
        answer = asyncio.wrap_future(future)
        deadline = asyncio.ensure_future(self.sleep(timeout_s))
        try:
            await asyncio.wait((answer, deadline), return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
            if not answer.done():
                answer.cancel()
                future.cancel()  # now, not when the loop gets round to the wrapper's callback
        if answer.cancelled():
            raise DeadlineError(f"the prediction waited and ran longer than {timeout_s:g} s")
        return answer.result()

    def json_answer(self, label: np.ndarray, started: float) -> Response:
        """``format=json``: the model, the size, the time since ``started`` and the class fractions."""
        return JSONResponse({
            "model": self.description.get("name"), "size": list(label.shape),
            "time_ms": round((time.perf_counter() - started) * 1e3, 1), "classes": class_table(label, self.names),
        })  # fmt: skip

    async def overlay_answer(self, bgr: np.ndarray, label: np.ndarray) -> Response:
        """``format=overlay``: the label colours over the image ``bgr``, with a legend, as PNG."""
        picture = await run_in_threadpool(overlay, bgr, label, self.palette, 0.5, self.names, True, True)
        return Response(await run_in_threadpool(encode_image, picture, ".png"), media_type="image/png")

    async def png_answer(self, label: np.ndarray) -> Response:
        """``format=png``: the label map as a palette PNG; the classes present in ``X-Classes``."""
        table = json.dumps(class_table(label, self.names), separators=(",", ":"))
        return Response(
            await run_in_threadpool(encode_label_png, label, self.palette), media_type="image/png",
            headers={"X-Classes": table},  # what the page's legend shows
        )  # fmt: skip


def _prepare(data: bytes, predictor: Predictor, keep_image: bool, max_pixels: int | None = None):
    """Decode (refusing pixel bombs from the header) and build the network inputs."""
    bgr = decode_image(data, "the upload", max_pixels)
    return prepare(bgr, predictor.config, keep_image=keep_image, input_format="bgr")
