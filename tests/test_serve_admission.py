"""``lrformer serve`` under hostile or unlucky requests: forms parsed off the event loop with a part
cap, admission by cost (pixels, predicted seconds, the queued-pixel budget), queued requests that
hold no decoded image, deadline-aware micro-batching, work dropped for clients that hung up or
whose deadline passed, slow uploads timed out, disconnects answered with one quiet log line."""

from __future__ import annotations

import asyncio
import logging
import threading

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("python_multipart")
from starlette.requests import Request  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from lrformer import Predictor, errors  # noqa: E402
from lrformer.image.pipeline import InferenceConfig  # noqa: E402
from lrformer.inference import prepare  # noqa: E402
from lrformer.inference.predictor import view_shapes  # noqa: E402
from lrformer.serving.admission import ATTENTION_WEIGHT, CostModel, Work, predictor_work, request_work  # noqa: E402
from lrformer.serving.app import ServeOptions, create_app  # noqa: E402
from lrformer.serving.uploads import FormImage, read_upload  # noqa: E402
from lrformer.serving.worker import InferenceWorker  # noqa: E402

from .helpers import SLOW_MACHINE_TIMEOUT, synthetic_photo, wait_until  # noqa: E402

BASE = "http://127.0.0.1:8000"
DESCRIPTION = {"name": "tiny", "classes": list("abcde"), "palette": [[i * 50, 0, 0] for i in range(5)]}


@pytest.fixture(scope="module")
def predictor(tiny_cases, tiny_checkpoint):
    import lrformer

    model = lrformer.create_model("lrformer_t", **tiny_cases["config"])
    lrformer.load_checkpoint(model, tiny_checkpoint)
    return Predictor(model.eval(), input_format="bgr")


def _png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def _form(*parts: tuple[str, bytes], boundary: str = "b0und") -> tuple[bytes, str]:
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="x"\r\n\r\n'.encode() + data + b"\r\n"
        for name, data in parts
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ------------------------------------------------------------------ forms
def test_a_form_streams_in_byte_by_byte_and_keeps_only_the_image():
    image = bytes(range(256)) * 40 + b"\r\n--b0un"  # binary data that looks like the start of a boundary
    body, content_type = _form(("note", b"hello"), ("image", image), ("other", b"x"))
    form = FormImage(content_type, limit=1 << 20, max_parts=8)
    for i in range(len(body)):
        form.write(body[i : i + 1])
    assert form.image() == image and form.parts == 3


def test_a_form_of_many_tiny_parts_is_refused_at_the_first_part_beyond_the_cap():
    body, content_type = _form(*[(f"f{i}", b"x") for i in range(80_000)])  # ~4.5 MB, as the attack
    form = FormImage(content_type, limit=1 << 20, max_parts=8)
    with pytest.raises(errors.InputError, match="more than 8 parts"):
        for start in range(0, len(body), 64 << 10):
            form.write(body[start : start + (64 << 10)])
    assert form.parts == 9  # parsing stopped there, not after 80,000 parts


@pytest.mark.parametrize(
    "content_type, body, message",
    [
        ("multipart/form-data", b"--x\r\n", "no boundary"),
        ("multipart/form-data; boundary=b0und", b"--b0und\r\n" + b"X-Long: " + b"a" * 5000 + b"\r\n\r\n", "malformed"),
        ("multipart/form-data; boundary=b0und", _form(("other", b"x"))[0], None),
    ],
)
def test_bad_forms_are_refused_in_one_line(content_type, body, message):
    if message is None:  # a well-formed form without the image
        form = FormImage(content_type, 1 << 20, 8)
        form.write(body)
        assert form.image() is None
        return
    with pytest.raises(errors.InputError, match=message):
        FormImage(content_type, 1 << 20, 8).write(body)


def test_the_image_part_is_capped_as_it_streams():
    body, content_type = _form(("image", b"\x00" * 5000))
    form = FormImage(content_type, limit=4000, max_parts=8)
    with pytest.raises(errors.UploadTooLargeError, match="above the limit"):
        form.write(body)


# ------------------------------------------------------------------ uploads
def _request(messages: list[dict], headers: dict[str, str] | None = None) -> Request:
    """A request whose body arrives as ``messages``; after them, ``receive`` never returns."""
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()  # a stalled client

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/predict", "headers": raw}, receive)


def test_an_upload_that_stalls_is_refused_408_after_the_upload_time():
    stalled = _request([{"type": "http.request", "body": b"\x89PNG", "more_body": True}])
    with pytest.raises(errors.UploadTimeoutError, match="did not arrive within 0.2 s") as caught:
        asyncio.run(read_upload(stalled, 1 << 20, timeout_s=0.2))
    assert caught.value.http_status == 408


def test_a_client_that_disconnects_mid_upload_is_client_gone_not_a_traceback():
    gone = _request([{"type": "http.request", "body": b"\x89PNG", "more_body": True}, {"type": "http.disconnect"}])
    with pytest.raises(errors.ClientGoneError):
        asyncio.run(read_upload(gone, 1 << 20, timeout_s=5))


# ------------------------------------------------------------------ cost
def test_request_work_by_hand():
    config = InferenceConfig()  # align, scale (2048, 512), divisor 32
    # 100×200: factor min(2048/200, 512/100) = 5.12 → 512×1024, already multiples of 32
    assert request_work((100, 200), config, 150) == Work(20_000, 512 * 1024, 150 * 20_000)
    tta = InferenceConfig(pipeline="pad", tta_ratios=(0.5, 1.0), flip=True)  # resized by ratio of the original
    # 0.5: 50×100 → padded 64×128, twice (flip); 1.0: 100×200 → 128×224, twice
    assert request_work((100, 200), tta, 10) == Work(20_000, 2 * (64 * 128 + 128 * 224), 4 * 10 * 20_000)
    slide = InferenceConfig(mode="slide", scale=(64, 64), crop=(32, 32), stride=(24, 24))
    # 64×64 (already there); mmseg's grid count (64 − 32 + 24 − 1) // 24 + 1 = 3 per axis:
    # windows 0..32, 24..56, 32..64 (the last pulled back inside): 3 × 3 windows of 32×32
    assert request_work((64, 64), slide, 3).network_pixels == 9 * 32 * 32
    square = request_work((100, 100), config, 1, attention=lambda h, w: 10**6 if h == w else 10**8)
    thin = request_work((10, 1000), config, 1, attention=lambda h, w: 10**6 if h == w else 10**8)
    assert square.network_pixels == 512 * 512 + int(ATTENTION_WEIGHT * 10**6)  # 100×100 → 512×512
    assert thin.network_pixels == 32 * 2048 + int(ATTENTION_WEIGHT * 10**8)  # 10×1000 → 20.48×2048 → 32×2048
    for shape in [(1, 1), (1, 20000), (9000, 40), (97, 33)]:  # the shapes prepare makes, without decoding
        image = np.zeros((*shape, 3), np.uint8)
        for c in (config, tta, slide):
            assert view_shapes(shape, c) == [tuple(v.image.shape[-2:]) for v in prepare(image, c).views]


def test_cost_model_corrections_are_bounded_and_calibration_solves_both_rates(monkeypatch):
    model = CostModel(network_s=1e-6, score_s=1e-8)
    work = Work(1000, 10_000, 100_000)  # 0.01 + 0.001 s
    assert model.seconds(work) == pytest.approx(0.011)
    model.observe(work, 1000.0)  # one stalled batch: at most 4× the prediction, a third of the way in log scale
    assert model.correction == pytest.approx(4 ** (1 / 3))
    small, large = Work(1, 100, 1000), Work(4, 100, 4000)
    timings = iter([(small, 100 * 2e-3 + 1000 * 1e-5), (large, 100 * 2e-3 + 4000 * 1e-5)])
    monkeypatch.setattr(CostModel, "_timed", staticmethod(lambda predictor, side: next(timings)))
    model.calibrate(None)
    assert (model.network_s, model.score_s, model.correction) == (pytest.approx(2e-3), pytest.approx(1e-5), 1.0)


def test_admission_by_cost_413_for_what_cannot_finish_503_beyond_the_pixel_budget(predictor):
    slow_model = CostModel(network_s=1.0)  # every image "takes" hours
    app = create_app(predictor, DESCRIPTION, ServeOptions(timeout_s=30), calibrate=False, cost=slow_model)
    with TestClient(app, base_url=BASE) as client:
        answer = client.post("/predict", content=_png(synthetic_photo(40, 40)))
        assert answer.status_code == 413 and "above this server's timeout of 30 s" in answer.json()["error"]
    blocked = _Blocking(predictor)
    options = ServeOptions(max_queued_pixels=3000)  # room for one 40×40 image, not two
    app = create_app(blocked, DESCRIPTION, options, calibrate=False)
    with TestClient(app, base_url=BASE) as client, _pool() as pool:
        try:
            first = pool.submit(client.post, "/predict", content=_png(synthetic_photo(40, 40)))
            assert blocked.started.wait(SLOW_MACHINE_TIMEOUT)
            busy = client.post("/predict", content=_png(synthetic_photo(40, 40)))
            assert busy.status_code == 503 and "megapixels are already queued" in busy.json()["error"]
            assert busy.headers["retry-after"] == "2"
        finally:
            blocked.release.set()
        assert first.result(SLOW_MACHINE_TIMEOUT).status_code == 200
        assert client.post("/predict", content=_png(synthetic_photo(40, 40))).status_code == 200  # budget given back


def test_a_queued_overlay_holds_network_inputs_not_the_decoded_image(predictor):
    blocked = _Blocking(predictor)
    app = create_app(blocked, DESCRIPTION, ServeOptions(max_batch=1), calibrate=False)
    image = synthetic_photo(300, 400, seed=2)
    with TestClient(app, base_url=BASE) as client, _pool() as pool:
        try:
            pool.submit(client.post, "/predict", content=_png(synthetic_photo(40, 40)))
            assert blocked.started.wait(SLOW_MACHINE_TIMEOUT)
            queued = pool.submit(client.post, "/predict?format=overlay", content=_png(image))
            worker = app.app.state.handlers.worker
            wait_until(lambda: worker.waiting == 1, "the overlay request waits in the queue")
            job = worker._jobs[0]
            assert job.prepared.bgr is None  # no 300×400×3 image held while queued
            assert job.work == predictor_work((300, 400), predictor)
        finally:
            blocked.release.set()
        picture = cv2.imdecode(np.frombuffer(queued.result(SLOW_MACHINE_TIMEOUT).content, np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape[:2] == (300, 400)  # drawn on the image decoded again after inference


# ------------------------------------------------------------------ the worker
class _Blocking:
    """A predictor stand-in that blocks its first batch until released and records every batch."""

    def __init__(self, predictor):
        self.inner, self.config, self.num_classes = predictor, predictor.config, predictor.num_classes
        self.network = predictor.network
        self.release, self.started, self.batches = threading.Event(), threading.Event(), []

    def predict_prepared(self, prepared, batch_size):
        self.batches.append(len(prepared))
        self.started.set()
        if not self.release.wait(SLOW_MACHINE_TIMEOUT):
            raise TimeoutError("the test never released the predictor")
        return self.inner.predict_prepared(prepared, batch_size)


def _pool():
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(4)


def test_deadline_aware_batches_skip_late_and_cancelled_work(predictor):
    now = [0.0]
    blocked = _Blocking(predictor)
    worker = InferenceWorker(blocked, max_queue=8, max_batch=8, clock=lambda: now[0])
    image = prepare(synthetic_photo(40, 40), predictor.config)
    first = worker.submit(image, seconds=1.0, deadline=100.0)
    assert blocked.started.wait(SLOW_MACHINE_TIMEOUT)  # running; the rest queue behind it
    late = worker.submit(image, seconds=5.0, deadline=12.0)  # cannot finish: the clock will be at 10
    gone = worker.submit(image, seconds=1.0, deadline=100.0)
    a = worker.submit(image, seconds=2.0, deadline=15.0)
    b = worker.submit(image, seconds=2.0, deadline=100.0)  # 10 + 2 + 2 = 14 ≤ 15: joins a's batch
    c = worker.submit(image, seconds=2.0, deadline=100.0)  # 16 > 15: would make a late, waits for the next batch
    gone.cancel()  # its client hung up
    assert worker.backlog() == pytest.approx(1.0 + 5.0 + 2.0 * 3)  # the running batch, then live jobs
    now[0] = 10.0
    blocked.release.set()
    worker.close(timeout=SLOW_MACHINE_TIMEOUT)
    assert blocked.batches == [1, 2, 1]  # first; a + b; c — never late, never gone
    with pytest.raises(errors.DeadlineError, match="could not finish"):
        late.result(0)
    assert all(f.result(0).shape == (40, 40) for f in (first, a, b, c)) and gone.cancelled()


def test_cheap_jobs_go_first_unless_an_expensive_one_would_be_late(predictor):
    now = [0.0]
    blocked = _Blocking(predictor)
    worker = InferenceWorker(blocked, max_queue=8, max_batch=1, clock=lambda: now[0])
    order = []  # each job its own prepared image (equal ones, as from a client's repeated uploads)

    def submit(name, seconds, deadline):
        future = worker.submit(prepare(synthetic_photo(40, 40), predictor.config), seconds=seconds, deadline=deadline)
        future.add_done_callback(lambda _: order.append(name))

    submit("running", 1.0, 100.0)
    assert blocked.started.wait(SLOW_MACHINE_TIMEOUT)
    submit("costly", 20.0, 100.0)  # plenty of slack: waits for the cheap ones
    submit("cheap 1", 1.0, 100.0)
    submit("cheap 2", 1.0, 100.0)
    submit("costly, tight", 20.0, 22.5)  # latest start 2.5: after the two cheap ones (clock 1 + 2 = 3) it is late
    now[0] = 1.0
    blocked.release.set()
    worker.close(timeout=SLOW_MACHINE_TIMEOUT)
    assert order == ["running", "costly, tight", "cheap 1", "cheap 2", "costly"]


def test_a_client_that_hangs_up_while_queued_is_dropped_before_inference(predictor, caplog):
    blocked = _Blocking(predictor)
    app = create_app(blocked, DESCRIPTION, ServeOptions(max_batch=1), calibrate=False)
    handlers = app.app.state.handlers
    with TestClient(app, base_url=BASE) as client, _pool() as pool:
        try:
            pool.submit(client.post, "/predict", content=_png(synthetic_photo(40, 40)))
            assert blocked.started.wait(SLOW_MACHINE_TIMEOUT)
            prepared = prepare(synthetic_photo(40, 40), predictor.config)
            future = handlers.worker.submit(prepared)
            hung_up = _request([{"type": "http.disconnect"}])
            with caplog.at_level(logging.INFO), pytest.raises(errors.ClientGoneError):
                asyncio.run(handlers.result_within(hung_up, future, 60))
            assert future.cancelled()
        finally:
            blocked.release.set()
        wait_until(lambda: handlers.worker.waiting == 0, "the worker reaches the cancelled job")
        assert client.post("/predict", content=_png(synthetic_photo(40, 40))).status_code == 200
    assert blocked.batches == [1, 1]  # the hung-up request never ran
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
