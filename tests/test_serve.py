"""``deployzoo serve`` with a real HTTP client against a server on a free loopback port, tritonclient against its
/v2 routes, and the Triton model repository parsed by tritonclient's protobuf schema."""

import base64
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from conftest import png_bytes, word_image
from deployzoo.cli import main
from deployzoo.serve import Batcher, QueueFull, ServeConfig, create_app, served_from

WORDS = ["hello", "street", "coffee", "museum", "garden", "north", "pizza", "international", "restaurant", "exit",
         "open", "bank", "2024", "taxi", "shop", "hotel"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """uvicorn in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert time.time() - t0 < 30, "server did not start"
            time.sleep(0.02)

    def wait_ready(self, timeout: float = 120) -> None:
        t0 = time.time()
        while httpx.get(self.url + "/v2/health/ready").status_code != 200:
            assert time.time() - t0 < timeout, "server never became ready"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "crnn_fp32"
    assert main(["build", "crnn", "--precision", "fp32", "--threads", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [png_bytes(word_image(w if i % 2 else w.upper(), size=22 + (i % 4) * 5)) for i, w in enumerate(WORDS)] + [
        png_bytes(word_image("station").rotate(90, expand=True))]  # vertical text: read turned, batched apart


@pytest.fixture(scope="module")
def alone(engine, images) -> list[str]:
    """What `deployzoo recognize --engine` gives for each image on its own."""
    import deployzoo

    rec = deployzoo.load("crnn", engine=engine, threads=1)
    return [rec(img).text for img in images]


@pytest.fixture(scope="module")
def server(engine):
    cfg = ServeConfig(max_batch_size=8, max_queue_delay_ms=20, max_request_bytes=1 << 20, max_request_images=32,
                      threads=1, instances=2)
    srv = Server(create_app(served_from(str(engine), None, cfg)))
    srv.wait_ready()
    yield srv
    srv.stop()


def _multipart(images, names=None):
    return [("files", (names[i] if names else f"w{i}.png", data, "image/png")) for i, data in enumerate(images)]


def test_multipart_upload_of_several_images_reads_each_as_alone(server, images, alone):
    r = httpx.post(server.url + "/v1/recognize", files=_multipart(images), timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["name"] for x in res] == [f"w{i}.png" for i in range(len(images))]
    assert [x["text"] for x in res] == alone
    assert all(x["error"] is None and 0 <= x["confidence"] <= 1 for x in res)
    assert sum(t == w for t, w in zip(alone, WORDS)) >= 12  # the shipped weights read these clean words
    assert alone[-1] == "station"


def test_base64_json_and_bad_images_among_good_ones(server, images, alone):
    truncated = images[0][:40]
    bad = [base64.b64encode(images[1]).decode(), base64.b64encode(b"").decode(), base64.b64encode(truncated).decode(),
           base64.b64encode(b"this is not an image").decode(), "%%%not-base64%%%", base64.b64encode(images[2]).decode()]
    r = httpx.post(server.url + "/v1/recognize", json={"images": bad}, timeout=60)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert res[0]["text"] == alone[1] and res[0]["error"] is None
    assert "empty" in res[1]["error"]
    assert res[2]["error"] and res[3]["error"] and "base64" in res[4]["error"]
    assert res[5]["text"] == alone[2] and res[5]["error"] is None


def test_refusals_keep_the_server_up(server, images):
    big = [("files", ("big.png", b"\0" * (2 << 20), "image/png"))]
    assert httpx.post(server.url + "/v1/recognize", files=big).status_code == 413
    many = _multipart([images[0]] * 40)
    assert httpx.post(server.url + "/v1/recognize", files=many).status_code == 413
    assert httpx.post(server.url + "/v1/recognize", content=b"hello", headers={"content-type": "text/plain"}
                      ).status_code == 415
    assert httpx.post(server.url + "/v1/recognize", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 422
    assert httpx.post(server.url + "/v1/recognize", json={"pictures": []}).status_code == 422
    assert httpx.post(server.url + "/v1/recognize", content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"}).status_code in (400, 422)
    r = httpx.post(server.url + "/v1/recognize", files=_multipart(images[:1]))
    assert r.status_code == 200 and r.json()["results"][0]["error"] is None


def test_multipart_fields_names_and_pixel_limit(engine, images, alone):
    """Only 'files' parts are images, in order, with their file names; a text 'files' part and an image over
    --max-image-pixels get their own errors; a multipart type without a boundary is refused (422)."""
    from PIL import Image

    cfg = ServeConfig(max_image_pixels=100_000, threads=1)
    srv = Server(create_app(served_from(str(engine), None, cfg)))
    try:
        srv.wait_ready()
        huge = png_bytes(Image.new("L", (1000, 200), 255))  # 200,000 pixels in a few hundred bytes
        r = httpx.post(srv.url + "/v1/recognize", data={"note": "ignored", "files": "not a file"},
                       files=[("files", ("a b.png", images[0], "image/png")), ("other", ("x.png", images[1], "image/png")),
                              ("files", ("huge.png", huge, "image/png")), ("files", ("c.png", images[2], "image/png"))])
        assert r.status_code == 200, r.text
        res = r.json()["results"]
        assert [x["name"] for x in res] == ["files[0]", "a b.png", "huge.png", "c.png"]
        assert "text, not a file" in res[0]["error"]
        assert res[1]["text"] == alone[0] and res[3]["text"] == alone[2]
        assert "1000x200 has more than 100000 pixels" in res[2]["error"]
        r = httpx.post(srv.url + "/v1/recognize", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 422 and "boundary" in r.json()["error"]
    finally:
        srv.stop()


def test_concurrent_requests_equal_sequential_ones_and_are_batched(server, images, alone):
    def metric(name):
        text = httpx.get(server.url + "/metrics").text
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "_total{"))

    inf0, exe0 = metric("deployzoo_inference_count"), metric("deployzoo_execution_count")
    ok0 = metric("deployzoo_request_success")

    def one(i):
        r = httpx.post(server.url + "/v1/recognize", files=_multipart([images[i % len(images)]]), timeout=60)
        return i, r.json()["results"][0]["text"]

    with ThreadPoolExecutor(16) as ex:
        got = list(ex.map(one, range(64)))
    assert all(t == alone[i % len(images)] for i, t in got)
    inf, exe = metric("deployzoo_inference_count") - inf0, metric("deployzoo_execution_count") - exe0
    assert inf == 64 and exe < 64, (inf, exe)  # some batches held more than one request's image
    assert metric("deployzoo_request_success") - ok0 == 64
    text = httpx.get(server.url + "/metrics").text
    for name in ("deployzoo_queue_duration_seconds_bucket", "deployzoo_compute_duration_seconds_count",
                 "deployzoo_pending_requests", "deployzoo_request_failure_total"):
        assert name in text, name


def test_tritonclient_http_against_v2_routes(server, images, alone):
    import tritonclient.http as th

    from deployzoo.process.crnn import CrnnPreprocess, preprocess
    from deployzoo.process.ctc import make_decoder
    from deployzoo.process.image import load_image

    client = th.InferenceServerClient(f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("crnn")
    meta = client.get_model_metadata("crnn")
    assert meta["inputs"][0]["shape"] == [-1, 1, 32, -1] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0] == {"name": "logits", "datatype": "FP32", "shape": [-1, -1, 37]}
    x = preprocess(load_image(images[3], "L"), CrnnPreprocess())[None]
    for binary in (True, False):
        inp = th.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        out = th.InferRequestedOutput("logits", binary_data=binary)
        res = client.infer("crnn", [inp], outputs=[out])
        logits = res.as_numpy("logits")
        assert logits.shape == (26, 1, 37)
        assert make_decoder().decode_batch(logits)[0].text == alone[3]  # the server's decoding (default)
    with pytest.raises(Exception, match="unknown model"):
        client.get_model_metadata("volo_d2")


def test_health_is_not_ready_until_the_engine_is_loaded_and_warm(engine):
    gate = threading.Event()
    import deployzoo

    def slow():
        gate.wait(30)
        return deployzoo.load("crnn", engine=engine, threads=1)

    served = served_from(str(engine), None, ServeConfig(threads=1))
    served.make_predictor = slow
    srv = Server(create_app(served))
    try:
        assert httpx.get(srv.url + "/v2/health/live").status_code == 200
        assert httpx.get(srv.url + "/v2/health/ready").status_code == 503
        r = httpx.post(srv.url + "/v1/recognize", files=_multipart([png_bytes(word_image("ok"))]))
        assert r.status_code == 503 and r.headers["retry-after"]
        gate.set()
        srv.wait_ready(60)
        assert httpx.get(srv.url + "/v2/models/crnn/ready").status_code == 200
        assert httpx.get(srv.url + "/openapi.json").json()["paths"]["/v1/recognize"]
    finally:
        srv.stop()


def test_full_queue_refuses_with_503_and_batches_close_on_size_or_delay():
    release = threading.Event()
    sizes = []

    def fn(batch):
        release.wait(10)
        sizes.append(len(batch))
        return [b * 2 for b in batch]

    b = Batcher([fn], max_batch=4, delay_s=0.05, max_queue=6)
    futs = b.submit([("k", 1)])
    time.sleep(0.15)  # the first batch closed on its delay and is now running, blocked in fn
    more = b.submit([("k", i) for i in range(2, 8)])
    with pytest.raises(QueueFull, match="max-queue-size 6"):
        b.submit([("k", 99)])
    release.set()
    assert [f.result(5) for f in futs + more] == [2, 4, 6, 8, 10, 12, 14]
    assert sizes == [1, 4, 2]
    # images of another padded width never share a batch
    sizes.clear()
    fs = b.submit([("a", 1), ("b", 2), ("a", 3)])
    assert [f.result(5) for f in fs] == [2, 4, 6] and sorted(sizes) == [1, 2]
    b.close()


def test_two_instances_never_run_an_empty_batch():
    """Both instances wait on the same oldest image; the one that does not get it waits again instead of running
    an empty batch (which had counted as an execution and halved the reported average batch)."""
    sizes = []

    def fn(batch):
        sizes.append(len(batch))
        return [b + 1 for b in batch]

    b = Batcher([fn, fn], max_batch=8, delay_s=0.02, max_queue=100)
    for i in range(5):
        assert b.submit([("k", i)])[0].result(5) == i + 1
    fs = b.submit([("k", 10), ("k", 11)])
    assert [f.result(5) for f in fs] == [11, 12]
    time.sleep(0.1)
    b.close()
    assert 0 not in sizes and sum(sizes) == 7, sizes


def test_export_triton_repository_parses_with_tritonclient_protobuf(engine, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    repo = tmp_path / "repo"
    assert main(["export-triton", str(engine), "--out", str(repo), "--max-batch-size", "32",
                 "--max-queue-delay-ms", "3", "--instances", "2"]) == 0
    configs = {}
    for p in sorted(repo.glob("*/config.pbtxt")):
        cfg = model_config_pb2.ModelConfig()
        text_format.Parse(p.read_text(), cfg)
        configs[cfg.name] = cfg
    assert set(configs) == {"crnn", "crnn_onnx", "crnn_decode"}
    onnx_cfg = configs["crnn_onnx"]
    assert onnx_cfg.max_batch_size == 32 and list(onnx_cfg.input[0].dims) == [1, 32, -1]
    assert onnx_cfg.dynamic_batching.max_queue_delay_microseconds == 3000
    assert onnx_cfg.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert configs["crnn"].platform == "ensemble" and len(configs["crnn"].ensemble_scheduling.step) == 2
    assert (repo / "crnn_decode" / "1" / "model.py").is_file()
    # the batch-first graph gives the engine's logits, transposed
    import onnxruntime as ort

    from deployzoo.process.crnn import CrnnPreprocess, preprocess
    from deployzoo.process.image import load_image

    x = preprocess(load_image(png_bytes(word_image("museum")), "L"), CrnnPreprocess())[None]
    sess = ort.InferenceSession(str(repo / "crnn_onnx" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    btc = sess.run(None, {"input": x})[0]
    ref = ort.InferenceSession(str(next(engine.glob("*.onnx"))), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    np.testing.assert_allclose(btc, ref.transpose(1, 0, 2), rtol=0, atol=0)
    # a second export into the same folder is refused, nothing half-written is left
    assert main(["export-triton", str(engine), "--out", str(repo)]) == 2
    assert not list(tmp_path.glob(".*tmp"))


def _photo_and_broken(srv, route: str, hw: tuple[int, int], seed: int, broken: bytes):
    """POST a random photo and a broken image to ``route``: (the photo's PNG bytes, its result, the broken one's)."""
    from PIL import Image

    photo = png_bytes(Image.fromarray((np.random.default_rng(seed).random((*hw, 3)) * 255).astype(np.uint8)))
    r = httpx.post(srv.url + route, files=_multipart([photo, broken]), timeout=120)
    assert r.status_code == 200, r.text
    good, bad = r.json()["results"]
    return photo, good, bad


def test_classify_route_serves_volo_through_the_same_predictor_api():
    """VOLO-D2 (seeded random weights, a smoke test of the route): top-k per image, a bad image answered alone."""
    import deployzoo

    cfg = ServeConfig(max_batch_size=4, max_queue_delay_ms=5, threads=1)
    srv = Server(create_app(served_from("volo_d2", None, cfg, random_weights=True)))
    try:
        srv.wait_ready(300)
        photo, good, bad = _photo_and_broken(srv, "/v1/classify", (96, 128), 0, b"broken")
        assert len(good["topk"]) == 5 and good["error"] is None and good["topk"][0]["wnid"].startswith("n")
        assert bad["error"] and "topk" not in bad
        ref = deployzoo.load("volo_d2", random_weights=True, threads=1)(photo)
        assert good["topk"][0]["index"] == ref.index
        meta = httpx.get(srv.url + "/v2/models/volo_d2").json()
        assert meta["inputs"][0]["shape"] == [-1, 3, 224, 224] and meta["outputs"][0]["shape"] == [-1, 1000]
        assert httpx.post(srv.url + "/v1/recognize", json={"images": []}).status_code == 404
    finally:
        srv.stop()


def test_segment_route_serves_ocrnet_through_the_same_predictor_api():
    """OCRNet (seeded random weights, a small test scale to keep it quick): a PNG label map at the image's size
    equal to the Segmenter's own result, per-class pixel counts that add up, a bad image answered alone."""
    import deployzoo
    from PIL import Image

    def small():
        return deployzoo.load("ocrnet_hr18", random_weights=True, threads=1, test_scale=(128, 64))

    served = served_from("ocrnet_hr18", None, ServeConfig(max_batch_size=2, max_queue_delay_ms=5, threads=1,
                                                          instances=1), random_weights=True)
    served.make_predictor = small
    srv = Server(create_app(served))
    try:
        srv.wait_ready(300)
        photo, good, bad = _photo_and_broken(srv, "/v1/segment", (48, 96), 1, b"\x89PNG broken")
        assert bad["error"] and "labels_png" not in bad
        labels = np.asarray(Image.open(io.BytesIO(base64.b64decode(good["labels_png"]))))
        assert labels.shape == (48, 96) and good["shape"] == [48, 96]
        np.testing.assert_array_equal(labels, small().segment(photo))
        assert sum(good["class_pixels"].values()) == 48 * 96
        meta = httpx.get(srv.url + "/v2/models/ocrnet_hr18").json()
        assert meta["outputs"][0]["shape"][:2] == [-1, 19]
    finally:
        srv.stop()
