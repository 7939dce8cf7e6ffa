"""OpenVINO backend (CPU). Optional: ``pip install deployzoo[openvino]`` (openvino + nncf).

- force_float32: IR with f32 weights, compiled with ``INFERENCE_PRECISION_HINT=f32``. The hint is always set:
  on CPUs with AMX/avx512_bf16 OpenVINO's *default* is bf16, so an unset hint would silently run bf16.
- force_float16 / force_bfloat16: ``INFERENCE_PRECISION_HINT=f16`` / ``bf16`` (f16 IR weights for f16). Built only
  when the CPU reports the capability (``OPTIMIZATION_CAPABILITIES`` has FP16 / BF16, i.e. avx512_fp16 or AMX-FP16 /
  avx512_bf16 or AMX-BF16); otherwise the build is refused, because OpenVINO would quietly run f32. What each layer
  really runs in (``runtimePrecision`` of the compiled model) is recorded in the manifest: layers without a
  half-precision kernel stay f32 (e.g. the LSTM under f16 on OpenVINO 2026).
- qint8_mixed_float16: NNCF post-training quantisation (``nncf.quantize``) calibrated on real images through the
  inference pre-processing; the layers kept in float (``ignored_scope``) and the preset are chosen by measured
  sensitivity on held-out images (``choose_float_nodes``), as for ONNX Runtime. The float parts (the LSTMs, any
  layer the budget keeps float) run at the ``float_precision`` option (``float_parts_hint``): by default bf16 where
  the CPU computes bf16 natively, else f32; f16 or bf16 make it really "mixed float16/bfloat16". The budget measures
  the engine as it will run, float parts included, against the f32 model.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from deployzoo.errors import EngineError

ENTRY = "model.xml"
HINTS = {"force_float32": "f32", "force_float16": "f16", "force_bfloat16": "bf16"}
CAPABILITY = {"f16": "FP16", "bf16": "BF16"}
HEAVY = ("Convolution", "FullyConnected", "RNNSeq", "RNNCell", "MatMul", "Deconvolution", "GroupConvolution")
QUANT_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul", "LSTMSequence",
               "GRUSequence")
PRESETS = ("performance", "mixed")
INSTALL = "pip install deployzoo[openvino]  (or: pip install openvino nncf)"


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise EngineError(f"the openvino backend is not installed: {INSTALL}") from None
    return ov


def _nncf():
    try:
        import nncf
    except ImportError:
        raise EngineError(f"int8 with the openvino backend needs NNCF: {INSTALL}") from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def capabilities() -> list[str]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES on this machine (FP32, FP16, BF16, INT8, ...)."""
    return list(_ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _require_hint(hint: str, where: str) -> None:
    caps = capabilities()
    if hint in CAPABILITY and CAPABILITY[hint] not in caps:
        raise EngineError(
            f"{where}: this CPU has no native {hint} support in OpenVINO (OPTIMIZATION_CAPABILITIES: {', '.join(caps)}); "
            f"with INFERENCE_PRECISION_HINT={hint} OpenVINO would quietly compute in f32. Build fp32 or int8 instead "
            f"({hint} needs {'avx512_fp16 or AMX-FP16' if hint == 'f16' else 'avx512_bf16 or AMX-BF16'})")


def float_parts_hint(option: str | None, caps: list[str]) -> str:
    """INFERENCE_PRECISION_HINT for the layers an int8 engine leaves in float. ``auto`` (the default): bf16 where
    OpenVINO reports native bf16 (BF16 capability: avx512_bf16 or AMX-BF16), else f32. OpenVINO's CPU plugin runs
    LSTMSequence in float even when NNCF quantised its inputs. On an AMD EPYC with avx512_bf16 and no AMX the gain
    measured side by side is small on dynamic shapes (about 2 %) and large with a fixed batch (fixed-batch int8
    engine 1173 images/s with bf16 float parts, 942 with f32; README, int8 budget table); ``f32`` by hand runs them
    in f32, as on a CPU without native bf16."""
    opt = {None: "auto", "fp32": "f32", "fp16": "f16"}.get(option, option)
    if opt == "auto":
        return "bf16" if "BF16" in caps else "f32"
    if opt not in ("f32", "f16", "bf16"):
        raise EngineError(f"float precision '{option}' of an int8 engine: use auto, f32, bf16 or f16")
    return opt


def runtime_precisions(compiled) -> dict[str, dict[str, int]]:
    """{layer type: {runtime precision: count}} of the heavy layers of a compiled model, as the CPU plugin runs it."""
    cnt: Counter = Counter()
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        layer = info["layerType"].astype(str) if "layerType" in info else op.get_type_name()
        if layer in HEAVY:
            prec = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            cnt[(layer, prec)] += 1
    out: dict[str, dict[str, int]] = {}
    for (layer, prec), n in sorted(cnt.items()):
        out.setdefault(layer, {})[prec] = n
    return out


class OvRunner:
    """(B, C, H, W) float32 -> first output; one compiled model and infer request per input-shape kind.

    ``static_shape``: the one input shape a fixed-batch engine always receives (its batch, and the width of a
    fixed-width pre-processing). Inputs of that shape run on a copy of the model compiled for it (OpenVINO's CPU
    kernels for fully static shapes run faster than for dynamic ones), any other shape on the dynamic model,
    compiled on first use. A row's output never depends on the other rows' content or its position (tested)."""

    name = "openvino"

    def __init__(self, model, config: dict, threads: int | None = None,
                 static_shape: "list[int] | None" = None) -> None:
        ov = _ov()
        self._cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, **config}
        if threads:
            self._cfg["INFERENCE_NUM_THREADS"] = int(threads)
        self._core = ov.Core()
        self._model = self._core.read_model(str(model)) if isinstance(model, (str, Path)) else model
        self.static_shape = tuple(int(v) for v in static_shape) if static_shape else None
        self._dynamic = None
        self._static = None
        if self.static_shape:
            static = self._model.clone()
            static.reshape({static.inputs[0].get_any_name(): ov.PartialShape(list(self.static_shape))})
            self._static = self._compile(static)
        else:
            self._dynamic = self._compile(self._model)
        self.compiled = (self._static or self._dynamic)[0]
        self.threads = threads

    def _compile(self, model) -> tuple:
        compiled = self._core.compile_model(model, "CPU", self._cfg)
        return compiled, compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._static is not None and x.shape == self.static_shape:
            compiled, request = self._static
        else:
            if self._dynamic is None:
                self._dynamic = self._compile(self._model)
            compiled, request = self._dynamic
        res = request.infer({0: x})
        return np.array(res[compiled.output(0)], dtype=np.float32, copy=True)  # the request reuses its buffers


def static_shape(spec: dict, preprocess: dict | None) -> list[int] | None:
    """The single input shape of a fixed-batch engine: its batch, and for a text model with fixed-width
    pre-processing (CRNN stretched to 100x32) that width; None when any axis still varies."""
    if not spec.get("fixed_batch"):
        return None
    pre = preprocess or {}
    shape = [pre["width"] if d == "width" and not pre.get("keep_ratio") and pre.get("width") else d
             for d in spec["shape"]]
    return [int(d) for d in shape] if all(isinstance(d, int) for d in shape) else None


def load(path: Path, manifest: dict, threads: int | None = None) -> OvRunner:
    opts = manifest.get("backend_options", {})
    config = dict(opts.get("config", {}))
    hint = config.get("INFERENCE_PRECISION_HINT", "f32")
    if manifest.get("precision") == "qint8_mixed_float16" and CAPABILITY.get(hint) not in (None, *capabilities()):
        # an int8 engine built where its float parts ran in bf16/f16: here they run f32, as accurate or more so
        warnings.warn(f"engine {path}: its float layers were built to run in {hint}, which this CPU does not compute "
                      f"natively; running them in f32 (int8 layers unchanged; speed will differ from the manifest)",
                      stacklevel=2)
        config["INFERENCE_PRECISION_HINT"] = hint = "f32"
    _require_hint(hint, f"engine {path}")
    try:
        return OvRunner(path / manifest["entry"], config, threads, opts.get("static_shape"))
    except RuntimeError as e:
        raise EngineError(f"engine {path}: OpenVINO cannot compile {manifest['entry']} ({str(e).splitlines()[0]})")


# -------------------------------------------------------------------------------------------------- build

def build(ctx) -> dict:
    ov = _ov()
    int8 = ctx.precision == "qint8_mixed_float16"
    caps = capabilities()
    hint = float_parts_hint(ctx.options.get("float_precision"), caps) if int8 else HINTS[ctx.precision]
    _require_hint(hint, f"build {ctx.model} openvino {ctx.short}")
    from deployzoo.export import preprocess_params, read_onnx_metadata

    fixed_shape = static_shape(ctx.spec, preprocess_params(ctx.model, ctx.meta)["preprocess"])
    if int8:
        ctx.log(f"float layers of the int8 engine run in {hint}"
                + (" (native bf16 on this CPU; --float-precision f32 to keep them f32)" if hint == "bf16" else ""))
    with tempfile.TemporaryDirectory(prefix="deployzoo-ov-") as td:
        onnx_path = Path(td) / "fp32.onnx"
        export = ctx.export_onnx(onnx_path)
        model = ov.convert_model(str(onnx_path))
        config = {"INFERENCE_PRECISION_HINT": hint}
        quant = None
        if int8:
            model, quant = _int8(ctx, model, hint, fixed_shape)
        for k, v in read_onnx_metadata(onnx_path).items():  # the ONNX metadata_props travel into the IR's rt_info
            model.set_rt_info(v if isinstance(v, str) else json.dumps(v), ["deployzoo", k])
        ov.save_model(model, str(ctx.dir / ENTRY), compress_to_fp16=ctx.precision == "force_float16")
    run = OvRunner(ctx.dir / ENTRY, config, ctx.threads, fixed_shape)
    computes = runtime_precisions(run.compiled)
    ctx.log(f"runtime precisions with hint {hint}: {computes}")
    tol = {"f32": (1e-4, 1e-5), "f16": (5e-2, 1e-2), "bf16": (2e-1, 5e-2)}[hint] if not int8 else None
    parity = ctx.parity_check(run, f"openvino {ctx.short} engine", *(tol or (None, None)),
                              raise_on_fail=ctx.precision == "force_float32")
    return {
        "entry": ENTRY,
        "quantization": quant,
        "computes": computes,
        "export": export,
        "parity": parity,
        "backend_options": {"device": "CPU", "config": {**config, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1},
                            "static_shape": fixed_shape,
                            "cpu_capabilities": caps, "threads_at_build": ctx.threads,
                            "default_precision_hint_here": _type_name(ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT"))},
    }


def _int8(ctx, model, hint: str, fixed_shape: list[int] | None):
    nncf = _nncf()
    from deployzoo.engines.quant import choose_float_nodes, measure, summary_lines

    cands = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in QUANT_TYPES]
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    ds = nncf.Dataset([b.x for b in ctx.calib])
    n_images = sum(b.n for b in ctx.calib)
    presets = {"performance": nncf.QuantizationPreset.PERFORMANCE, "mixed": nncf.QuantizationPreset.MIXED}
    wanted = ctx.options.get("preset", "auto" if ctx.options.get("calib_method", "auto") == "auto" else "performance")
    tried = list(PRESETS) if wanted == "auto" else [wanted]
    for p in tried:
        if p not in presets:
            raise EngineError(f"unknown NNCF preset '{p}': use auto, {', '.join(PRESETS)}")
    reference = ctx.reference(OvRunner(model, {"INFERENCE_PRECISION_HINT": "f32"}, ctx.threads))
    config = {"INFERENCE_PRECISION_HINT": hint}

    def quantize(preset: str, q: set[str]):
        if not q:  # every layer float: the float model itself
            return model
        ignored = nncf.IgnoredScope(names=[c for c in cands if c not in q], validate=False)
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars, once per trial
            return nncf.quantize(model, ds, preset=presets[preset], subset_size=max(1, n_images),
                                 ignored_scope=ignored, fast_bias_correction=True)

    t0 = time.perf_counter()
    results = {}
    for p in tried:
        t = time.perf_counter()
        run = OvRunner(quantize(p, set(cands)), config, ctx.threads, fixed_shape)
        results[p] = {**measure(ctx.model, run, ctx.probe, reference), "seconds": round(time.perf_counter() - t, 2)}
        ctx.log(f"NNCF preset {p}: all layers int8 -> {ctx.budget.describe(results[p])}")
    preset = min(tried, key=lambda p: ctx.budget.error_key(results[p]))
    choice = choose_float_nodes(cands, lambda q: OvRunner(quantize(preset, q), config, ctx.threads, fixed_shape),
                                ctx.model, ctx.probe, reference, ctx.budget, ctx.log, ctx.options.get("measure_each"))
    final = quantize(preset, set(choice["quantized_nodes"]))
    ctx.log(f"int8 layers: {len(choice['quantized_nodes'])} of {len(cands)}; float: {choice['float_nodes'] or 'none'}")
    for line in summary_lines(choice, ctx.budget):
        ctx.log(line)
    return final, {"scheme": "NNCF post-training quantisation (nncf.quantize, fast bias correction)",
                   "preset": preset, "presets_tried": results, "weights": "int8 symmetric per-channel",
                   "activations": "int8 " + ("symmetric" if preset == "performance" else "asymmetric"),
                   "calibration": ctx.calib_info, "ignored_scope": choice["float_nodes"], **choice,
                   "node_types": {c: types[c] for c in cands}, "float_parts_dtype": hint,
                   "search_seconds": round(time.perf_counter() - t0, 2)}


def _type_name(t) -> str:
    return t.to_string() if hasattr(t, "to_string") else str(t)
