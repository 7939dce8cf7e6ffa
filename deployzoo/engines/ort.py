"""ONNX Runtime backend (CPU execution provider).

- force_float32: the exported ONNX model, graph optimisation level ALL at load.
- qint8_mixed_float16: static int8 QDQ (``quantize_static``): per-channel symmetric int8 weights, asymmetric uint8
  activations (int8 x uint8 is what the VNNI/AMX kernels of ORT's MLAS want; ``reduce_range`` only on CPUs without
  VNNI), calibrated on real images through the inference pre-processing. The calibration method (MinMax, Entropy,
  Percentile) and the layers kept in float are chosen by measurement on held-out images (``choose_float_nodes``).
  ORT's static QDQ has no int8 LSTM, so the BiLSTM always runs in float. The float parts run in float32: ORT's CPU
  EP has no fp16 kernels for them, so "mixed_float16" means "mixed float" here (recorded in the manifest).
- force_float16: converted to fp16, then checked: if the CPU EP would compute the heavy ops (Conv, MatMul, LSTM)
  in fp32 behind inserted Cast nodes (it does in ORT 1.x on x86), the build is refused with that measurement
  instead of shipping an "fp16" engine that silently runs fp32 plus casts. Use OpenVINO for real fp16/bf16.

At build time an ORT-optimised copy (level EXTENDED, portable across CPUs) is saved when it measurably speeds up
session creation; the loader uses it only with the same onnxruntime version.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from deployzoo.errors import EngineError

ENTRY = "model.onnx"
OPTIMIZED = "model.ort-opt.onnx"
HEAVY_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "Attention")
QUANT_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
CALIB_METHODS = ("minmax", "entropy", "percentile")


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise EngineError("the onnxruntime backend needs onnxruntime: pip install onnxruntime") from None
    return ort


def session_options(threads: int | None = None, level: str = "all", optimized_path: str | None = None):
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if optimized_path:
        so.optimized_model_filepath = optimized_path
    if os.environ.get("DEPLOYZOO_ORT_SPIN", "1") == "0":  # deployzoo serve: idle threads sleep, not spin, so the
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # event loop and parsing get the cores
    so.log_severity_level = 3
    return so


class OrtRunner:
    """(B, C, H, W) float32 -> first output, on one InferenceSession."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = _ort()
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.threads = threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def load(path: Path, manifest: dict, threads: int | None = None) -> OrtRunner:
    ort = _ort()
    opts = manifest.get("backend_options", {})
    f = opts.get("load_file", manifest["entry"])
    if f != manifest["entry"] and opts.get("optimized_with_onnxruntime") != ort.__version__:
        f = manifest["entry"]  # an ORT-optimised file is tied to the ORT version that wrote it
    try:
        return OrtRunner(path / f, threads)
    except Exception as e:  # noqa: BLE001 - ORT raises its own types
        raise EngineError(f"engine {path}: onnxruntime {ort.__version__} cannot load {f} ({str(e).splitlines()[0]})")


# -------------------------------------------------------------------------------------------------- build

def build(ctx) -> dict:
    ort = _ort()
    with tempfile.TemporaryDirectory(prefix="deployzoo-ort-") as td:
        td = Path(td)
        fp32 = td / "fp32.onnx"
        export = ctx.export_onnx(fp32)
        quant = None
        if ctx.precision == "force_float32":
            fp32.replace(ctx.dir / ENTRY)
        elif ctx.precision == "force_float16":
            _float16(ctx, fp32, td)
        else:
            quant = _int8(ctx, fp32, td)
    load_file, load_times = _maybe_optimized(ctx)
    parity = ctx.parity_check(OrtRunner(ctx.dir / load_file, ctx.threads), f"onnxruntime {ctx.short} engine",
                              raise_on_fail=ctx.precision == "force_float32")
    return {
        "entry": ENTRY,
        "quantization": quant,
        "computes": _computes(ctx.precision),
        "export": export,
        "parity": parity,
        "backend_options": {"provider": "CPUExecutionProvider", "graph_optimization_level": "ORT_ENABLE_ALL",
                            "load_file": load_file, "optimized_with_onnxruntime": ort.__version__,
                            "session_create_seconds": load_times, "threads_at_build": ctx.threads},
    }


def _computes(precision: str) -> str:
    if precision == "force_float32":
        return "float32 everywhere"
    return ("int8 x uint8 integer kernels for the quantised Conv/MatMul (QDQ pairs fused by ORT); float32 for the "
            "layers kept float, the LSTM (no int8 LSTM in ORT static QDQ) and the rest (no fp16 CPU kernels)")


def _maybe_optimized(ctx) -> tuple[str, dict]:
    """Save an ORT-optimised copy (EXTENDED: no CPU-specific layouts) and keep it if it loads measurably faster
    (by 20 % and 50 ms at least: it doubles the engine's size on disk)."""
    ort = _ort()
    src, opt = ctx.dir / ENTRY, ctx.dir / OPTIMIZED
    ort.InferenceSession(str(src), session_options(ctx.threads, "extended", str(opt)), providers=["CPUExecutionProvider"])

    def create(p: Path) -> float:
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            ort.InferenceSession(str(p), session_options(ctx.threads), providers=["CPUExecutionProvider"])
            best = min(best, time.perf_counter() - t)
        return best

    t_src, t_opt = create(src), create(opt)
    times = {ENTRY: round(t_src, 4), OPTIMIZED: round(t_opt, 4)}
    if t_opt < 0.8 * t_src and t_src - t_opt > 0.05:  # worth a second copy of the weights on disk
        ctx.log(f"ORT-optimised copy loads in {t_opt * 1e3:.0f} ms vs {t_src * 1e3:.0f} ms: kept")
        return OPTIMIZED, times
    opt.unlink()
    ctx.log(f"ORT-optimised copy loads in {t_opt * 1e3:.0f} ms vs {t_src * 1e3:.0f} ms: not worth keeping")
    return ENTRY, times


def _float16(ctx, fp32: Path, td: Path) -> None:
    """Convert to fp16 and check what the CPU EP really computes; refuse when it would run fp32 behind casts."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    ort = _ort()
    m16 = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    p16, popt = td / "fp16.onnx", td / "fp16.opt.onnx"
    onnx.save(m16, str(p16))
    ort.InferenceSession(str(p16), session_options(ctx.threads, "basic", str(popt)), providers=["CPUExecutionProvider"])
    g = onnx.load(str(popt)).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    dtype.update({i.name: i.data_type for i in g.initializer})
    for n in g.node:  # Cast nodes ORT inserted in front of ops without an fp16 kernel say what the op gets
        if n.op_type == "Cast":
            dtype[n.output[0]] = next(a.i for a in n.attribute if a.name == "to")
    heavy = [n for n in g.node if n.op_type in HEAVY_OPS and len(n.input) > 1]
    in_fp16 = [n for n in heavy if dtype.get(n.input[1]) == onnx.TensorProto.FLOAT16]
    casts = sum(n.op_type == "Cast" for n in g.node)
    ctx.log(f"fp16 check: {len(in_fp16)} of {len(heavy)} heavy ops keep fp16 weights after ORT's CPU EP "
            f"placement, {casts} Cast nodes inserted")
    if len(in_fp16) < len(heavy):
        ops = sorted({n.op_type for n in heavy if n not in in_fp16})
        raise EngineError(
            f"force_float16 on onnxruntime {ort.__version__} CPU: the CPU execution provider has no float16 kernels "
            f"for {', '.join(ops)}; it would insert {casts} Cast nodes and compute {len(heavy) - len(in_fp16)} of "
            f"{len(heavy)} heavy ops in float32 (measured on the converted {ctx.model} graph), i.e. fp32 speed and "
            "accuracy plus conversion overhead. Not building a fake fp16 engine: use --backend openvino "
            "--precision fp16 or bf16 (real half-precision kernels on CPUs with avx512_fp16 / AMX), or "
            "--precision fp32 / int8 here")
    p16.replace(ctx.dir / ENTRY)


# ----------------------------------------------------------------------------------------------------- int8

class _Reader:
    """CalibrationDataReader over pre-processed batches; ``set_range`` serves a slice of them."""

    def __init__(self, batches, name: str) -> None:
        self.all, self.name = list(batches), name
        self.batches, self.i = self.all, 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1].x}

    def rewind(self) -> None:
        self.i = 0

    def set_range(self, start_index: int, end_index: int) -> None:
        """Serve batches [start_index, end_index) (quantize_static's strided calibration)."""
        self.batches, self.i = self.all[start_index:end_index], 0

    def __len__(self) -> int:
        return len(self.all)


@contextlib.contextmanager
def _quiet():
    """quantize_static logs every tensor on the root logger and prints histogram notes: silence both, then restore."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _has_vnni() -> bool:
    from deployzoo.host import host_info

    flags = set(host_info()["cpu_flags"])
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) or host_info()["machine"] in ("aarch64", "arm64")


def _quantizable_nodes(proto) -> list[tuple[str, str]]:
    """(name, op_type) of every node ORT's QDQ quantiser would touch: registered op types whose first input is a
    float tensor (compute ops and the data-movement ops between them; shape arithmetic is left out)."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry

    g = proto.graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}
    dtype.update({i.name: i.data_type for i in g.initializer})
    return [(n.name, n.op_type) for n in g.node
            if n.op_type in QDQRegistry and n.input and dtype.get(n.input[0]) == onnx.TensorProto.FLOAT]


def _int8(ctx, fp32: Path, td: Path) -> dict:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from deployzoo.engines.quant import choose_float_nodes, measure, summary_lines
    from deployzoo.export import INPUT_NAME

    pre = td / "pre.onnx"
    with _quiet():
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    proto = onnx.load(str(pre))
    for i, n in enumerate(proto.graph.node):  # nodes_to_quantize works by name: every node needs one
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    onnx.save(proto, str(pre))
    cands = _quantizable_nodes(proto)
    if not any(c[1] in QUANT_OPS for c in cands):
        raise EngineError(f"int8: {ctx.model} has no Conv/MatMul/Gemm nodes to quantise")
    vnni = _has_vnni() and not ctx.options.get("portable")  # portable: 7-bit weights, safe on CPUs without VNNI
    settings = {"format": "QDQ", "per_channel": True, "weight_type": "QInt8 (symmetric)",
                "activation_type": "QUInt8 (asymmetric)", "reduce_range": not vnni,
                "reduce_range_reason": "CPU has VNNI/AMX int8 dot products" if vnni else
                "--portable: 7-bit weights, no int16 saturation on CPUs without VNNI" if ctx.options.get("portable")
                else "no VNNI: 7-bit weights avoid int16 saturation"}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    wanted = ctx.options.get("calib_method", "auto")
    tried = list(CALIB_METHODS) if wanted == "auto" else [wanted]
    for m in tried:
        if m not in methods:
            raise EngineError(f"unknown calibration method '{m}': use auto, {', '.join(CALIB_METHODS)}")
    reference = ctx.reference(OrtRunner(fp32, ctx.threads))
    counter = [0]

    op_of = dict(cands)
    # compute ops are the candidates; the data-movement ops between them (MaxPool, Relu, Transpose, Reshape...) are
    # always offered to the quantiser, which gives them Q/DQ only where a neighbouring compute op is int8
    glue = {name for name, op in cands if op not in QUANT_OPS}
    cands = [name for name, op in cands if op in QUANT_OPS]

    def quantize(method: str, nodes: set[str], out: Path | None = None) -> Path:
        counter[0] += 1
        out = out or td / f"q{counter[0]}.onnx"
        reader = _Reader(ctx.calib, INPUT_NAME)
        cache = td / f"calib-{method}.json"
        if not nodes:  # every compute layer float: no quantisation at all (an empty list would mean "all")
            shutil.copyfile(pre, out)
            return out
        with _quiet():
            quantize_static(str(pre), str(out), None if cache.exists() else reader, quant_format=QuantFormat.QDQ,
                            per_channel=True, reduce_range=not vnni, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_quantize=sorted(nodes | glue),
                            calibrate_method=methods[method], calibration_cache_path=str(cache),
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                           "CalibPercentile": float(ctx.options.get("percentile", 99.999)),
                                           # merge statistics batch by batch: the histogram calibrators
                                           # otherwise keep every intermediate tensor of every batch
                                           "CalibStridedMinMax": 1})
        return out

    def runner(p: Path):
        return OrtRunner(p, ctx.threads)

    t0 = time.perf_counter()
    calib_results = {}
    for m in tried:
        t = time.perf_counter()
        calib_results[m] = {**measure(ctx.model, runner(quantize(m, set(cands))), ctx.probe, reference),
                            "seconds": round(time.perf_counter() - t, 2)}
        ctx.log(f"calibration {m}: all layers int8 -> {ctx.budget.describe(calib_results[m])}")
    method = min(tried, key=lambda m: ctx.budget.error_key(calib_results[m]))
    ctx.log(f"calibration method: {method} (lowest error on the held-out images)")

    choice = choose_float_nodes(cands, lambda q: runner(quantize(method, q)), ctx.model, ctx.probe,
                                reference, ctx.budget, ctx.log, ctx.options.get("measure_each"))
    final = quantize(method, set(choice["quantized_nodes"]), ctx.dir / ENTRY)
    lstm = _dynamic_lstm(ctx, final, td, runner, reference) if ctx.options.get("int8_lstm") else None
    if ctx.options.get("compact_lstm") and not (lstm or {}).get("kept"):
        lstm = _fp16_lstm_weights(ctx, final, runner, reference)
    g = onnx.load(str(final)).graph
    dq_out = {n.output[0] for n in g.node if n.op_type == "DequantizeLinear"}
    int8_nodes = [n.name for n in g.node if n.op_type in QUANT_OPS and n.input[0] in dq_out and n.input[1] in dq_out]
    if not int8_nodes:
        ctx.log("WARNING: the budget needs every layer in float; this int8 engine computes in float32")
    ctx.log(f"int8 layers: {len(int8_nodes)} of {len(cands)}; float: {choice['float_nodes'] or 'none'}")
    for line in summary_lines(choice, ctx.budget):
        ctx.log(line)
    return {"scheme": "static int8 QDQ (onnxruntime.quantization.quantize_static)", **settings,
            "calibration": {**ctx.calib_info, "method": method, "tried": calib_results},
            **choice, "node_types": {c: op_of[c] for c in cands}, "int8_nodes": int8_nodes,
            "lstm": lstm or {"scheme": "float32", "batch_invariant": True,
                             "why": "ORT static QDQ has no int8 LSTM kernel (--int8-lstm: dynamic int8 LSTM)"},
            "float_parts_dtype": "float32 (ORT's CPU EP has no fp16 kernels for them)",
            "search_seconds": round(time.perf_counter() - t0, 2)}


def _fp16_lstm_weights(ctx, final: Path, runner, reference) -> dict:
    """Store the float LSTM weights (W, R, B) as float16 initializers, each behind a Cast to float32 that ONNX
    Runtime folds when the session loads: about half the file, the same float32 compute, batch-invariant (unlike
    dynamic int8). Kept when the engine still meets the budget on the probe images."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deployzoo.engines.quant import measure

    before = final.stat().st_size
    m = onnx.load(str(final))
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    casts, done = [], set()
    for node in g.node:
        if node.op_type != "LSTM":
            continue
        for name in list(node.input[1:4]):
            t = inits.get(name)
            if t is None or name in done or t.data_type != TensorProto.FLOAT:
                continue
            arr = numpy_helper.to_array(t).astype(np.float16)
            g.initializer.remove(t)
            g.initializer.append(numpy_helper.from_array(arr, name + "_fp16"))
            casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=TensorProto.FLOAT,
                                          name=name + "_cast_fp32"))
            done.add(name)
    for c in reversed(casts):
        g.node.insert(0, c)
    out = final.with_name("lstm_fp16.onnx")
    onnx.save(m, str(out))
    res = measure(ctx.model, runner(out), ctx.probe, reference)
    info = {"scheme": "float32 compute, LSTM weights stored float16 (Cast folded at load)", "probe": res,
            "tensors": len(done), "bytes": out.stat().st_size, "bytes_float_lstm": before, "batch_invariant": True}
    if ctx.budget.met(res):
        out.replace(final)
        ctx.log(f"LSTM weights stored fp16: {ctx.budget.describe(res)}: kept ({before / 2**20:.1f} -> "
                f"{info['bytes'] / 2**20:.1f} MiB)")
        return {**info, "kept": True}
    out.unlink()
    ctx.log(f"LSTM weights stored fp16: {ctx.budget.describe(res)}: over the budget, kept float32")
    return {**info, "kept": False}


def _dynamic_lstm(ctx, final: Path, td: Path, runner, reference) -> dict:
    """LSTM weights to int8 with ORT's dynamic quantisation (``DynamicQuantizeLSTM``: int8 weights, activations
    quantised per call), on top of the static QDQ convolutions. Kept when the whole engine still meets the
    budget on the probe images; otherwise the LSTMs stay float32 and the manifest says why."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from deployzoo.engines.quant import measure

    out = td / "lstm_int8.onnx"
    with _quiet():
        quantize_dynamic(str(final), str(out), op_types_to_quantize=["LSTM"], weight_type=QuantType.QInt8)
    res = measure(ctx.model, runner(out), ctx.probe, reference)
    info = {"scheme": "dynamic int8 (onnxruntime quantize_dynamic, DynamicQuantizeLSTM)", "probe": res,
            "bytes": out.stat().st_size, "bytes_float_lstm": final.stat().st_size}
    if ctx.budget.met(res):
        shutil.copyfile(out, final)
        ctx.log(f"LSTM int8 (dynamic): {ctx.budget.describe(res)}: kept ({info['bytes_float_lstm'] / 2**20:.1f} -> "
                f"{info['bytes'] / 2**20:.1f} MiB); note: not batch-invariant")
        return {**info, "kept": True, "batch_invariant": False,
                "why_not_batch_invariant": "dynamic quantisation scales each call's LSTM inputs by the range of the "
                                           "whole batch: a word's logits depend on its batch neighbours"}
    ctx.log(f"LSTM int8 (dynamic): {ctx.budget.describe(res)}: over the budget, LSTMs stay float32")
    return {**info, "kept": False}
