"""``lrformer serve``: every endpoint and format through an in-process client, bad uploads answered
with a 4xx naming the problem (the server stays healthy), a bounded queue (503 + Retry-After),
micro-batching, per-request timeouts and a shutdown that finishes the queued requests."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from lrformer import Predictor  # noqa: E402
from lrformer.cli.main import build_parser  # noqa: E402
from lrformer.image.visualize import class_table  # noqa: E402
from lrformer.inference import prepare  # noqa: E402
from lrformer.serving.app import ServeOptions, create_app, error_response  # noqa: E402
from lrformer.serving.worker import Busy, Closed, InferenceWorker  # noqa: E402

from .helpers import SLOW_MACHINE_TIMEOUT, synthetic_photo, wait_until  # noqa: E402
from .test_decompression_bomb import png_bomb  # noqa: E402

BASE = "http://127.0.0.1:8000"  # a Host the server allows (Starlette's TestClient says "testserver")
NAMES = ["sky", "tree", "water", "sand", "road"]
PALETTE = [[250, 10, 10], [10, 250, 10], [10, 10, 250], [240, 200, 20], [90, 20, 160]]


def _png(image_bgr: np.ndarray) -> bytes:
    return cv2.imencode(".png", image_bgr)[1].tobytes()


@pytest.fixture(scope="module")
def predictor(tiny_cases, tiny_checkpoint):
    import lrformer

    model = lrformer.create_model("lrformer_t", **tiny_cases["config"])
    lrformer.load_checkpoint(model, tiny_checkpoint)
    return Predictor(model.eval())


@pytest.fixture(scope="module")
def description(predictor):
    return {"name": "tiny", "num_classes": 5, "classes": NAMES, "palette": PALETTE, "test": {"scale": [2048, 512]}}


@pytest.fixture(scope="module")
def client(predictor, description):
    with TestClient(create_app(predictor, description, ServeOptions(max_upload_bytes=2 << 20)), base_url=BASE) as client:
        yield client


def test_page_health_and_model(client, description):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    for name in ("/", "/static/app.js", "/static/style.css"):  # offline: nothing fetched from elsewhere
        text = client.get(name).text
        assert "http:" not in text and "https:" not in text and 'src="//' not in text and 'href="//' not in text
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/model").json() == description


def test_predict_formats_equal_the_predictor(client, predictor):
    image = synthetic_photo(90, 120, seed=3)
    expected = predictor.predict([image[:, :, ::-1].copy()])[0]  # RGB array, as the predictor takes by default
    raw = client.post("/predict", content=_png(image))
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    label = Image.open(io.BytesIO(raw.content))
    assert label.mode == "P" and label.getpalette()[:6] == [250, 10, 10, 10, 250, 10]
    np.testing.assert_array_equal(np.asarray(label), expected)
    assert json.loads(raw.headers["x-classes"]) == class_table(expected, NAMES)
    form = client.post("/predict?format=json", files={"image": ("photo.png", _png(image), "image/png")})
    summary = form.json()
    assert summary["size"] == [90, 120] and summary["model"] == "tiny" and summary["time_ms"] > 0
    assert summary["classes"] == class_table(expected, NAMES)
    picture = client.post("/predict?format=overlay", content=_png(image))
    assert cv2.imdecode(np.frombuffer(picture.content, np.uint8), cv2.IMREAD_COLOR).shape == (90, 120, 3)


def test_bad_uploads_are_4xx_and_the_server_stays_healthy(client, tmp_path):
    png = _png(synthetic_photo(64, 64))
    png_bomb(tmp_path / "bomb.png")
    cases = {
        "empty": (b"", 400, "the upload is empty"),
        "truncated": (png[: len(png) // 2], 415, "not an image OpenCV can decode"),
        "text": (b"hello, this is not an image", 415, "not an image"),
        "bomb": ((tmp_path / "bomb.png").read_bytes(), 413, "20000x20000 is 400 megapixels"),
        "oversize": (b"\x00" * (3 << 20), 413, "above the limit of 2 MB"),
        "chunked oversize": ((b"\x00" * (1 << 20) for _ in range(3)), 413, "above the limit of 2 MB"),
        "unsized (HDR)": (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 40000 +X 30000\n" + bytes(64), 415,
                          "size can be read from its header"),
    }  # fmt: skip
    for name, (body, status, message) in cases.items():
        response = client.post("/predict", content=body)
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["error"], name
        assert response.headers["connection"] == "close", name  # the rest of a refused body is not read
    big_file = client.post("/predict", files={"image": ("big.png", b"\x00" * (3 << 20), "image/png")})
    assert big_file.status_code == 413 and "above the limit" in big_file.json()["error"]
    assert client.post("/predict?format=gif", content=png).status_code == 400
    assert client.post("/predict", files={"other": ("a.png", png, "image/png")}).status_code == 400
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/predict", content=png).status_code == 200


def test_statuses_come_from_the_error_types(predictor, description):
    from lrformer import errors

    expected = {
        errors.InputError("x"): 400, errors.ConfigError("x"): 400, errors.ImageReadError("x"): 415,
        errors.ImageTooLargeError("x"): 413, errors.UploadTooLargeError("x"): 413, errors.ServerBusyError("x"): 503,
        errors.ServerClosingError("x"): 503, errors.DeadlineError("x"): 504, MemoryError("x"): 500, KeyError("x"): 500,
    }  # fmt: skip
    options = ServeOptions(retry_after_s=7)
    for exc, status in expected.items():
        answer = error_response(exc, options)
        assert answer.status_code == status, exc
        assert (answer.headers.get("retry-after") == "7") == (status == 503), exc
    assert Busy is errors.ServerBusyError and Closed is errors.ServerClosingError  # the former names
    png = _png(synthetic_photo(64, 64))  # 4096 pixels
    with TestClient(create_app(predictor, description, ServeOptions(max_pixels=4000)), base_url=BASE) as client:
        refused = client.post("/predict", content=png)
        assert refused.status_code == 413 and "64x64 is 0 megapixels, above the limit of 0" in refused.json()["error"]
    with TestClient(create_app(predictor, description, ServeOptions(max_pixels=4096)), base_url=BASE) as client:
        assert client.post("/predict", content=png).status_code == 200


class _Slow:
    """A predictor stand-in that blocks until released (``started`` is set when it is entered;
    ``calls`` counts the batches it ran)."""

    def __init__(self, predictor, error=None):
        self.inner, self.config, self.num_classes = predictor, predictor.config, predictor.num_classes
        self.release, self.started, self.error, self.calls = threading.Event(), threading.Event(), error, 0

    def predict_prepared(self, prepared, batch_size):
        self.calls += 1
        self.started.set()
        if not self.release.wait(SLOW_MACHINE_TIMEOUT):
            raise TimeoutError("the test never released the predictor")
        if self.error:
            raise self.error
        return self.inner.predict_prepared(prepared, batch_size)


class _Clock:
    """The time the server's deadlines pass on (``create_app(sleep=clock.sleep)``), moved on only by
    the test (:meth:`advance`): whether a request is past its deadline does not depend on the speed
    of the machine."""

    def __init__(self):
        self.now = 0.0

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        """The worker's clock (``create_app(clock=clock.time)``)."""
        return self.now

    def sleep(self, seconds: float):
        """An awaitable that returns once :meth:`advance` has moved the clock ``seconds`` past now."""
        end = self.now + seconds  # now, when the server sets the deadline, not when it first awaits it

        async def until_the_end():
            while self.now < end:
                await asyncio.sleep(0.005)

        return until_the_end()


def test_micro_batching_and_a_shutdown_that_finishes_the_queue(predictor):
    slow = _Slow(predictor)
    worker = InferenceWorker(slow, max_queue=8, max_batch=4)
    images = [synthetic_photo(64, 96, seed=i) for i in range(5)]
    futures = [worker.submit(prepare(images[0], predictor.config, input_format="bgr"))]
    assert slow.started.wait(SLOW_MACHINE_TIMEOUT)  # the worker runs the first job; the next four wait together
    futures += [worker.submit(prepare(image, predictor.config, input_format="bgr")) for image in images[1:]]
    slow.release.set()
    worker.close(timeout=SLOW_MACHINE_TIMEOUT)
    assert not worker._thread.is_alive()
    assert list(worker.batches) == [1, 4]  # the four waiting requests of equal shape ran as one batch
    for future, image in zip(futures, images, strict=True):
        np.testing.assert_array_equal(future.result(0), predictor.predict([image[:, :, ::-1].copy()])[0])


def test_a_full_queue_answers_503_with_retry_after_and_slow_requests_504(predictor, description):
    """The worker blocks until the test releases it and the deadlines pass when the test moves the
    clock on, so each request meets the state it is meant to (running, queued, refused)."""
    slow, clock = _Slow(predictor), _Clock()
    options = ServeOptions(max_queue=1, max_batch=1, timeout_s=5)
    app = create_app(slow, description, options, sleep=clock.sleep, clock=clock.time, calibrate=False)
    png = _png(synthetic_photo(64, 64))
    with TestClient(app, base_url=BASE) as client, ThreadPoolExecutor(2) as pool:
        try:

            def post():
                return client.post("/predict", content=png)

            def waiting():
                return client.get("/health").json()["waiting"]

            running = pool.submit(post)
            assert slow.started.wait(SLOW_MACHINE_TIMEOUT)  # the worker runs it, blocked
            queued = pool.submit(post)
            wait_until(lambda: waiting() == 1, "the second request waits in the queue")
            busy = post()
            assert busy.status_code == 503 and busy.headers["retry-after"] == "2" and "busy" in busy.json()["error"]
            clock.advance(5)  # both deadlines pass
            assert running.result(SLOW_MACHINE_TIMEOUT).status_code == 504  # running, blocked
            assert queued.result(SLOW_MACHINE_TIMEOUT).status_code == 504  # waiting in the queue
        finally:
            slow.release.set()
        wait_until(lambda: waiting() == 0, "the worker finishes the blocked job and skips the timed-out one")
        assert post().status_code == 200
        assert slow.calls == 2  # the request that timed out in the queue never ran


def test_worker_refuses_beyond_its_queue_and_survives_errors(predictor, description):
    slow = _Slow(predictor)
    worker = InferenceWorker(slow, max_queue=1, max_batch=1)
    prepared = prepare(synthetic_photo(40, 40), predictor.config)
    worker.submit(prepared)
    assert slow.started.wait(SLOW_MACHINE_TIMEOUT)
    worker.submit(prepared)
    with pytest.raises(Busy):
        worker.submit(prepared)
    worker.close(timeout=0)  # the queue is full: closing still returns, and
    with pytest.raises(Closed):
        worker.submit(prepared)
    slow.release.set()
    worker.close(timeout=SLOW_MACHINE_TIMEOUT)  # a second close is harmless
    assert not worker._thread.is_alive()
    failing = _Slow(predictor, error=MemoryError("out of memory"))
    failing.release.set()
    with TestClient(create_app(failing, description, calibrate=False), base_url=BASE) as client:
        answer = client.post("/predict", content=_png(synthetic_photo(40, 40)))
        assert answer.status_code == 500 and "inference failed: MemoryError: out of memory" in answer.json()["error"]
        assert client.get("/health").json()["status"] == "ok"


def test_serve_listens_on_this_machine_only_by_default():
    args = build_parser().parse_args(["serve", "--weights", "w.pth"])
    assert args.host == "127.0.0.1" and args.port == 8000


def test_served_model_info_names_every_class_in_its_colour(predictor):
    from lrformer.cli.outputs import Legend
    from lrformer.cli.serve import served_model_info

    palette = np.array(PALETTE + [[1, 2, 3]], dtype=np.uint8)  # one colour more than classes: not served
    info = served_model_info(predictor, Legend(palette, None))
    assert info["name"] == "lrformer_t" and info["num_classes"] == 5 and info["export"] is None  # a PyTorch model
    assert info["classes"] == ["class 0", "class 1", "class 2", "class 3", "class 4"]  # unnamed classes
    assert info["palette"] == PALETTE and all(type(v) is int for color in info["palette"] for v in color)
    test = json.loads(json.dumps(info))["test"]  # what GET /model sends
    assert test["scale"] == list(predictor.config.scale) and test["mode"] == predictor.config.mode
    named = served_model_info(predictor, Legend(palette, NAMES + ["unused"]))
    assert named["classes"] == NAMES


def test_loopback_load_every_answer_correct(tiny_model_file):
    """A real server (uvicorn in a subprocess) under 64 requests from 8 clients, with a queue short
    enough to answer some 503s: each answer is the label map of its own image."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from serve_load import free_port, run_load, start_server

    from lrformer import create_model

    images = [synthetic_photo(64 + 16 * i, 96, seed=i) for i in range(4)]
    reference = Predictor(create_model(tiny_model_file), input_format="bgr")
    expected = [reference(image) for image in images]
    port = free_port()
    options = ["--device", "cpu", "--max-batch", "4", "--queue", "2", "--timeout", str(SLOW_MACHINE_TIMEOUT)]
    server = start_server(["--model", str(tiny_model_file), *options], port, timeout=SLOW_MACHINE_TIMEOUT)
    try:
        figures = run_load(f"http://127.0.0.1:{port}/predict", [_png(i) for i in images], expected, 64, 8)
    finally:
        server.terminate()
        server.wait(SLOW_MACHINE_TIMEOUT)  # uvicorn stops gracefully, then re-raises SIGTERM
    assert figures["failures"] == [] and figures["requests"] == 64
    assert figures["busy_503"] > 0  # the bound held: 8 clients, room for 2 waiting
