"""Engines: every precision x backend builds and reads word images within its stated tolerance of PyTorch;
manifest round trip; corrupted engines fail with a clear EngineError; fixed-batch engines never crash on a tail.

Stated tolerances (CRNN, seeded weights, against PyTorch fp32 on the same inputs):
- fp32 (onnxruntime, openvino, aoti cpu): logits atol 1e-4.
- bf16 / fp16 (openvino): relative L2 error of the logits < 2e-2 (bf16) / 5e-3 (fp16).
- int8 (onnxruntime QDQ, openvino NNCF): relative L2 error of the logits < 0.05 and greedy-decoded text equal to
  PyTorch's on >= 90 % of the rendered words (the build's own budget: <= 0.5 points of word accuracy lost on its
  labelled held-out images).
"""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import word_image
from deployzoo.engines import open_engine, run_fixed_batches
from deployzoo.engines.build import build_engine, normalize_precision
from deployzoo.engines.calib import Batch, calibration_inputs
from deployzoo.engines.manifest import (MANIFEST_NAME, EngineWriter, _manifest_digest, sha256_file, verify_engine)
from deployzoo.engines.quant import QuantBudget, choose_float_nodes, clopper_pearson, paired_drop, tango_interval
from deployzoo.errors import DatasetError, EngineError
from deployzoo.export import load_model, run_torch
from deployzoo.process.crnn import CrnnPreprocess, pad_batch, preprocess
from deployzoo.process.ctc import greedy_decode
from deployzoo.process.image import load_image
from deployzoo.process.text import ALPHABET
from deployzoo.predict import Recognizer

WORDS = ["hello", "world", "deploy", "zoo", "engine", "quant", "crnn", "lstm", "2024", "onnx", "tensor", "river",
         "street", "open", "vino", "sign", "shop", "cafe", "hotel", "exit", "stop", "north", "main", "park",
         "museum", "bank", "taxi", "metro", "pizza", "coffee", "music", "books", "garden", "store", "light", "road"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def calib_words(tmp_path_factory) -> Path:
    """36 rendered words in a gt.txt folder: the 'real images' of the tests."""
    d = tmp_path_factory.mktemp("calib")
    (d / "img").mkdir()
    lines = []
    for i, w in enumerate(WORDS):
        word_image(w if i % 3 else w.upper(), size=24 + (i % 4) * 4).save(d / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {w}")
    (d / "gt.txt").write_text("\n".join(lines) + "\n")
    return d


@pytest.fixture(scope="module")
def model(crnn_seeded_ckpt):
    return load_model("crnn", crnn_seeded_ckpt)[0]


@pytest.fixture(scope="module")
def word_batch(calib_words) -> tuple[np.ndarray, np.ndarray]:
    items = [preprocess(load_image(p, "L")) for p in sorted((calib_words / "img").glob("*.png"))]
    return pad_batch(items, CrnnPreprocess())


@pytest.fixture(scope="module")
def ort_fp32(crnn_seeded_ckpt, tmp_path_factory) -> Path:
    return build_engine("crnn", "fp32", checkpoint=crnn_seeded_ckpt, out=tmp_path_factory.mktemp("e") / "fp32",
                        threads=1, progress=False)


@pytest.fixture(scope="module")
def ort_int8(crnn_seeded_ckpt, calib_words, tmp_path_factory) -> Path:
    return build_engine("crnn", "int8", checkpoint=crnn_seeded_ckpt, calib_data=calib_words, calib_count=24,
                        probe_count=12, out=tmp_path_factory.mktemp("e") / "int8", threads=1, progress=False,
                        calib_method="minmax", max_rel_l2=0.01)


def texts(logits: np.ndarray) -> list[str]:
    return [d.text for d in greedy_decode(logits)]


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def check_int8(engine, model, word_batch) -> None:
    x, _ = word_batch
    out, ref = engine(x), run_torch(model, x)
    assert rel_l2(out, ref) < 0.05
    agree = np.mean([a == b for a, b in zip(texts(out), texts(ref))])
    assert agree >= 0.9


# ------------------------------------------------------------------------------------------- onnxruntime

def test_ort_fp32_matches_torch_for_every_batch_and_width(ort_fp32, model):
    eng = open_engine(ort_fp32, expect_model="crnn", threads=1)
    assert (eng.name, eng.backend, eng.precision, eng.model) == ("onnxruntime/fp32", "onnxruntime", "force_float32",
                                                                 "crnn")
    rng = np.random.default_rng(0)
    for b in (1, 3, 7):
        for w in (64, 100, 160):
            x = rng.uniform(-1, 1, (b, 1, 32, w)).astype(np.float32)
            np.testing.assert_allclose(eng(x), run_torch(model, x), rtol=0, atol=1e-4)


def test_engine_is_a_runner_for_the_recognizer(ort_fp32, crnn_seeded_ckpt, calib_words):
    eng = open_engine(ort_fp32)
    rec = Recognizer(eng, CrnnPreprocess.from_dict(eng.manifest["preprocess"]), eng.manifest["alphabet"])
    ref = Recognizer.from_checkpoint(crnn_seeded_ckpt)
    imgs = sorted((calib_words / "img").glob("*.png"))[:8]
    assert [r.text for r in rec(imgs)] == [r.text for r in ref(imgs)]
    assert [r.text for r in Recognizer.from_engine(eng)(imgs)] == [r.text for r in ref(imgs)]


def test_manifest_round_trip(ort_fp32, crnn_seeded_ckpt):
    m = json.loads((ort_fp32 / MANIFEST_NAME).read_text())
    assert m == verify_engine(ort_fp32) == open_engine(ort_fp32).manifest
    assert (m["model"], m["precision"], m["backend"], m["device"], m["entry"]) == (
        "crnn", "force_float32", "onnxruntime", "cpu", "model.onnx")
    assert CrnnPreprocess.from_dict(m["preprocess"]) == CrnnPreprocess() and m["alphabet"] == ALPHABET
    assert m["input"]["dynamic_axes"] == {"0": "batch", "3": "width"} and m["input"]["fixed_batch"] is None
    for rel, info in m["files"].items():
        assert sha256_file(ort_fp32 / rel) == info["sha256"]
    assert m["source"]["checkpoint_sha256"] == sha256_file(crnn_seeded_ckpt)
    assert {"onnxruntime", "torch", "numpy", "python"} <= set(m["libraries"])
    assert m["created"] and m["host"]["cpu"] and m["quantization"] is None
    assert all(r["ok"] for r in m["parity"])
    assert not list(ort_fp32.parent.glob(".*building"))  # the temporary build folder was renamed away


def test_ort_int8_calibrated_and_chosen_by_measurement(ort_int8, model, word_batch):
    eng = open_engine(ort_int8, threads=1)
    q = eng.manifest["quantization"]
    assert q["format"] == "QDQ" and q["per_channel"] and q["calibration"]["method"] == "minmax"
    assert q["calibration"]["images"] > 0 and q["probe_images"] > 0
    assert len(q["candidates"]) == 9  # 7 Conv + 2 MatMul (the LSTMs have no int8 QDQ kernel)
    assert set(q["sensitivity_alone_int8"]) == set(q["candidates"])
    # the calibration set is a labelled word folder: the budget is word accuracy lost against float
    assert q["budget"] == {"max_accuracy_drop": 0.005, "max_disagreement": 0.01, "max_rel_l2": 0.01,
                           "criterion": "accuracy_drop", "confidence": 0.95}
    assert q["calibration"]["probe_labelled"] and q["final"]["labelled"] == q["probe_images"]
    assert q["budget_met"] and q["final"]["rel_l2"] <= 0.01 and q["final"]["accuracy_drop"] <= 0.005
    # the float nodes are the most sensitive ones, in order, and really are float in the graph
    sens = q["sensitivity_alone_int8"]
    budget = QuantBudget(q["budget"]["max_disagreement"], q["budget"]["max_rel_l2"], q["budget"]["max_accuracy_drop"])
    # (the seeded model reads none of the words, so the relative-L2 bound, not the accuracy drop, drives this search)
    ranked = sorted(q["candidates"], key=lambda c: budget.error_key(sens[c]), reverse=True)
    assert q["float_nodes"] == ranked[: len(q["float_nodes"])]
    lo, hi = q["final"]["drop_interval"]
    assert lo <= q["final"]["accuracy_drop"] <= hi and q["verdict"] in ("certified", "met")
    assert q["probe_check"]["probe_words"] == q["probe_images"]
    assert set(q["int8_nodes"]) == set(q["candidates"]) - set(q["float_nodes"]) and q["int8_nodes"]
    g = onnx.load(ort_int8 / "model.onnx").graph
    assert sum(n.op_type == "QuantizeLinear" for n in g.node) > 0
    assert any(n.op_type == "LSTM" for n in g.node)
    check_int8(eng, model, word_batch)


def test_lstm_storage_options_size_and_batch_invariance(crnn_seeded_ckpt, calib_words, word_batch, tmp_path):
    """--compact-lstm: LSTM weights stored fp16 behind folded Casts: a smaller file, logits within fp16 rounding
    of the fp32-LSTM engine, and a word's logits do not depend on its batch neighbours. --int8-lstm (dynamic
    quantisation) is recorded as not batch-invariant, which is why it is not the serving default."""
    kw = dict(checkpoint=crnn_seeded_ckpt, calib_data=calib_words, calib_count=24, probe_count=12, threads=1,
              progress=False, calib_method="minmax", max_accuracy_drop=None, max_disagreement=1.0)
    plain = build_engine("crnn", "int8", out=tmp_path / "plain", **kw)
    compact = build_engine("crnn", "int8", out=tmp_path / "compact", options={"compact_lstm": True}, **kw)
    lstm = open_engine(compact).manifest["quantization"]["lstm"]
    assert lstm["kept"] and lstm["batch_invariant"] and lstm["tensors"] == 6  # W, R, B of two BiLSTMs
    size = {p: sum(f.stat().st_size for f in p.glob("*.onnx")) for p in (compact, plain)}
    assert size[compact] < 0.75 * size[plain]
    x, _ = word_batch
    a, b = open_engine(compact, threads=1), open_engine(plain, threads=1)
    ya = a(x)
    assert np.abs(ya - b(x)).max() < 0.05 * np.abs(b(x)).max()
    for i in (0, 5):  # alone vs in the batch: the same logits
        np.testing.assert_allclose(a(x[i : i + 1])[:, 0], ya[:, i], rtol=1e-5, atol=1e-5)
    dyn = build_engine("crnn", "int8", out=tmp_path / "dyn", options={"int8_lstm": True}, **kw)
    q = open_engine(dyn).manifest["quantization"]
    assert q["lstm"]["batch_invariant"] is False
    # dynamic int8 LSTMs against the fp32-LSTM engine: within 10 % of the largest logit on these words
    assert np.abs(open_engine(dyn, threads=1)(x) - b(x)).max() < 0.10 * np.abs(b(x)).max()
    from deployzoo.engines.quant import summary_lines

    assert any(line.startswith("LSTM: dynamic int8") and "not batch-invariant" in line for line in summary_lines(q))


def test_ort_fp16_is_refused_with_the_measured_reason(crnn_seeded_ckpt, tmp_path):
    with pytest.raises(EngineError, match="no float16 kernels.*openvino"):
        build_engine("crnn", "fp16", checkpoint=crnn_seeded_ckpt, out=tmp_path / "e16", threads=1, progress=False)
    assert not (tmp_path / "e16").exists() and not list(tmp_path.glob(".*"))


def test_fixed_batch_engine_splits_and_pads_tails(crnn_seeded_ckpt, tmp_path, model):
    p = build_engine("crnn", "fp32", checkpoint=crnn_seeded_ckpt, shape_mutable=False, batch_size=4,
                     out=tmp_path / "fixed", threads=1, progress=False)
    eng = open_engine(p)
    assert eng.fixed_batch == 4 and eng.input_spec["shape"][0] == 4
    rng = np.random.default_rng(2)
    for b in (1, 4, 7, 9):
        x = rng.uniform(-1, 1, (b, 1, 32, 100)).astype(np.float32)
        np.testing.assert_allclose(eng(x), run_torch(model, x), rtol=0, atol=1e-4)
    with pytest.raises(EngineError, match="--batch-size"):
        build_engine("crnn", "fp32", random_weights=True, shape_mutable=False, out=tmp_path / "x", progress=False)


def test_run_fixed_batches_helper():
    calls = []

    def run(x):
        calls.append(x.shape[0])
        return x.sum(axis=(1, 2, 3))[:, None] * np.ones((1, 2))

    x = np.arange(7 * 4, dtype=np.float32).reshape(7, 1, 2, 2)
    out = run_fixed_batches(run, x, 3)
    assert calls == [3, 3, 3] and out.shape == (7, 2)
    np.testing.assert_allclose(out[:, 0], x.sum(axis=(1, 2, 3)))


# ---------------------------------------------------------------------------------------------- openvino

def _need_openvino():
    pytest.importorskip("openvino", reason="OpenVINO not installed: pip install deployzoo[openvino]")


def test_openvino_fp32_matches_torch(crnn_seeded_ckpt, tmp_path, model):
    _need_openvino()
    p = build_engine("crnn", "fp32", backend="openvino", checkpoint=crnn_seeded_ckpt, out=tmp_path / "ov32",
                     threads=1, progress=False)
    eng = open_engine(p, threads=1)
    m = eng.manifest
    assert m["backend_options"]["config"]["INFERENCE_PRECISION_HINT"] == "f32"
    assert set(m["computes"]["Convolution"]) == {"f32"}
    import openvino

    ir = openvino.Core().read_model(p / "model.xml")  # the ONNX metadata travels into the IR
    assert ir.get_rt_info(["deployzoo", "model"]).astype(str) == "crnn"
    assert json.loads(ir.get_rt_info(["deployzoo", "preprocess"]).astype(str)) == CrnnPreprocess().to_dict()
    rng = np.random.default_rng(3)
    for b, w in ((1, 64), (3, 100), (7, 160)):
        x = rng.uniform(-1, 1, (b, 1, 32, w)).astype(np.float32)
        np.testing.assert_allclose(eng(x), run_torch(model, x), rtol=0, atol=1e-4)


@pytest.mark.parametrize("precision,cap,tol", [("bf16", "BF16", 2e-2), ("fp16", "FP16", 5e-3)])
def test_openvino_half_precisions_really_run_in_half(precision, cap, tol, crnn_seeded_ckpt, tmp_path, model,
                                                     word_batch):
    _need_openvino()
    from deployzoo.engines.openvino import capabilities

    if cap not in capabilities():
        with pytest.raises(EngineError, match="quietly compute in f32"):
            build_engine("crnn", precision, backend="openvino", random_weights=True, out=tmp_path / "h",
                         progress=False)
        return
    p = build_engine("crnn", precision, backend="openvino", checkpoint=crnn_seeded_ckpt, out=tmp_path / "h",
                     threads=1, progress=False)
    eng = open_engine(p, threads=1)
    half = {"bf16": "bf16", "fp16": "f16"}[precision]
    assert set(eng.manifest["computes"]["Convolution"]) == {half}  # what the CPU plugin really runs
    x, _ = word_batch
    assert rel_l2(eng(x), run_torch(model, x)) < tol


def test_openvino_int8_nncf(crnn_seeded_ckpt, calib_words, tmp_path, model, word_batch, monkeypatch):
    _need_openvino()
    pytest.importorskip("nncf", reason="NNCF not installed: pip install deployzoo[openvino]")
    p = build_engine("crnn", "int8", backend="openvino", checkpoint=crnn_seeded_ckpt, calib_data=calib_words,
                     calib_count=24, probe_count=12, out=tmp_path / "ov8", threads=1, progress=False,
                     options={"preset": "mixed", "measure_each": False})
    eng = open_engine(p, threads=1)
    q = eng.manifest["quantization"]
    assert q["preset"] == "mixed" and q["budget_met"] and q["calibration"]["images"] > 0
    assert len(q["candidates"]) == 11  # 7 Convolution + 2 MatMul + 2 LSTMSequence
    prec = {p for layer in ("Convolution", "FullyConnected") for p in eng.manifest["computes"].get(layer, {})}
    assert prec & {"u8", "i8"}  # int8 kernels really run
    check_int8(eng, model, word_batch)
    from deployzoo.engines import openvino as ovmod

    # the float layers (the LSTMs) run in bf16 where the CPU computes it natively, else f32; recorded and really run
    hint = ovmod.float_parts_hint(None, ovmod.capabilities())
    assert eng.manifest["backend_options"]["config"]["INFERENCE_PRECISION_HINT"] == hint
    assert q["float_parts_dtype"] == hint and set(eng.manifest["computes"]["RNNSeq"]) == {hint}
    # the same engine opened on a CPU without native bf16: float layers in f32, with a warning, same text
    monkeypatch.setattr(ovmod, "capabilities", lambda: ["FP32", "INT8"])
    m = json.loads(json.dumps(eng.manifest))
    m["backend_options"]["config"]["INFERENCE_PRECISION_HINT"] = "bf16"
    with pytest.warns(UserWarning, match="built to run in bf16.*running them in f32"):
        run = ovmod.load(p, m, threads=1)
    assert ovmod._type_name(run.compiled.get_property("INFERENCE_PRECISION_HINT")) == "f32"
    check_int8(run, model, word_batch)
    m["precision"] = "force_bfloat16"  # a bf16 engine is refused there instead: its point is bf16
    with pytest.raises(EngineError, match="no native bf16"):
        ovmod.load(p, m, threads=1)


def test_openvino_int8_float_parts_follow_the_cpu():
    from deployzoo.engines.openvino import float_parts_hint

    assert float_parts_hint(None, ["FP32", "BF16", "INT8"]) == "bf16"  # native bf16 (avx512_bf16 or AMX)
    assert float_parts_hint("auto", ["FP32", "INT8"]) == "f32"
    assert float_parts_hint("fp32", ["FP32", "BF16"]) == "f32"
    assert float_parts_hint("f16", ["FP32", "FP16"]) == "f16"
    with pytest.raises(EngineError, match="use auto, f32, bf16 or f16"):
        float_parts_hint("int4", ["FP32"])


def test_openvino_fixed_batch_engine_runs_its_one_shape_static(crnn_seeded_ckpt, tmp_path, model):
    """A fixed-batch CRNN engine with fixed-width pre-processing has one input shape: OpenVINO compiles a static
    copy for it (faster kernels); other shapes (the build's parity widths) run on the dynamic model. Either way the
    output matches PyTorch, and a row never depends on the other rows' content or its position."""
    _need_openvino()
    from deployzoo.engines.openvino import static_shape

    p = build_engine("crnn", "fp32", backend="openvino", checkpoint=crnn_seeded_ckpt, shape_mutable=False,
                     batch_size=4, out=tmp_path / "ovfix", threads=1, progress=False)
    eng = open_engine(p, threads=1)
    run = eng.runner
    assert eng.manifest["backend_options"]["static_shape"] == [4, 1, 32, 100] and run.static_shape == (4, 1, 32, 100)
    assert run._dynamic is None  # nothing compiled for other shapes until one arrives
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (4, 1, 32, 100)).astype(np.float32)
    out = run(x)
    np.testing.assert_allclose(out, run_torch(model, x), rtol=0, atol=1e-4)
    assert run._dynamic is None  # the static copy served it
    y = x.copy()
    y[1:] = rng.uniform(-1, 1, (3, 1, 32, 100))
    np.testing.assert_array_equal(run(y)[:, 0], out[:, 0])  # other rows' content: no effect
    np.testing.assert_array_equal(run(x[[3, 1, 2, 0]])[:, 3], out[:, 0])  # position: no effect
    x64 = rng.uniform(-1, 1, (4, 1, 32, 64)).astype(np.float32)
    np.testing.assert_allclose(run(x64), run_torch(model, x64), rtol=0, atol=1e-4)  # other widths: dynamic model
    assert run._dynamic is not None
    np.testing.assert_allclose(eng(x[:3]), out[:, :3], rtol=0, atol=1e-5)  # 3 words: padded to the fixed batch
    spec = {"shape": [4, 1, 32, "width"], "fixed_batch": 4}
    assert static_shape(spec, {"width": 100, "keep_ratio": False}) == [4, 1, 32, 100]
    assert static_shape(spec, {"width": 100, "keep_ratio": True}) is None  # the width follows each image
    assert static_shape({"shape": ["batch", 1, 32, "width"], "fixed_batch": None}, {"width": 100}) is None
    assert static_shape({"shape": [2, 3, 224, 224], "fixed_batch": 2}, {}) == [2, 3, 224, 224]


def test_openvino_int8_fixed_batch_is_quantised_and_static(crnn_seeded_ckpt, calib_words, tmp_path, model,
                                                           word_batch):
    """The fixed-batch int8 engine (the fastest CPU engine in the README's int8 budget table): calibrated and
    probed through the static copy, int8 kernels really run in it, and it reads as the float model does."""
    _need_openvino()
    pytest.importorskip("nncf", reason="NNCF not installed: pip install deployzoo[openvino]")
    p = build_engine("crnn", "int8", backend="openvino", checkpoint=crnn_seeded_ckpt, calib_data=calib_words,
                     calib_count=24, probe_count=12, out=tmp_path / "ov8fix", threads=1, progress=False,
                     shape_mutable=False, batch_size=8, options={"preset": "mixed", "measure_each": False})
    eng = open_engine(p, threads=1)
    assert eng.manifest["backend_options"]["static_shape"] == [8, 1, 32, 100]
    assert eng.manifest["quantization"]["budget_met"]
    run = eng.runner
    prec = {p for layer in ("Convolution", "FullyConnected") for p in eng.manifest["computes"].get(layer, {})}
    assert prec & {"u8", "i8"} and run._static is not None  # int8 kernels run; the engine has its static copy
    check_int8(eng, model, word_batch)  # any number of words: split into / padded to batches of 8
    assert run._dynamic is None  # a short tail is padded to 8, never run on the dynamic model


def test_openvino_missing_gives_install_hint(monkeypatch, tmp_path):
    import builtins

    from deployzoo.engines import openvino as ovmod

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(EngineError, match=r"pip install deployzoo\[openvino\]"):
        ovmod._ov()


# --------------------------------------------------------------------------------------------------- aoti

def test_aoti_cpu_fp32_export_package_load(crnn_seeded_ckpt, tmp_path, model):
    """The AOTInductor path on CPU (about 20-30 s of compilation): same export/package/load code as on a GPU."""
    p = build_engine("crnn", "fp32", backend="aoti", checkpoint=crnn_seeded_ckpt, out=tmp_path / "pt2", threads=1,
                     progress=False, options={"device": "cpu"})
    eng = open_engine(p, threads=1)
    assert eng.manifest["device"] == "cpu" and (p / "model.pt2").is_file()
    rng = np.random.default_rng(4)
    for b, w in ((1, 64), (3, 100), (7, 160)):
        x = rng.uniform(-1, 1, (b, 1, 32, w)).astype(np.float32)
        np.testing.assert_allclose(eng(x), run_torch(model, x), rtol=0, atol=1e-4)
    x = rng.uniform(-1, 1, (2, 1, 32, 102)).astype(np.float32)  # not a multiple of 4: padded, same frame count
    assert eng(x).shape == (26, 2, 37)
    with pytest.raises(EngineError, match="NVIDIA GPU"):
        build_engine("crnn", "fp16", backend="aoti", random_weights=True, out=tmp_path / "h", progress=False,
                     options={"device": "cpu"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision,tol", [("fp32", 1e-3), ("fp16", 2e-2), ("bf16", 5e-2)])
def test_aoti_cuda(precision, tol, crnn_seeded_ckpt, tmp_path, model, word_batch):
    p = build_engine("crnn", precision, backend="aoti", checkpoint=crnn_seeded_ckpt, out=tmp_path / precision,
                     progress=False)
    eng = open_engine(p)
    assert eng.manifest["device"] == "cuda"
    x, _ = word_batch
    for b in (1, 3, 7):
        assert rel_l2(eng(x[:b]), run_torch(model, x[:b])) < tol


# ------------------------------------------------------------------------------------ corrupted engines

@pytest.fixture
def engine_copy(ort_fp32, tmp_path) -> Path:
    d = tmp_path / "copy"
    shutil.copytree(ort_fp32, d)
    return d


def _rewrite_manifest(d: Path, **changes) -> None:
    """Edit the manifest the way a different deployzoo would write it (self-checksum recomputed)."""
    m = json.loads((d / MANIFEST_NAME).read_text())
    m.update(changes)
    m["manifest_sha256"] = _manifest_digest(m)
    (d / MANIFEST_NAME).write_text(json.dumps(m))


def test_altered_file_byte(engine_copy):
    f = engine_copy / "model.onnx"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(EngineError, match=r"copy: file model\.onnx was altered \(checksum mismatch"):
        open_engine(engine_copy)


def test_missing_file(engine_copy):
    (engine_copy / "model.onnx").unlink()
    with pytest.raises(EngineError, match=r"file model\.onnx listed in manifest\.json is missing"):
        open_engine(engine_copy)


def test_hand_edited_manifest(engine_copy):
    m = json.loads((engine_copy / MANIFEST_NAME).read_text())
    m["precision"] = "qint8_mixed_float16"
    (engine_copy / MANIFEST_NAME).write_text(json.dumps(m))
    with pytest.raises(EngineError, match="edited after the build"):
        open_engine(engine_copy)


def test_foreign_model_expected(engine_copy):
    with pytest.raises(EngineError, match="built for model 'crnn', not 'volo_d2'"):
        open_engine(engine_copy, expect_model="volo_d2")


def test_missing_and_unparseable_manifest(engine_copy, tmp_path):
    (engine_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EngineError, match="cannot be parsed"):
        open_engine(engine_copy)
    (engine_copy / MANIFEST_NAME).unlink()
    with pytest.raises(EngineError, match="manifest.json is missing"):
        open_engine(engine_copy)
    with pytest.raises(EngineError, match="not found"):
        open_engine(tmp_path / "nowhere")


def test_newer_manifest_version(engine_copy):
    _rewrite_manifest(engine_copy, manifest_version=99)
    with pytest.raises(EngineError, match="version 99 was written by a newer deployzoo"):
        open_engine(engine_copy)


def test_unknown_backend_and_model(engine_copy):
    _rewrite_manifest(engine_copy, backend="tensorrt")
    with pytest.raises(EngineError, match="unknown backend 'tensorrt'"):
        open_engine(engine_copy)
    _rewrite_manifest(engine_copy, backend="onnxruntime", model="resnet50")
    with pytest.raises(EngineError, match="unknown model 'resnet50'"):
        open_engine(engine_copy)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_engine_without_cuda(engine_copy):
    _rewrite_manifest(engine_copy, backend="aoti", device="cuda")
    with pytest.raises(EngineError, match="no CUDA device"):
        open_engine(engine_copy)


def test_wrong_input_shape_is_a_clear_error(ort_fp32):
    eng = open_engine(ort_fp32)
    with pytest.raises(EngineError, match="input dim 2 must be 32"):
        eng(np.zeros((1, 1, 48, 100), np.float32))


def test_writer_is_atomic_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "eng"
    with pytest.raises(RuntimeError):
        with EngineWriter(out) as w:
            (w.dir / "model.onnx").write_bytes(b"half")
            raise RuntimeError("build failed")
    assert not out.exists() and not list(tmp_path.iterdir())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(EngineError, match="not an engine directory"):
        EngineWriter(tmp_path / "docs")


# ----------------------------------------------------------------------------------- names, calibration

def test_precision_names_and_backend_support():
    assert normalize_precision("int8") == "qint8_mixed_float16" and normalize_precision("FP32") == "force_float32"
    with pytest.raises(EngineError, match="does not build qint8_mixed_float16.*onnxruntime or openvino"):
        normalize_precision("int8", "aoti")
    with pytest.raises(EngineError, match="unknown precision"):
        normalize_precision("int4")


def test_int8_without_calibration_data_is_refused(tmp_path):
    with pytest.raises(EngineError, match="int8 needs real images.*--calib-data"):
        build_engine("crnn", "int8", random_weights=True, out=tmp_path / "e", progress=False)


def test_calibration_inputs_use_inference_preprocessing(word_folder):
    batches = calibration_inputs("crnn", word_folder, 16, {}, batch_size=4)
    # 9 entries, one truncated and one empty image skipped: 7 images in 2 batches, the tail filled up to 4
    # (histogram calibrators stack activations across batches, so every batch has one shape)
    assert [b.shape for b in batches] == [(4, 1, 32, 100)] * 2
    assert all(b.dtype == np.float32 and b.min() >= -1 and b.max() <= 1 for b in batches)
    kr = calibration_inputs("crnn", word_folder, 16, {"preprocess": {"keep_ratio": True}}, batch_size=4)
    assert len({b.shape for b in kr}) == 1 and kr[0].shape[-1] % 16 == 0
    with pytest.raises(DatasetError):
        calibration_inputs("crnn", word_folder / "nothing", 4, {})


def _onehot_logits(first: list[int], scale: list[float] | None = None) -> np.ndarray:
    """(T=4, B, 37) logits whose greedy decoding of item b is the one class ``first[b]``."""
    out = np.zeros((4, len(first), 37), np.float32)
    out[:, :, 0] = 5.0  # blank everywhere ...
    for b, k in enumerate(first):
        out[0, b, k] = 10.0 * (scale[b] if scale else 1.0)  # ... but class k in the first frame
    return out


def _class_probe(n: int, right: int):
    """A labelled top-1 probe of n items (item k's class is k + 1; 0 would read as an empty label): the float
    model reads the first ``right`` of them."""
    labels = [k + 1 for k in range(n)]
    first = [_cls(k, 0 if k < right else 1, n) for k in range(n)]
    return labels, first


def _cls(k: int, off: int, n: int) -> int:
    """Item k's class shifted by ``off`` (0: the right class, else a wrong one)."""
    return (k + off) % n + 1


def _class_logits(first: list[int], n: int) -> np.ndarray:
    out = np.zeros((len(first), n + 1), np.float32)
    out[np.arange(len(first)), first] = 1.0
    return out


def _fake_quantiser(first0: list[int], edits: dict[str, dict[int, int]], n: int):
    """make(quantised layer names) -> a runner whose top-1 answers are the float ones with those layers' edits."""

    def make(q):
        first = list(first0)
        for name in q:
            for k, v in edits[name].items():
                first[k] = v
        return lambda x: _class_logits(first, n)

    return make


def test_labelled_budget_counts_accuracy_lost_not_outputs_changed():
    """'x' changes 40 wrong answers into other wrong ones (10 % disagreement, no accuracy lost); 'y' breaks 20
    right answers (5 points, far beyond noise on 400 items). With labels only 'y' must stay float, although 'x'
    changes more outputs; without labels both would."""
    n = 400
    labels, first0 = _class_probe(n, 300)
    ref = [_class_logits(first0, n)]
    probe = [Batch(np.zeros((n, 3, 2, 2), np.float32), None, n, labels)]
    edits = {"x": {k: _cls(k, 2, n) for k in range(300, 340)}, "y": {k: _cls(k, 1, n) for k in range(20)}}
    make = _fake_quantiser(first0, edits, n)

    res = choose_float_nodes(["x", "y"], make, "volo_d2", probe, ref, QuantBudget(max_accuracy_drop=0.005))
    assert res["all_int8"]["accuracy_drop"] == pytest.approx(0.05) and res["all_int8"]["reference_accuracy"] == 0.75
    assert res["sensitivity_alone_int8"]["x"]["accuracy_drop"] == 0 and res["sensitivity_alone_int8"]["x"][
        "disagreement"] == 0.1
    assert res["float_nodes"] == ["y"] and res["quantized_nodes"] == ["x"] and res["budget_met"]
    assert res["final"]["disagreement"] == 0.1 and res["budget"]["criterion"] == "accuracy_drop"
    lo, hi = res["float_effects"]["y"]["drop_interval"]
    assert 0.02 < lo < 0.05 < hi  # none gained: the drop could be larger than the 20 words seen
    # float 'y' leaves no discordant item: 400 identical answers bound the drop by 0.95 points (Tango: d / (1 - d)
    # = z^2 / n), not 0.5
    assert res["final"]["drop_interval"][1] == pytest.approx(3.8415 / 403.8415, abs=1e-4) and res["verdict"] == "met"
    assert res["probe_check"]["words_needed"] > 400
    unlabelled = [Batch(probe[0].x, None, n)]
    res = choose_float_nodes(["x", "y"], make, "volo_d2", unlabelled, ref, QuantBudget(max_disagreement=0.01))
    assert res["float_nodes"] == ["x", "y"] and res["budget"]["criterion"] == "disagreement"
    assert "accuracy_drop" not in res["final"]


def test_paired_interval_counts_discordant_words_and_their_uncertainty():
    f = np.array([True] * 90 + [False] * 10)
    same = paired_drop(f, f)  # no discordant word: Tango's bound, d / (1 - d) = z^2 / n
    assert same["drop"] == 0 and same["interval"] == pytest.approx([-0.03699, 0.03699], abs=1e-4)
    q = f.copy()
    q[:4] = False  # 4 lost, none gained: 4 points, but McNemar's exact test cannot exclude zero at 95 %
    r = paired_drop(f, q)
    assert r["drop"] == pytest.approx(0.04) and r["lost"] == 4 and r["gained"] == 0
    assert r["interval"][0] < 0  # the exact conditional end: 2 * 0.5**4 > 0.05
    assert r["interval"][1] == pytest.approx(0.09837, abs=1e-4)  # unconditional: 4 lost in 100 may be 10 in truth
    q[:10] = False  # 10 lost: now beyond noise (exact: 2 * 0.5**10 < 0.05)
    assert paired_drop(f, q)["interval"][0] > 0
    # one gained word: the conditional interval alone would bound the drop by 0.95/n (under one word); the
    # unconditional one keeps about the width of the no-discordance case around the point estimate -1 point
    one = f.copy()
    one[95] = True
    assert paired_drop(f, one)["interval"][1] == pytest.approx(-0.01 + 0.037, abs=0.002)
    # Clopper-Pearson against known values: 0/10 -> [0, 0.3085], 5/10 -> [0.1871, 0.8129]
    assert clopper_pearson(0, 10)[1] == pytest.approx(0.30850, abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.18709, 0.81291), abs=1e-4)


def test_tango_interval_ends_are_score_roots_and_cover():
    """Each end is where the score statistic, with the gained rate re-fitted by brute-force maximum likelihood
    under that difference, equals -+z; and on simulated paired probes the interval covers the true drop about 95 %
    of the time."""
    import math

    lost, gained, n = 7, 2, 300
    lo, hi = tango_interval(lost, gained, n)
    for d, sign in ((lo, 1), (hi, -1)):
        qs = np.linspace(max(0.0, -d) + 1e-9, (1 - d) / 2 - 1e-9, 200001)
        ll = lost * np.log(qs + d) + gained * np.log(qs) + (n - lost - gained) * np.log(1 - 2 * qs - d)
        qm = qs[np.argmax(ll)]
        t = (lost - gained - n * d) / math.sqrt(n * (2 * qm + d * (1 - d)))
        assert t == pytest.approx(sign * 1.959964, abs=2e-3)
    rng = np.random.default_rng(0)
    p_lost, p_gained, n, trials = 0.02, 0.01, 250, 1500
    counts = rng.multinomial(n, [p_lost, p_gained, 1 - p_lost - p_gained], size=trials)
    covered = sum(a <= p_lost - p_gained <= b for a, b in (tango_interval(int(x), int(y), n) for x, y, _ in counts))
    assert 0.93 <= covered / trials <= 0.975


def test_noise_alone_does_not_keep_a_layer_float_and_the_probe_size_is_checked():
    """On 500 items: 'hurts' breaks 30 right answers, 'harmless' changes nothing, 'noisy' loses 5 and gains 2
    (net 0.6 points: over the 0.5-point budget as a point estimate, but not beyond noise). Only 'hurts' is kept
    float; the verdict says the rest was missed within noise and the build asks for a bigger probe."""
    n = 500
    labels, first0 = _class_probe(n, 400)
    ref = [_class_logits(first0, n)]
    probe = [Batch(np.zeros((n, 3, 2, 2), np.float32), None, n, labels)]
    edits = {"hurts": {k: _cls(k, 1, n) for k in range(100, 130)}, "harmless": {},
             "noisy": {**{k: _cls(k, 1, n) for k in range(200, 205)}, 400: _cls(400, 0, n), 401: _cls(401, 0, n)}}
    make = _fake_quantiser(first0, edits, n)

    logs = []
    budget = QuantBudget(max_accuracy_drop=0.005)
    res = choose_float_nodes(list(edits), make, "volo_d2", probe, ref, budget, logs.append)
    assert res["float_nodes"] == ["hurts"] and sorted(res["quantized_nodes"]) == ["harmless", "noisy"]
    assert res["final"]["accuracy_drop"] == pytest.approx(0.006) and not res["budget_met"]
    assert res["verdict"] == "missed within noise"
    assert not budget.harmful(res["sensitivity_alone_int8"]["noisy"])
    assert budget.harmful(res["sensitivity_alone_int8"]["hurts"])
    check = res["probe_check"]
    assert not check["enough"] and check["words_needed"] > n and check["probe_words"] == n
    assert any("needs about" in line for line in logs)
    # the same search with the old point-estimate rule would have kept 'noisy' float as well: the interval is what
    # stops it
    assert res["sensitivity_alone_int8"]["noisy"]["accuracy_drop"] > budget.max_accuracy_drop


def test_choose_float_nodes_keeps_the_most_sensitive_until_the_budget_is_met():
    """Fake layers with known errors: 'c' hurts most, then 'a'; the budget needs both kept in float."""
    cost = {"a": 0.02, "b": 0.005, "c": 0.05}
    ref = [np.ones((3, 2, 5), np.float32)]
    probe = [Batch(np.zeros((2, 1, 32, 8), np.float32), np.array([8, 8]), 2)]

    def make(q):
        err = sum(cost[n] for n in q)
        return lambda x: ref[0] * (1 + err)

    res = choose_float_nodes(list(cost), make, "crnn", probe, ref, QuantBudget(max_disagreement=1.0, max_rel_l2=0.01))
    assert res["float_nodes"] == ["c", "a"] and res["quantized_nodes"] == ["b"] and res["budget_met"]
    assert res["all_int8"]["rel_l2"] == pytest.approx(0.075, rel=1e-5)
    assert res["final"]["rel_l2"] == pytest.approx(0.005, rel=1e-5)
    assert [s["float_nodes"] for s in res["steps"]] == [[], ["c"], ["c", "a"]]


def test_many_candidates_are_measured_in_contiguous_groups():
    """40 fake layers, only 'l37' hurts: with max_units 8 the search measures 8 groups of 5, keeps the group that
    holds l37 float and quantises the other 35 layers."""
    cands = [f"l{i:02d}" for i in range(40)]
    ref = [np.ones((3, 2, 5), np.float32)]
    probe = [Batch(np.zeros((2, 1, 32, 8), np.float32), np.array([8, 8]), 2)]
    calls = []

    def make(q):
        calls.append(len(q))
        return lambda x: ref[0] * (1 + (0.05 if "l37" in q else 0.0) + 0.0001 * len(q))

    res = choose_float_nodes(cands, make, "crnn", probe, ref, QuantBudget(max_disagreement=1.0, max_rel_l2=0.01),
                             max_units=8)
    assert len(res["units"]) == 8 and all(len(g) == 5 for g in res["units"].values())
    assert res["float_units"] == ["l35 .. l39 (5 layers)"] and res["float_nodes"] == [f"l{i}" for i in range(35, 40)]
    assert len(res["quantized_nodes"]) == 35 and res["budget_met"]
    assert len(calls) == 1 + 8 + 1  # all int8, each group alone, then with the worst group float


def test_precision_advice_follows_what_the_cpu_computes_natively():
    from deployzoo.engines.manifest import precision_advice

    epyc = {"avx2", "avx512f", "avx512_vnni", "avx512_bf16"}  # no AMX
    xeon = epyc | {"amx_bf16", "amx_int8", "avx512_fp16"}
    old = {"avx2"}
    assert "no AMX" in precision_advice("force_bfloat16", "openvino", epyc)
    assert "pays less than int8" in precision_advice("force_bfloat16", "openvino", epyc)  # measured 646 vs 935
    assert "emulated" in precision_advice("force_bfloat16", "openvino", {"avx2", "avx512_vnni"})
    assert precision_advice("force_bfloat16", "openvino", xeon) is None
    assert "will not pay" in precision_advice("force_float16", "openvino", xeon)  # measured 0.63x f32 there
    assert precision_advice("qint8_mixed_float16", "onnxruntime", epyc) is None
    assert "no VNNI" in precision_advice("qint8_mixed_float16", "onnxruntime", old)
    assert precision_advice("force_float32", "openvino", old) is None
    assert precision_advice("force_bfloat16", "aoti", epyc) is None  # GPU engines: not a CPU question
