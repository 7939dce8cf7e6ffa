"""``deployzoo serve``: an engine (or checkpoint) behind HTTP, with dynamic batching across requests.

Routes (the contract clients and tests rely on):

- ``GET /v2/health/live`` (200 while the process runs), ``GET /v2/health/ready`` (503 until loaded and warmed up);
- ``POST /v1/recognize`` | ``/v1/classify`` | ``/v1/segment`` (the served model's task): multipart ``files`` fields
  or JSON ``{"images": ["<base64>", ...]}``; ``{"results": [...]}`` in request order, a bad image gets its own
  ``error`` and the others are answered;
- KServe v2 / Triton HTTP: ``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``,
  ``POST /v2/models/{name}/infer`` (JSON tensors, and Triton's binary tensor extension);
- ``GET /metrics`` (Prometheus, ``deployzoo_`` names with the meaning of Triton's); ``/docs``, ``/openapi.json``.

Batching: one queue per served model, drained by ``--instances`` engine instances. A batch closes at
``--max-batch-size`` images or when its oldest image has waited ``--max-queue-delay-ms``. Images are batched only
with images of the same padded input shape (CRNN: the same width bucket), so every result equals what the same
engine gives for the image alone.
"""


import asyncio
import base64
import binascii
import io
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from deployzoo.errors import DeployzooError
from deployzoo.specs import is_text

MiB = 1 << 20
#: requests with at most this many bytes of images are pre-processed on the event loop, larger ones in a thread
INLINE_PREPARE_BYTES = 32 * 1024


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 64
    max_queue_delay_ms: float = 4.0
    max_queue_size: int = 1024  # images waiting; beyond it 503 + Retry-After
    max_request_images: int = 256
    max_request_bytes: int = 16 * MiB
    max_image_pixels: int = 40_000_000
    threads: int | None = None  # intra-op threads per engine instance (None: the cores divided among the instances)
    instances: int = 2  # two overlap one batch's pre/post-processing with the other's engine run (bench/serve_load.py)
    decode: str = "words"  # CRNN: English word prior (default) or greedy
    upright: bool = False  # CRNN: read every crop upright only (default: tall crops are also read turned)


class QueueFull(DeployzooError):
    """The batching queue holds ``max_queue_size`` images already."""


# --------------------------------------------------------------------------------------------- tasks


class Task:
    """What the server needs of a predictor: decode one image, run one batch, turn a result into JSON."""

    route = ""
    mode = "RGB"  # how images are decoded for this task ('L' or 'RGB')

    def __init__(self, predictor) -> None:
        self.predictor = predictor

    def prepare(self, data: bytes, name: str, max_pixels: int = ServeConfig.max_image_pixels) -> tuple[Any, Any]:
        """Encoded image -> (batching key, payload). Raises DeployzooError for a bad image (also one with more than
        ``max_pixels`` pixels, refused from its header before decoding)."""
        from deployzoo.process.image import load_image

        return self.payload(load_image(data, self.mode, name=name, max_pixels=max_pixels), name)

    def payload(self, image: np.ndarray, name: str) -> tuple[Any, Any]:
        """Decoded uint8 image -> (batching key, payload)."""
        raise NotImplementedError

    def infer(self, payloads: list) -> list:
        raise NotImplementedError

    def to_json(self, result) -> dict:
        raise NotImplementedError

    def warm_up(self) -> None:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (96, 32), (255, 255, 255)).save(buf, format="PNG")
        self.infer([self.prepare(buf.getvalue(), "warm-up")[1]])


class TextTask(Task):
    route = "recognize"
    mode = "L"

    def payload(self, image, name):
        x = self.predictor.prepare_views(image, name)  # a tall crop: a tuple of views, batched apart
        return ("views" if isinstance(x, tuple) else self.predictor.cfg.padded_width(x.shape[-1])), x

    def infer(self, payloads):
        return self.predictor.infer(payloads)

    def to_json(self, r):
        return {"text": r.text, "confidence": round(float(r.confidence), 6)}


class ClassifyTask(Task):
    route = "classify"

    def payload(self, image, name):
        x = self.predictor.prepare(image, name)
        return x.shape, x

    def infer(self, payloads):
        return self.predictor.infer_batch(payloads)

    def to_json(self, r):
        from deployzoo.data.imagenet import IMAGENET_WNIDS

        return {"topk": [{"index": c, "wnid": IMAGENET_WNIDS[c] if c < len(IMAGENET_WNIDS) else "",
                          "score": round(p, 6)} for c, p in r.topk]}


class SegmentTask(Task):
    route = "segment"

    def payload(self, image, name):
        x = self.predictor.prepare(image)[0]
        return x.shape, (x, image.shape[:2])

    def infer(self, payloads):
        return self.predictor.predict_batch([p[0] for p in payloads], [p[1] for p in payloads])

    def to_json(self, labels):
        from PIL import Image

        from deployzoo.models.ocrnet import CITYSCAPES_CLASSES

        buf = io.BytesIO()
        Image.fromarray(labels).save(buf, format="PNG")
        ids, counts = np.unique(labels, return_counts=True)
        names = {int(i): (CITYSCAPES_CLASSES[i] if i < len(CITYSCAPES_CLASSES) else str(int(i))) for i in ids}
        return {"labels_png": base64.b64encode(buf.getvalue()).decode(), "shape": list(labels.shape),
                "class_pixels": {names[int(i)]: int(c) for i, c in zip(ids, counts)}}


TASKS = {"text": TextTask, "classification": ClassifyTask, "segmentation": SegmentTask}


# --------------------------------------------------------------------------------------------- batching


@dataclass
class _Item:
    key: Any
    payload: Any
    future: Future
    t_enqueue: float


class Batcher:
    """One queue, drained by one thread per engine instance (``infer_fns``). Inference never runs on the event loop."""

    def __init__(self, infer_fns: Sequence[Callable[[list], list]], max_batch: int, delay_s: float, max_queue: int,
                 metrics: "Metrics | None" = None, model: str = "") -> None:
        self.max_batch, self.delay_s, self.max_queue = max_batch, delay_s, max_queue
        self.metrics, self.model = metrics, model
        self._items: deque[_Item] = deque()
        self._cv = threading.Condition()
        self._stop = False
        self._threads = [threading.Thread(target=self._loop, args=(fn,), daemon=True, name=f"deployzoo-instance-{i}")
                         for i, fn in enumerate(infer_fns)]
        for t in self._threads:
            t.start()

    @property
    def pending(self) -> int:
        return len(self._items)

    def submit(self, items: list[tuple[Any, Any]]) -> list[Future]:
        """Queue (key, payload) pairs; all or nothing: raises QueueFull when they do not fit."""
        now = time.perf_counter()
        futs = [Future() for _ in items]
        with self._cv:
            if len(self._items) + len(items) > self.max_queue:
                raise QueueFull(f"queue full: {len(self._items)} images waiting (--max-queue-size {self.max_queue})")
            for (key, payload), f in zip(items, futs):
                self._items.append(_Item(key, payload, f, now))
            self._set_pending()
            self._cv.notify_all()
        return futs

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()

    def _set_pending(self) -> None:
        if self.metrics:
            self.metrics.pending.labels(self.model).set(len(self._items))

    def _take(self) -> list[_Item] | None:
        """The next batch: the oldest image's key, once ``max_batch`` images of it wait or its delay is over. The
        head is re-read after every wait, since another instance may have taken it meanwhile (so a batch is never
        empty, and never closes on the delay of an image already gone)."""
        with self._cv:
            while True:
                if self._stop:
                    return None
                if not self._items:
                    self._cv.wait()
                    continue
                head = self._items[0]
                same = sum(1 for it in self._items if it.key == head.key)
                left = head.t_enqueue + self.delay_s - time.perf_counter()
                if same >= self.max_batch or left <= 0:
                    break
                self._cv.wait(left)
            batch, rest = [], deque()
            for it in self._items:
                (batch if it.key == head.key and len(batch) < self.max_batch else rest).append(it)
            self._items = rest
            self._set_pending()
            if self._items:
                self._cv.notify_all()  # another instance may take the next batch now
            return batch

    def _loop(self, fn: Callable[[list], list]) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            t0 = time.perf_counter()
            try:
                results = fn([it.payload for it in batch])
            except Exception as e:  # one failing batch answers its own images with the error, the server stays up
                for it in batch:
                    it.future.set_exception(e)
                continue
            t1 = time.perf_counter()
            if self.metrics:
                m = self.metrics
                m.inference.labels(self.model).inc(len(batch))
                m.execution.labels(self.model).inc()
                m.compute.labels(self.model).observe(t1 - t0)
                for it in batch:
                    m.queue.labels(self.model).observe(t0 - it.t_enqueue)
            for it, r in zip(batch, results):
                it.future.set_result(r)


class Metrics:
    """Prometheus metrics with the meaning of Triton's (``nv_inference_*``), prefixed ``deployzoo_``."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        buckets = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
        self.success = Counter("deployzoo_request_success", "Requests answered 200", ["model"], registry=r)
        self.failure = Counter("deployzoo_request_failure", "Requests refused or failed", ["model", "reason"],
                               registry=r)
        self.image_errors = Counter("deployzoo_image_errors", "Images answered with an error", ["model"], registry=r)
        self.inference = Counter("deployzoo_inference_count", "Images inferred (Triton: inference count)", ["model"],
                                 registry=r)
        self.execution = Counter("deployzoo_execution_count", "Batches run (inference / execution = avg batch)",
                                 ["model"], registry=r)
        self.queue = Histogram("deployzoo_queue_duration_seconds", "Time an image waited in the queue", ["model"],
                               buckets=buckets, registry=r)
        self.compute = Histogram("deployzoo_compute_duration_seconds", "Time one batch took in the engine", ["model"],
                                 buckets=buckets, registry=r)
        self.request = Histogram("deployzoo_request_duration_seconds", "Whole request time", ["model"],
                                 buckets=buckets, registry=r)
        self.pending = Gauge("deployzoo_pending_requests", "Images waiting in the queue", ["model"], registry=r)


# --------------------------------------------------------------------------------------------- the served model


class Served:
    """The model behind the server: ``instances`` predictors (loaded in the background), its queue, its metadata."""

    def __init__(self, model: str, make_predictor: Callable[[], Any], cfg: ServeConfig, input_spec: dict,
                 source: str, platform: str, alphabet: str | None = None) -> None:
        from deployzoo.specs import get_spec

        self.model, self.cfg, self.input_spec, self.source, self.platform = model, cfg, input_spec, source, platform
        task = get_spec(model).task
        self.task_cls = TASKS[task]
        self.classes = {"text": len(alphabet or "") + 1, "classification": 1000, "segmentation": 19}[task]
        self.make_predictor = make_predictor
        self.tasks: list[Task] = []
        self.batcher: Batcher | None = None
        self.metrics = Metrics()
        self.ready = threading.Event()
        self.load_error: str | None = None
        self._runner_locks: list[threading.Lock] = []

    def load(self) -> None:
        """Build the instances, warm each up, start the queue; then ``ready`` is set."""
        try:
            self.tasks = [self.task_cls(self.make_predictor()) for _ in range(max(1, self.cfg.instances))]
            for t in self.tasks:
                t.warm_up()
            self._runner_locks = [threading.Lock() for _ in self.tasks]
            self.batcher = Batcher([t.infer for t in self.tasks], self.cfg.max_batch_size,
                                   self.cfg.max_queue_delay_ms / 1000, self.cfg.max_queue_size, self.metrics,
                                   self.model)
            self.ready.set()
        except Exception as e:  # reported by /v2/health/ready and the log; the process stays up
            self.load_error = f"{type(e).__name__}: {e}"
            raise

    @property
    def task(self) -> Task:
        return self.tasks[0] if self.tasks else self.task_cls(None)

    def run_tensor(self, x: np.ndarray) -> np.ndarray:
        """The raw model on one input tensor (KServe v2 infer), on the first free instance."""
        for lock, t in zip(self._runner_locks, self.tasks):
            if lock.acquire(blocking=False):
                try:
                    return np.asarray(t.predictor.runner(x))
                finally:
                    lock.release()
        with self._runner_locks[0]:
            return np.asarray(self.tasks[0].predictor.runner(x))

    # KServe v2 metadata: dims with -1 for every dynamic axis
    def tensor_meta(self) -> dict:
        def dims(shape):
            return [d if isinstance(d, int) else self.classes if d == "classes" else -1 for d in shape]

        spec = self.input_spec
        return {"name": self.model, "versions": ["1"], "platform": self.platform,
                "inputs": [{"name": spec["name"], "datatype": "FP32", "shape": dims(spec["shape"])}],
                "outputs": [{"name": spec["output"]["name"], "datatype": "FP32",
                             "shape": dims(spec["output"]["shape"])}]}


def served_from(target: str | None, checkpoint: str | None, cfg: ServeConfig, model: str | None = None,
                random_weights: bool = False) -> Served:
    """TARGET = an engine directory, a model name (with ``checkpoint``), or None for the shipped CRNN."""
    from pathlib import Path

    import deployzoo
    from deployzoo.specs import get_spec

    if target in (None, "crnn") and checkpoint is None and not random_weights:
        from deployzoo.engines import _has_torch
        from deployzoo.specs import shipped_engine

        if not _has_torch() and shipped_engine() is not None:
            target = str(shipped_engine())  # no torch: the shipped ONNX Runtime engine of the shipped weights
    if target and Path(target).is_dir():
        from deployzoo.engines.manifest import verify_engine

        manifest = verify_engine(target, expect_model=model)
        name = manifest["model"]
        if ((manifest.get("quantization") or {}).get("lstm") or {}).get("batch_invariant") is False:
            import warnings

            warnings.warn(f"engine {target}: dynamic int8 LSTMs scale each batch by its own range, so a word's text "
                          "can depend on the words batched with it; for serving, build with --compact-lstm "
                          "(batch-invariant) instead of --int8-lstm", stacklevel=2)
        kw = {"engine": target}
        spec = manifest["input"]
        source = f"engine {target} ({manifest['backend']}/{manifest['precision']})"
        alphabet = manifest.get("alphabet")
        platform = {"onnxruntime": "onnxruntime_onnx", "openvino": "openvino"}.get(manifest["backend"],
                                                                                 manifest["backend"])
    else:
        name = target or model or "crnn"
        get_spec(name)  # unknown names fail here, with the list of known ones
        from deployzoo.export import input_spec

        kw = {"checkpoint": checkpoint, "random_weights": random_weights} if random_weights else {
            "checkpoint": checkpoint}
        meta: dict = {}
        if is_text(name):
            from deployzoo.checkpoint import read_checkpoint

            meta = read_checkpoint(get_spec(name).resolve_checkpoint(checkpoint)).get("deployzoo") or {}
        spec = input_spec(name, meta=meta)
        alphabet = meta.get("alphabet")
        source = str(checkpoint or ("random weights" if random_weights else "shipped weights"))
        platform = "pytorch_libtorch"
    from deployzoo.host import usable_cores

    extra = {"threads": cfg.threads or max(1, usable_cores() // max(1, cfg.instances))}
    if get_spec(name).task != "segmentation":
        extra["batch_size"] = cfg.max_batch_size
    if get_spec(name).task == "text":
        from deployzoo.process.crnn import tall_threshold

        extra["decode"], extra["tall"] = cfg.decode, tall_threshold(cfg.upright)
        if not alphabet:
            from deployzoo.process.text import ALPHABET

            alphabet = ALPHABET
    return Served(name, lambda: deployzoo.load(name, **kw, **extra), cfg, spec, source, platform, alphabet)


# --------------------------------------------------------------------------------------------- HTTP


class HttpError(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers or {}


def _multipart_files(body: bytes, content_type: str, max_files: int) -> list[tuple[str, bytes | None, str | None]]:
    """multipart/form-data body -> (name, bytes, error) per ``files`` part, in order; other fields are ignored.

    Parsed in memory with python-multipart's parser (the body is already read and size-checked), not with
    Starlette's ``request.form()``, which spools every file to a temporary file object (profiled under
    ``bench/serve_load.py``: a fifth of the event loop's time at 32 one-image clients).
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HttpError(422, "malformed multipart body (no boundary in the content type)")
    parts: list[list] = []  # [content-disposition, data] per part
    header = [b"", b""]

    def on_part_begin() -> None:
        parts.append([b"", bytearray()])

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        if header[0].lower() == b"content-disposition":
            parts[-1][0] = header[1]
        header[0] = header[1] = b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1] += data[start:end]

    callbacks = {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                 "on_header_value": on_header_value, "on_header_end": on_header_end, "on_part_data": on_part_data}
    try:
        parser = MultipartParser(boundary, callbacks)
        parser.write(body)
        parser.finalize()
    except FormParserError as e:
        raise HttpError(422, f"malformed multipart body ({e})") from None
    out: list[tuple[str, bytes | None, str | None]] = []
    for disposition, data in parts:
        _, opts = parse_options_header(disposition)
        if opts.get(b"name") != b"files":
            continue
        i = len(out)
        if len(out) >= max_files:
            raise HttpError(413, f"more than --max-request-images {max_files} images")
        if b"filename" not in opts:
            out.append((f"files[{i}]", None, "a 'files' field that is text, not a file"))
        else:
            out.append((opts[b"filename"].decode("utf-8", "replace") or f"files[{i}]", bytes(data), None))
    if not out:
        raise HttpError(422, "multipart body has no 'files' field")
    return out


def create_app(served: Served, load_in_background: bool = True):
    """The FastAPI application around ``served`` (loaded in a background thread unless told otherwise)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    cfg = served.cfg
    m = served.metrics

    @asynccontextmanager
    async def lifespan(app):
        if load_in_background:
            threading.Thread(target=_load_quietly, args=(served,), daemon=True).start()
        else:
            served.load()
        yield
        if served.batcher:
            served.batcher.close()

    app = FastAPI(title="deployzoo", version=_version(), lifespan=lifespan,
                  description=f"{served.model} from {served.source}: dynamic batching, KServe v2 routes, metrics")

    @app.exception_handler(HttpError)
    async def _http_error(request, exc: HttpError):
        m.failure.labels(served.model, str(exc.status)).inc()
        return JSONResponse({"error": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.get("/v2/health/live")
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready():
        if served.ready.is_set():
            return {"ready": True}
        return JSONResponse({"ready": False, "error": served.load_error}, status_code=503)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)

    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_request_bytes:
            raise HttpError(413, f"request body of {int(length)} bytes is over --max-request-bytes "
                                 f"{cfg.max_request_bytes}")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > cfg.max_request_bytes:
                raise HttpError(413, f"request body is over --max-request-bytes {cfg.max_request_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def images_of(request: Request) -> list[tuple[str, bytes | None, str | None]]:
        """(name, bytes, error) per image, in request order."""
        ctype = request.headers.get("content-type", "").lower()
        body = await read_body(request)
        if ctype.startswith("multipart/form-data"):
            return _multipart_files(body, request.headers.get("content-type", ""), cfg.max_request_images)
        if ctype.startswith("application/json"):
            try:
                doc = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise HttpError(422, f"body is not valid JSON ({e})") from None
            imgs = doc.get("images") if isinstance(doc, dict) else None
            if not isinstance(imgs, list) or not imgs:
                raise HttpError(422, 'JSON body needs {"images": ["<base64>", ...]} with at least one image')
            names = doc.get("names") if isinstance(doc.get("names"), list) else []
            out = []
            for i, s in enumerate(imgs):
                name = str(names[i]) if i < len(names) else f"images[{i}]"
                if not isinstance(s, str):
                    out.append((name, None, "not a base64 string"))
                    continue
                try:
                    out.append((name, base64.b64decode(s, validate=True), None))
                except (binascii.Error, ValueError) as e:
                    out.append((name, None, f"invalid base64 ({e})"))
            return out
        raise HttpError(415, f"content type {ctype or '(none)'!r}: send multipart/form-data with 'files' fields or "
                             'application/json {"images": [...]}')

    def prepare_all(items):
        out = []
        for name, data, err in items:
            if err is None and not data:
                err = f"image {name}: empty (0 bytes)"
            if err is None:
                try:
                    out.append((name, served.task.prepare(data, name, cfg.max_image_pixels), None))
                    continue
                except DeployzooError as e:
                    err = str(e)
            out.append((name, None, err))
        return out

    async def predict(request: Request):
        t0 = time.perf_counter()
        if not served.ready.is_set():
            raise HttpError(503, "model is loading", {"Retry-After": "1"})
        items = await images_of(request)
        if len(items) > cfg.max_request_images:
            raise HttpError(413, f"{len(items)} images: more than --max-request-images {cfg.max_request_images}")
        if sum(len(d or b"") for _, d, _ in items) <= INLINE_PREPARE_BYTES:
            prepared = prepare_all(items)  # a small request: no thread hop (a word crop decodes in well under 1 ms)
        else:
            prepared = await asyncio.get_running_loop().run_in_executor(None, prepare_all, items)
        good = [(i, p) for i, (_, p, _) in enumerate(prepared) if p is not None]
        try:
            futs = served.batcher.submit([p for _, p in good]) if good else []
        except QueueFull as e:
            raise HttpError(503, str(e), {"Retry-After": "1"}) from None
        results: list[dict] = [{"name": n, "error": err} for n, _, err in prepared]
        outs = await asyncio.gather(*(asyncio.wrap_future(f) for f in futs), return_exceptions=True)
        for (i, _), r in zip(good, outs):
            if isinstance(r, BaseException):
                results[i]["error"] = f"inference failed ({type(r).__name__}: {r})"
            else:
                results[i].update(served.task.to_json(r))
        for r in results:
            if r["error"] is not None:
                m.image_errors.labels(served.model).inc()
        m.success.labels(served.model).inc()
        m.request.labels(served.model).observe(time.perf_counter() - t0)
        return JSONResponse({"model": served.model, "results": results})  # already plain JSON types

    route = f"/v1/{served.task_cls.route}"
    app.post(route, summary=f"{served.task_cls.route}: multipart 'files' or JSON base64 'images'")(predict)

    def known(name: str) -> None:
        if name != served.model:
            raise HttpError(404, f"unknown model {name!r}; this server serves {served.model!r}")

    @app.get("/v2/models/{name}")
    async def model_meta(name: str):
        known(name)
        return served.tensor_meta()

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str):
        known(name)
        if not served.ready.is_set():
            raise HttpError(503, "model is loading", {"Retry-After": "1"})
        return {"name": name, "ready": True}

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_meta_v(name: str, version: str):
        return await model_meta(name)

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request):
        known(name)
        if not served.ready.is_set():
            raise HttpError(503, "model is loading", {"Retry-After": "1"})
        body = await read_body(request)
        header_len = request.headers.get("inference-header-content-length")
        doc, x, binary_out, outputs = _parse_v2(body, header_len, served)
        try:
            y = await asyncio.get_running_loop().run_in_executor(None, served.run_tensor, x)
        except Exception as e:
            raise HttpError(400, f"inference failed on input {list(x.shape)}: {e}") from None
        m.inference.labels(served.model).inc(int(x.shape[0]) if x.ndim else 1)
        m.execution.labels(served.model).inc()
        m.success.labels(served.model).inc()
        out_name = served.input_spec["output"]["name"]
        if outputs and out_name not in outputs:
            raise HttpError(400, f"unknown output {sorted(outputs)}; the model's output is {out_name!r}")
        y = np.ascontiguousarray(y, dtype=np.float32)
        head = {"model_name": served.model, "model_version": "1", "id": doc.get("id", "")}
        if binary_out:
            raw = y.tobytes()
            head["outputs"] = [{"name": out_name, "datatype": "FP32", "shape": list(y.shape),
                                "parameters": {"binary_data_size": len(raw)}}]
            js = json.dumps(head).encode()
            return Response(js + raw, media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(js))})
        head["outputs"] = [{"name": out_name, "datatype": "FP32", "shape": list(y.shape),
                            "data": y.ravel().tolist()}]
        return head

    return app


def _parse_v2(body: bytes, header_len: str | None, served: Served):
    """KServe v2 infer request (JSON, or JSON + binary tensors) -> (doc, input array, binary output?, outputs)."""
    try:
        n = int(header_len) if header_len else len(body)
        doc = json.loads(body[:n])
    except (ValueError, UnicodeDecodeError) as e:
        raise HttpError(400, f"infer request is not KServe v2 JSON ({e})") from None
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    want = served.input_spec["name"]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise HttpError(400, f"infer request needs exactly one input tensor {want!r}")
    t = inputs[0]
    if t.get("name") != want:
        raise HttpError(400, f"unknown input {t.get('name')!r}; the model's input is {want!r}")
    if t.get("datatype") != "FP32":
        raise HttpError(400, f"input {want!r}: datatype {t.get('datatype')!r}, expected 'FP32'")
    shape = t.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
        raise HttpError(400, f"input {want!r}: shape {shape!r} is not a list of positive ints")
    expect = served.input_spec["shape"]
    if len(shape) != len(expect) or any(isinstance(e, int) and e != d for e, d in zip(expect, shape)):
        raise HttpError(400, f"input {want!r}: shape {shape} does not fit the model's {expect}")
    count = int(np.prod(shape))
    size = (t.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        raw = body[n:n + int(size)]
        if len(raw) != count * 4 or int(size) != count * 4:
            raise HttpError(400, f"input {want!r}: {len(raw)} binary bytes for shape {shape} (expected {count * 4})")
        x = np.frombuffer(raw, dtype="<f4").reshape(shape)
    else:
        try:
            x = np.asarray(t.get("data"), dtype=np.float32).reshape(shape)
        except (ValueError, TypeError) as e:
            raise HttpError(400, f"input {want!r}: data does not fill shape {shape} ({e})") from None
    req_out = doc.get("outputs") or []
    outputs = {o.get("name") for o in req_out if isinstance(o, dict)}
    binary = any((o.get("parameters") or {}).get("binary_data") for o in req_out if isinstance(o, dict)) or (
        (doc.get("parameters") or {}).get("binary_data_output", False))
    return doc, np.ascontiguousarray(x), bool(binary), outputs


def _load_quietly(served: Served) -> None:
    import sys

    try:
        served.load()
        print(f"deployzoo serve: {served.model} ready ({served.source}, {len(served.tasks)} instance(s))",
              file=sys.stderr, flush=True)
    except Exception:
        print(f"deployzoo serve: loading {served.model} failed: {served.load_error}", file=sys.stderr, flush=True)


def _version() -> str:
    from deployzoo import __version__

    return __version__


def serve(target: str | None = None, checkpoint: str | None = None, model: str | None = None,
          random_weights: bool = False, **kw) -> int:
    """``deployzoo serve [TARGET]``: run the HTTP server until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise DeployzooError("deployzoo serve needs the serve extra: pip install 'deployzoo[serve]'") from None
    cfg = ServeConfig(**{k: v for k, v in kw.items() if v is not None})
    for k in ("max_batch_size", "max_queue_size", "max_request_images", "max_request_bytes", "instances"):
        if getattr(cfg, k) < 1:
            raise DeployzooError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(cfg, k)}")
    # ONNX Runtime's idle intra-op threads spin by default: in a server they would take the cores from the event
    # loop and from request parsing between batches (measured: bench/serve_load.py, README)
    os.environ.setdefault("DEPLOYZOO_ORT_SPIN", "0")
    served = served_from(target, checkpoint, cfg, model, random_weights)
    app = create_app(served)
    print(f"deployzoo serve: {served.model} from {served.source} on http://{cfg.host}:{cfg.port} "
          f"(POST /v1/{served.task_cls.route}, /v2/models/{served.model}/infer, /metrics, /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
    return 0
