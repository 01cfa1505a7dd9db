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
import time
from dataclasses import dataclass
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
    """Limits of the server: upload size, queue, micro-batch and per-request time."""

    max_upload_bytes: int = 32 << 20
    max_queue: int = 32
    max_batch: int = 8
    timeout_s: float = 60.0
    retry_after_s: int = 2


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _read_upload(request: Request, limit: int) -> bytes | JSONResponse:
    """The image bytes of a raw body or of a multipart form's ``image`` field, at most ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return _error(413, f"the upload is {int(declared) / 2**20:.1f} MB, above the limit of {limit / 2**20:.0f} MB")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10, max_part_size=limit)
        except Exception as exc:  # a malformed or oversize form
            return _error(400, f"cannot read the multipart form ({exc}); send the image as the field 'image'")
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return _error(400, "the multipart form has no file field 'image'")
        data = await upload.read(limit + 1)
    else:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return _error(413, f"the upload is above the limit of {limit / 2**20:.0f} MB")
            chunks.append(chunk)
        data = b"".join(chunks)
    if len(data) > limit:
        return _error(413, f"the upload is above the limit of {limit / 2**20:.0f} MB")
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
        data = await _read_upload(request, options.max_upload_bytes)
        if isinstance(data, Response):
            return data
        try:
            prepared = await run_in_threadpool(_prepare, data, predictor, kind == "overlay")
        except ImageReadError as exc:
            return _error(415 if "not an image" in str(exc) else 413, str(exc))
        try:
            future = state["worker"].submit(prepared)
        except Busy as exc:
            return _error(503, f"busy: {exc}; retry later", {"Retry-After": str(options.retry_after_s)})
        except Closed as exc:
            return _error(503, str(exc), {"Retry-After": str(options.retry_after_s)})
        try:
            label = await asyncio.wait_for(asyncio.wrap_future(future), options.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            return _error(504, f"the prediction took longer than {options.timeout_s:g} s")
        if kind == "json":
            return JSONResponse({
                "model": description.get("name"), "size": list(label.shape),
                "time_ms": round((time.perf_counter() - started) * 1e3, 1), "classes": class_table(label, names),
            })  # fmt: skip
        if kind == "overlay":
            picture = await run_in_threadpool(overlay, prepared.bgr, label, palette, 0.5, names, True, True)
            return Response(await run_in_threadpool(encode_image, picture, ".png"), media_type="image/png")
        return Response(await run_in_threadpool(encode_label_png, label, palette), media_type="image/png")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state["worker"] = InferenceWorker(predictor, options.max_queue, options.max_batch)
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
