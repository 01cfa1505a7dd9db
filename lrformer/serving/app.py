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
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ClientGoneError, DeadlineError, ImageTooLargeError, InputError, LRFormerError, ServerBusyError
from ..image import class_table, overlay
from ..image.io import decode_image, encode_image, encode_label_png, header_size
from ..inference import Predictor, prepare
from .admission import CostModel, Work, predictor_work
from .uploads import read_upload
from .worker import InferenceWorker

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
FORMATS = ("png", "json", "overlay")
"""What ``POST /predict?format=`` answers: the label map as a palette PNG, class fractions, an overlay."""

SERVE_MAX_PIXELS = 1 << 25
"""Largest image (width × height, 33.5 megapixels, e.g. 8192×4096) a server decodes unless told
otherwise: the work of a request grows with its pixels (the scores are resized back to them), so
the server's cap is lower than the command line's 2^28."""


@dataclass(frozen=True)
class ServeOptions:
    """Limits of the server.

    Attributes:
        max_upload_bytes: largest upload (the image file; a form may add 64 KB of framing).
        max_queue: requests waiting at most (beyond: 503 + ``Retry-After``).
        max_batch: requests run together (deadline-aware micro-batching; 1: none).
        timeout_s: seconds a request may wait and run (504 beyond; one that cannot finish in time
            is refused at admission with 503 instead).
        retry_after_s: the ``Retry-After`` of a 503.
        max_decoding: uploads decoded and prepared at once (off the event loop).
        max_pixels: largest image decoded (``None``: :data:`SERVE_MAX_PIXELS`).
        max_queued_pixels: decoded pixels of all requests admitted and not yet answered, together
            (beyond: 503): bounds the work and the memory the queue holds.
        max_uploads: uploads being received at once (beyond: 503 at once).
        upload_timeout_s: seconds an upload may take to arrive, whole (408 beyond).
        max_parts: parts a multipart form may have (400 beyond); the form is parsed off the event loop.
        host: the address the server is bound to; ``Host`` and ``Origin`` must name it (or
            ``allow_hosts``): a page on another site, or one reached by DNS rebinding, gets 403.
        allow_hosts: further host names (without port) allowed in ``Host`` / ``Origin``; ``"*"``
            allows any.
        token: when set, every request but ``/health`` must carry it (``Authorization: Bearer``,
            the ``lrformer_token`` cookie the page sets, or ``?token=`` to open the page).
    """

    max_upload_bytes: int = 32 << 20
    max_queue: int = 32
    max_batch: int = 8
    timeout_s: float = 60.0
    retry_after_s: int = 2
    max_decoding: int = 2
    max_pixels: int | None = None
    max_queued_pixels: int = 1 << 27
    max_uploads: int = 16
    upload_timeout_s: float = 30.0
    max_parts: int = 8
    host: str = "127.0.0.1"
    allow_hosts: tuple[str, ...] = ()
    token: str | None = None


def error_response(exc: BaseException, options: ServeOptions) -> JSONResponse:
    """The answer ``{"error": "..."}`` to a request that raised ``exc``: the status comes from the
    type (:attr:`LRFormerError.http_status <lrformer.errors.LRFormerError.http_status>`: 400, 413,
    415, 503 with ``Retry-After``, 504); anything else is a failure of the inference, 500."""
    if not isinstance(exc, LRFormerError):
        message = f"inference failed: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return JSONResponse({"error": message}, status_code=500)
    headers = {"Retry-After": str(options.retry_after_s)} if exc.http_status == 503 else None
    return JSONResponse({"error": exc.summary or str(exc)}, status_code=exc.http_status, headers=headers)


def create_app(
    predictor: Predictor,
    description: dict,
    options: ServeOptions | None = None,
    *,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    calibrate: bool = True,
    cost: CostModel | None = None,
):
    """The application serving ``predictor`` (an ASGI app: Starlette behind :class:`~.guard.Guard`).

    Args:
        predictor: a predictor of the loaded model (run by one worker thread).
        description: what ``GET /model`` answers: ``name``, ``classes``, ``palette`` (RGB per class),
            ``test`` (the test-time settings), ``export`` (an exported model's runtime, size and
            precision; ``None`` for PyTorch); ``classes`` and ``palette`` also draw the overlays.
        options: limits and who may call (:class:`ServeOptions`).
        sleep: how a request's deadline (``options.timeout_s``) is waited out, :func:`asyncio.sleep`;
            a test passes a clock of its own to decide when deadlines pass.
        clock: the time the worker's deadlines are on (:func:`time.monotonic`; with ``sleep``, a test's).
        calibrate: at start-up, measure how fast the model runs (:meth:`CostModel.calibrate`, also a
            warm-up) before admitting requests by their predicted time; else the priors are used.
        cost: the cost model to start from (default :class:`CostModel`'s priors).
    """
    from .guard import Guard

    options = options or ServeOptions()
    handlers = Handlers(predictor, description, options, sleep, clock, calibrate, cost)
    routes = [
        Route("/", handlers.index),
        Route("/health", handlers.health),
        Route("/model", handlers.model),
        Route("/predict", handlers.predict, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=handlers.lifespan)
    app.state.handlers = handlers  # the worker and the budget, for whoever embeds or tests the server
    return Guard(app, options.host, options.allow_hosts, options.token)


class Handlers:
    """The handlers of the routes: the predictor, its description and limits, and while the
    application runs, the inference worker, the cost model, the queued-pixel budget and the
    semaphores bounding the uploads received and the images decoded at once."""

    def __init__(
        self,
        predictor: Predictor,
        description: dict,
        options: ServeOptions,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        calibrate: bool = True,
        cost: CostModel | None = None,
    ) -> None:
        self.predictor, self.description, self.options = predictor, description, options
        self.sleep, self.clock, self.calibrate = sleep, clock, calibrate
        self.palette = np.asarray(description["palette"], dtype=np.uint8)  # (C, 3) RGB
        self.names = description["classes"]
        self.cost = cost or CostModel()
        self.max_pixels = options.max_pixels or SERVE_MAX_PIXELS  # the pixel cap in force
        self.worker: InferenceWorker | None = None
        self.queued_pixels = 0  # decoded pixels of the requests admitted and not yet answered
        self.uploads = self.decoding = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette):
        if self.calibrate:
            await run_in_threadpool(self.cost.calibrate, self.predictor)
        self.worker = InferenceWorker(
            self.predictor, self.options.max_queue, self.options.max_batch, self.cost, self.clock
        )
        self.uploads = asyncio.Semaphore(self.options.max_uploads)
        self.decoding = asyncio.Semaphore(self.options.max_decoding)
        yield
        await run_in_threadpool(self.worker.close)  # finish the queued requests

    async def index(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def health(self, request: Request) -> Response:
        worker = self.worker
        return JSONResponse({
            "status": "ok", "waiting": worker.waiting if worker else 0,
            "backlog_s": round(worker.backlog(), 2) if worker else 0.0,
        })  # fmt: skip

    async def model(self, request: Request) -> Response:
        return JSONResponse(self.description)

    async def predict(self, request: Request) -> Response:
        """``POST /predict?format=png|json|overlay``: the answer in that format, or the error."""
        started = time.perf_counter()
        kind = request.query_params.get("format", "png")
        try:
            if kind not in FORMATS:
                raise InputError(f"format must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}, got {kind!r}")
            data, label = await self.segment(request)
            if kind == "json":
                return self.json_answer(label, started)
            if kind == "overlay":
                return await self.overlay_answer(data, label)
            return await self.png_answer(label)
        except ClientGoneError as exc:  # nobody to answer: one quiet line
            logger.info("%s %s: %s", request.method, request.url.path, exc)
            return Response(status_code=exc.http_status)
        except Exception as exc:  # a refused request (4xx, 503, 504) or a failed inference (500): this one only
            answer = error_response(exc, self.options)
            # the body may be unread (refused from its headers, or part-way): closing the connection saves
            # reading the rest of it, which for a flood of large bodies would keep the event loop busy
            answer.headers["Connection"] = "close"
            return answer

    async def segment(self, request: Request) -> tuple[bytes, np.ndarray]:
        """The upload received, admitted by its cost, decoded, prepared and segmented:
        ``(the upload's bytes, label map (H, W))``."""
        options, worker = self.options, self.worker
        if worker.waiting >= options.max_queue:  # before reading the upload
            raise ServerBusyError(f"busy: {worker.waiting} requests are already waiting; retry later")
        if self.uploads.locked():
            raise ServerBusyError(f"busy: {options.max_uploads} uploads are being received; retry later")
        async with self.uploads:
            data = await read_upload(request, options.max_upload_bytes, options.upload_timeout_s, options.max_parts)
        size = await run_in_threadpool(_checked_size, data, self.max_pixels)
        work = predictor_work(size, self.predictor)
        seconds = self.admit(work)
        try:
            async with self.decoding:  # a few decoded images in memory at a time, not one per thread
                prepared = await run_in_threadpool(_prepare, data, self.predictor, self.max_pixels)
            future = worker.submit(prepared, work, seconds, self.clock() + options.timeout_s)
            del prepared  # the worker holds the network inputs; the decoded image is gone
            return data, await self.result_within(request, future, options.timeout_s)
        finally:
            self.queued_pixels -= work.pixels

    def admit(self, work: Work) -> float:
        """Take ``work`` into the queued-pixel budget, or refuse it: 413 when it alone could not
        finish within the timeout, 503 when the budget or the backlog has no room for it now.
        Returns its predicted seconds."""
        options, seconds = self.options, self.cost.seconds(work)
        if seconds > options.timeout_s:
            raise ImageTooLargeError(
                f"the image would take about {seconds:.0f} s, above this server's timeout of {options.timeout_s:g} s: "
                "send a smaller image (or start the server with a longer --timeout)"
            )
        if self.queued_pixels and self.queued_pixels + work.pixels > options.max_queued_pixels:
            raise ServerBusyError(f"busy: {self.queued_pixels / 1e6:.0f} megapixels are already queued; retry later")
        backlog = self.worker.backlog()
        if backlog and backlog + seconds > options.timeout_s:
            raise ServerBusyError(f"busy: the queue needs about {backlog:.0f} s; retry later")
        self.queued_pixels += work.pixels
        return seconds

    async def result_within(self, request: Request, future: Future, timeout_s: float) -> np.ndarray:
        """What the worker's ``future`` resolves to (the label map) or raises; a
        :class:`~lrformer.errors.DeadlineError` once ``self.sleep(timeout_s)`` returns first, a
        :class:`~lrformer.errors.ClientGoneError` once the client disconnects. Then a job still
        waiting in the queue is cancelled (the worker skips it); a running one finishes unobserved."""
        answer = asyncio.wrap_future(future)
        deadline = asyncio.ensure_future(self.sleep(timeout_s))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait((answer, deadline, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            deadline.cancel()
            gone.cancel()
            if not answer.done():
                answer.cancel()
                future.cancel()  # now, not when the loop gets round to the wrapper's callback
        if answer.cancelled():
            if gone.done() and not gone.cancelled():
                raise ClientGoneError("the client disconnected while its image waited or ran")
            raise DeadlineError(f"the prediction waited and ran longer than {timeout_s:g} s")
        return answer.result()

    def json_answer(self, label: np.ndarray, started: float) -> Response:
        """``format=json``: the model, the size, the time since ``started`` and the class fractions."""
        return JSONResponse({
            "model": self.description.get("name"), "size": list(label.shape),
            "time_ms": round((time.perf_counter() - started) * 1e3, 1), "classes": class_table(label, self.names),
        })  # fmt: skip

    async def overlay_answer(self, data: bytes, label: np.ndarray) -> Response:
        """``format=overlay``: the label colours over the uploaded image, with a legend, as PNG. The
        image is decoded again here (a queued request holds its upload, not its pixels)."""
        async with self.decoding:
            picture = await run_in_threadpool(self._overlay, data, label)
        return Response(picture, media_type="image/png")

    def _overlay(self, data: bytes, label: np.ndarray) -> bytes:
        bgr = decode_image(data, "the upload", self.max_pixels)
        return encode_image(overlay(bgr, label, self.palette, 0.5, self.names, True, True), ".png")

    async def png_answer(self, label: np.ndarray) -> Response:
        """``format=png``: the label map as a palette PNG; the classes present in ``X-Classes``."""
        table = json.dumps(class_table(label, self.names), separators=(",", ":"))
        return Response(
            await run_in_threadpool(encode_label_png, label, self.palette), media_type="image/png",
            headers={"X-Classes": table},  # what the page's legend shows
        )  # fmt: skip


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (the body has been read: what is left to receive
    is the ``http.disconnect`` message)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _checked_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """``(H, W)`` from the image's header, refusing (as :func:`decode_image` does) an image whose
    size cannot be read or is above ``max_pixels``, before any pixel is decoded."""
    size = header_size(data)
    if size is None or size[0] * size[1] > max_pixels:
        decode_image(data, "the upload", max_pixels)  # raises the error that names the problem
    return size[1], size[0]


def _prepare(data: bytes, predictor: Predictor, max_pixels: int):
    """Decode and build the network inputs."""
    bgr = decode_image(data, "the upload", max_pixels)
    return prepare(bgr, predictor.config, input_format="bgr")
