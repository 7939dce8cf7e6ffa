"""Build and open engines: ``build_engine(model, precision, backend) -> engine dir``, ``open_engine(dir) -> Engine``.

Precisions (the seeds' names, with aliases):

| name | aliases | onnxruntime (CPU) | openvino (CPU) | aoti (NVIDIA GPU) |
| --- | --- | --- | --- | --- |
| force_float32 | fp32, f32 | yes | yes (hint f32) | yes |
| force_float16 | fp16, f16 | refused when the CPU EP has no fp16 kernels (measured at build) | hint f16 | yes |
| force_bfloat16 | bf16 | no | hint bf16 | yes |
| qint8_mixed_float16 | int8, qint8 | static QDQ int8, float parts fp32 | NNCF int8 | no |

int8 builds calibrate on real images (``calib_data``) through the same pre-processing as inference, then choose
which layers stay in float by measured sensitivity against an accuracy budget (``engines.quant``); the
choice and the numbers go into the manifest.

Each backend module (``ort``, ``openvino``, ``aoti``) has ``build(ctx: BuildContext) -> dict`` (writes its files
into ``ctx.dir``, returns manifest entries) and ``load(path, manifest, threads) -> runner``; it is imported only
when used.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deployzoo.engines import BACKENDS, SHORT, backend_module
from deployzoo.engines.calib import (CALIB_COUNT, PROBE_COUNT, Batch, calib_batch, make_batches, sample_items, spread,
                                     uniform_batches)
from deployzoo.engines.quant import MAX_ACCURACY_DROP, MAX_DISAGREEMENT, QuantBudget
from deployzoo.errors import EngineError
from deployzoo.specs import is_text

PRECISIONS = ("force_float32", "force_float16", "force_bfloat16", "qint8_mixed_float16")
PRECISION_ALIASES = {"fp32": "force_float32", "f32": "force_float32", "float32": "force_float32",
                     "fp16": "force_float16", "f16": "force_float16", "float16": "force_float16",
                     "bf16": "force_bfloat16", "bfloat16": "force_bfloat16",
                     "int8": "qint8_mixed_float16", "qint8": "qint8_mixed_float16", "i8": "qint8_mixed_float16"}

BACKEND_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "aotinductor": "aoti",
                   "pt2": "aoti", "inductor": "aoti"}
SUPPORTED = {
    "onnxruntime": ("force_float32", "force_float16", "qint8_mixed_float16"),
    "openvino": ("force_float32", "force_float16", "force_bfloat16", "qint8_mixed_float16"),
    "aoti": ("force_float32", "force_float16", "force_bfloat16"),
}



def normalize_precision(precision: str, backend: str | None = None) -> str:
    p = PRECISION_ALIASES.get(precision.lower(), precision.lower())
    if p not in PRECISIONS:
        raise EngineError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)} "
                          f"(or {', '.join(sorted(PRECISION_ALIASES))})")
    if backend is not None and p not in SUPPORTED[backend]:
        ok = ", ".join(f"{x} ({SHORT[x]})" for x in SUPPORTED[backend])
        other = [b for b, ps in SUPPORTED.items() if p in ps]
        raise EngineError(f"backend {backend} does not build {p}; it builds {ok}"
                          + (f"; {p} is available with --backend {' or '.join(other)}" if other else ""))
    return p


def normalize_backend(backend: str) -> str:
    b = BACKEND_ALIASES.get(backend.lower(), backend.lower())
    if b not in BACKENDS:
        raise EngineError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    return b


# ---------------------------------------------------------------------------------------------- building

@dataclass
class BuildContext:
    """Everything a backend needs to build one engine into ``dir``."""

    model: str
    precision: str
    backend: str
    module: Any  # float32 nn.Module in eval mode
    meta: dict
    spec: dict  # input spec (deployzoo.export.input_spec)
    dir: Path  # the temporary engine directory being written
    threads: int | None = None
    calib: list[Batch] = field(default_factory=list)
    probe: list[Batch] = field(default_factory=list)
    calib_info: dict = field(default_factory=dict)
    budget: QuantBudget = field(default_factory=QuantBudget)
    options: dict = field(default_factory=dict)
    progress: bool = True
    opset: int = 17

    def log(self, msg: str) -> None:
        if self.progress:
            print(f"[build {self.model} {self.backend} {SHORT[self.precision]}] {msg}", file=sys.stderr, flush=True)

    _parity: tuple | None = field(default=None, repr=False, init=False)

    @property
    def short(self) -> str:
        return SHORT[self.precision]

    @property
    def input_size(self) -> tuple[int, int] | None:
        """(H, W) when the engine's height and width are fixed (VOLO, OCRNet), else None (CRNN: dynamic width)."""
        hw = self.spec["shape"][2:]
        return tuple(hw) if all(isinstance(d, int) for d in hw) else None

    def parity(self) -> tuple[list[tuple[str, np.ndarray]], list[np.ndarray]]:
        """Parity inputs (seeded shapes + real images) and their PyTorch outputs, computed once per build."""
        if self._parity is None:
            from deployzoo.export import parity_inputs, run_torch, torch_threads

            inputs = parity_inputs(self.model, self.meta, None, self.spec)
            with torch_threads(self.threads):
                self._parity = (inputs, [run_torch(self.module, x) for _, x in inputs])
        return self._parity

    def parity_check(self, run, what: str, atol: float | None = None, rtol: float | None = None,
                     raise_on_fail: bool = True) -> list[dict]:
        """Check ``run`` against PyTorch on the parity inputs; logs the worst numbers."""
        from deployzoo import export

        inputs, refs = self.parity()
        rows = export.parity_check(run, self.module, inputs, export.ATOL if atol is None else atol,
                                   export.RTOL if rtol is None else rtol, raise_on_fail, what, refs)
        self.log(f"{what} vs PyTorch: max |diff| {max(r['max_abs_diff'] for r in rows):.3g}, rel L2 "
                 f"{max(r['rel_l2'] for r in rows):.3g}, argmax agreement {min(r['argmax_agreement'] for r in rows):.2%}"
                 " (worst input)")
        return rows

    def export_onnx(self, path: Path) -> dict:
        """Export the float model to ONNX at ``path`` and check it in ONNX Runtime (fp32); returns the report."""
        from deployzoo.export import export_onnx

        rep = export_onnx(self.model, path, module=self.module, meta=self.meta,
                          shape_mutable=self.spec["fixed_batch"] is None, batch_size=self.spec["fixed_batch"],
                          opset=self.opset, parity=self.parity(), input_size=self.input_size)
        self.log(f"exported ONNX opset {self.opset}, parity vs PyTorch max |diff| {rep.max_abs_diff:.2e}")
        return {"max_abs_diff": rep.max_abs_diff, "inputs": len(rep.parity), "opset": self.opset,
                "exporter": "torch.onnx TorchScript exporter (see deployzoo.export)"}

    def reference(self, run: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
        """Float outputs on the probe batches: ``run`` (a parity-checked fp32 engine, fast) or PyTorch."""
        from deployzoo.export import run_torch, torch_threads

        with torch_threads(self.threads):
            return [run(b.x) if run is not None else run_torch(self.module, b.x) for b in self.probe]


def default_out(model: str, backend: str, precision: str) -> Path:
    return Path("engines") / f"{model}-{backend}-{SHORT[precision]}"


def build_engine(model: str, precision: str, backend: str = "onnxruntime",
                 checkpoint: str | os.PathLike | None = None, calib_data: str | os.PathLike | None = None,
                 calib_count: int = CALIB_COUNT, shape_mutable: bool = True, batch_size: int | None = None,
                 out: str | os.PathLike | None = None, random_weights: bool = False, threads: int | None = None,
                 progress: bool = True, *, probe_count: int | None = None,
                 max_accuracy_drop: float | None = MAX_ACCURACY_DROP,
                 max_disagreement: float | None = MAX_DISAGREEMENT, max_rel_l2: float | None = None,
                 calib_method: str = "auto", preprocess: Callable | None = None, opset: int = 17,
                 input_size: Sequence[int] | None = None, options: dict | None = None) -> Path:
    """Build an engine directory (model file(s) + manifest.json) and return its path.

    Args:
        model: a registered model name (``deployzoo models``).
        precision: force_float32 / force_float16 / force_bfloat16 / qint8_mixed_float16 or fp32/fp16/bf16/int8.
        backend: onnxruntime (default), openvino, aoti.
        checkpoint: weights file (default: shipped weights); ``random_weights`` for smoke runs only.
        calib_data: real images for int8 calibration (word set for CRNN, image folder for the others); required
            for int8. ``calib_count`` images calibrate, ``probe_count`` other images (default 512 word images for
            CRNN, 128 otherwise) measure the error.
        shape_mutable, batch_size: dynamic batch, or a batch fixed to ``batch_size``.
        out: the engine directory (default ``engines/<model>-<backend>-<precision>``); replaced if it is an engine.
        threads: intra-op threads used while building and measuring.
        max_accuracy_drop, max_disagreement, max_rel_l2: the int8 accuracy budget (see ``QuantBudget``): on a
            labelled probe (CRNN word sets) at most ``max_accuracy_drop`` word accuracy lost against the float
            model (0.005 = 0.5 points); on unlabelled images at most ``max_disagreement`` of the probe decoded
            differently from the float model; optional relative L2 bound on raw outputs.
        calib_method: int8 calibration: minmax, entropy, percentile, or auto (measure each, keep the best).
        preprocess: VOLO/OCRNet calibration hook, uint8 RGB (H, W, 3) -> float32 (3, H, W).
        input_size: (H, W) of a segmentation engine (default the spec's 1024 x 2048); fixed in the engine.
        options: backend-specific options (see each backend module).
    """
    from deployzoo.engines.manifest import EngineWriter, library_versions, now_iso, precision_advice
    from deployzoo.host import host_info
    from deployzoo.export import checkpoint_sha256, input_spec, load_model, preprocess_params
    from deployzoo.specs import get_spec

    t0 = time.perf_counter()
    get_spec(model)
    backend = normalize_backend(backend)
    precision = normalize_precision(precision, backend)
    if not shape_mutable and batch_size is None:
        raise EngineError("--shape-mutable false needs --batch-size N (the fixed batch of the engine)")
    if batch_size is not None and batch_size < 1:
        raise EngineError(f"batch size must be >= 1, got {batch_size}")
    if precision == "qint8_mixed_float16" and calib_data is None:
        what = "a word set (LMDB or gt.txt folder)" if is_text(model) else "a folder of images"
        raise EngineError(f"int8 needs real images to calibrate: pass --calib-data PATH ({what}, ideally from the "
                          "training distribution, not the test set); random or synthetic noise gives wrong ranges")
    mod = backend_module(backend)  # fail early (clear message) when the backend is not installed
    out = Path(out) if out is not None else default_out(model, backend, precision)
    module, meta = load_model(model, checkpoint, random_weights)
    spec = input_spec(model, shape_mutable, batch_size, meta, input_size)

    with EngineWriter(out) as w:
        ctx = BuildContext(model, precision, backend, module, meta, spec, w.dir, threads,
                           budget=QuantBudget(max_disagreement, max_rel_l2, max_accuracy_drop),
                           options={"calib_method": calib_method, **(options or {})}, progress=progress, opset=opset)
        if precision == "qint8_mixed_float16":
            if probe_count is None:
                probe_count = PROBE_COUNT["text" if is_text(model) else "default"]
            n_probe = max(1, int(probe_count))
            items, labels = sample_items(model, calib_data, calib_count + n_probe, meta, preprocess,
                                   hw=None if is_text(model) else ctx.input_size)
            # held-out probe spread over the sample, disjoint from the calibration images (in proportion when the
            # set has fewer images than asked for; a one-image set serves both)
            n = len(items)
            n_p = min(max(1, round(n * n_probe / (n_probe + calib_count))), n - 1) if n > 1 else 1
            probe_idx = set(spread(n, n_p))
            probe_items = [items[i] for i in sorted(probe_idx)]
            probe_labels = None if labels is None else [labels[i] for i in sorted(probe_idx)]
            calib_items = [x for i, x in enumerate(items) if i not in probe_idx or n == 1][:calib_count]
            bs = 32 if is_text(model) else calib_batch(spec)
            ctx.calib = uniform_batches(model, calib_items, bs, meta, spec["fixed_batch"])
            ctx.probe = make_batches(model, probe_items, bs, meta, spec["fixed_batch"], probe_labels)
            ctx.calib_info = {"data": str(calib_data), "images": len(calib_items), "probe_images": len(probe_items),
                              "batches": len(ctx.calib), "probe_labelled": probe_labels is not None,
                              "preprocess": "same as inference (see preprocess)"}
            ctx.log(f"calibration: {len(calib_items)} images from {calib_data}, {len(probe_items)} held out to "
                    "measure the error")
        advice = precision_advice(precision, backend)
        if advice:
            ctx.log(f"note: {advice}")
        built = mod.build(ctx)
        manifest = {
            "cpu_advice": advice,
            "model": model, "precision": precision, "backend": backend, "device": built.pop("device", "cpu"),
            "entry": built.pop("entry"),
            "input": spec,
            **preprocess_params(model, meta, input_size),
            "source": {"checkpoint": meta.get("checkpoint"), "checkpoint_sha256": checkpoint_sha256(meta),
                       "random_weights": bool(meta.get("random_weights"))},
            "random_weights": bool(meta.get("random_weights")),
            "quantization": built.pop("quantization", None),
            **built,
            "libraries": library_versions(), "host": host_info(), "created": now_iso(),
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        path = w.commit(manifest)
    if progress:
        print(f"built {path} ({backend}, {precision}) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return path
