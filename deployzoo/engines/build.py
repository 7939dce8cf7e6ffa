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

import importlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deployzoo.engines.quant import MAX_ACCURACY_DROP, MAX_DISAGREEMENT, QuantBudget
from deployzoo.errors import DatasetError, DeployzooError, EngineError

PRECISIONS = ("force_float32", "force_float16", "force_bfloat16", "qint8_mixed_float16")
PRECISION_ALIASES = {"fp32": "force_float32", "f32": "force_float32", "float32": "force_float32",
                     "fp16": "force_float16", "f16": "force_float16", "float16": "force_float16",
                     "bf16": "force_bfloat16", "bfloat16": "force_bfloat16",
                     "int8": "qint8_mixed_float16", "qint8": "qint8_mixed_float16", "i8": "qint8_mixed_float16"}
SHORT = {"force_float32": "fp32", "force_float16": "fp16", "force_bfloat16": "bf16", "qint8_mixed_float16": "int8"}

BACKENDS = {"onnxruntime": "deployzoo.engines.ort", "openvino": "deployzoo.engines.openvino",
            "aoti": "deployzoo.engines.aoti"}
BACKEND_ALIASES = {"ort": "onnxruntime", "onnx": "onnxruntime", "ov": "openvino", "aotinductor": "aoti",
                   "pt2": "aoti", "inductor": "aoti"}
SUPPORTED = {
    "onnxruntime": ("force_float32", "force_float16", "qint8_mixed_float16"),
    "openvino": ("force_float32", "force_float16", "force_bfloat16", "qint8_mixed_float16"),
    "aoti": ("force_float32", "force_float16", "force_bfloat16"),
}

#: default number of calibration images, and of held-out images used to measure quantisation error (CRNN word
#: images are small and labelled, so more of them make the accuracy budget measurable to a fraction of a point)
CALIB_COUNT = 256
PROBE_COUNT = {"crnn": 512, "default": 128}

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


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


def _backend_module(backend: str):
    return importlib.import_module(BACKENDS[backend])


# ------------------------------------------------------------------------------------------ calibration data

def _spread(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over range(n_total) (a calibration set should not be only the first files)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n)})


def _word_items(data: str | os.PathLike, n: int, cfg, skip: int = 0) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` pre-processed word images (1, 32, w) with their raw labels, spread over the set; unreadable
    samples are skipped. ``skip`` > 0 offsets the spread (a disjoint held-out sample)."""
    from deployzoo.data.words import open_word_set
    from deployzoo.process.crnn import preprocess
    from deployzoo.process.image import load_image

    ds = open_word_set(data)
    if len(ds) == 0:
        raise DatasetError(f"calibration data {data}: the word set is empty")
    out = []
    for i in _spread(len(ds), min(len(ds), n + skip)):
        s = ds[i]
        if s.error:
            continue
        try:
            out.append((preprocess(load_image(s.data if s.data is not None else s.path, "L", name=s.key), cfg),
                        s.label))
        except DeployzooError:
            continue
    if not out:
        raise DatasetError(f"calibration data {data}: none of the sampled images could be read")
    return out


def _image_files(data: str | os.PathLike) -> list[Path]:
    p = Path(data)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DatasetError(f"calibration data {p}: not found")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise DatasetError(f"calibration data {p}: no images ({', '.join(IMAGE_SUFFIXES)}) found under it")
    return files


def _vision_preprocess(model: str, hw: Sequence[int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    try:
        from deployzoo.process import vision
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise EngineError(f"calibration for {model}: deployzoo.process.vision is not available ({e}); "
                          "pass preprocess=<uint8 RGB (H, W, 3) -> float32 (3, H, W)> to build_engine") from None
    fn = {"volo_d2": "volo_preprocess", "ocrnet_hr18": "ocrnet_preprocess"}[model]
    if not hasattr(vision, fn):  # pragma: no cover
        raise EngineError(f"calibration for {model}: TODO deployzoo.process.vision.{fn} does not exist yet; "
                          "pass preprocess=... to build_engine")
    if model == "ocrnet_hr18":
        import cv2

        from deployzoo.specs import get_spec

        h, w = hw or get_spec(model).input_shape[1:]

        def fixed_size(rgb: np.ndarray) -> np.ndarray:
            """The engine's fixed H x W (Cityscapes frames already are: then this is the exact test pipeline)."""
            if rgb.shape[:2] != (h, w):
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
            return vision.ocrnet_preprocess(rgb, None)

        return fixed_size
    return getattr(vision, fn)


def _items(model: str, data, n: int, meta: dict, preprocess: Callable | None = None,
           skip: int = 0, hw: Sequence[int] | None = None) -> tuple[list[np.ndarray], list | None]:
    """Up to ``n`` pre-processed inputs spread over ``data``, and their labels where the data set has them
    (CRNN word sets: each label as the class indices of its normalised text) or None."""
    if model == "crnn":
        from deployzoo.process.crnn import CrnnPreprocess
        from deployzoo.process.text import ALPHABET, encode, normalize_label

        alphabet = meta.get("alphabet") or ALPHABET
        pairs = _word_items(data, n, CrnnPreprocess.from_dict(meta.get("preprocess", {})), skip)
        return [x for x, _ in pairs], [tuple(encode(normalize_label(y, alphabet), alphabet)) for _, y in pairs]
    from deployzoo.process.image import load_image

    fn = preprocess or _vision_preprocess(model, hw)
    if model == "volo_d2":  # read as the ImageNet eval reads (timm's loader, no EXIF rotation): same inputs
        from deployzoo.data.imagenet import read_rgb

        def read(f: Path) -> np.ndarray:
            return read_rgb(f, str(f))
    else:
        def read(f: Path) -> np.ndarray:
            return load_image(f, "RGB")
    files = _image_files(data)
    out = []
    for i in _spread(len(files), min(len(files), n + skip)):
        try:
            out.append(np.asarray(fn(read(files[i])), dtype=np.float32))
        except DeployzooError:
            continue
    if not out:
        raise DatasetError(f"calibration data {data}: none of the sampled images could be read")
    return out, None


#: calibration batches of images larger than this many pixels hold one image each: calibrators keep every
#: intermediate tensor of a batch in memory (OCRNet at 1024x2048: gigabytes per image)
CALIB_BATCH_PIXELS = 1 << 20


def calib_batch(spec: dict, largest: int = 8) -> int:
    """Images per calibration / probe batch for a fixed-size vision input spec."""
    if spec.get("fixed_batch"):
        return int(spec["fixed_batch"])
    h, w = spec["shape"][2:]
    return max(1, min(largest, CALIB_BATCH_PIXELS // (int(h) * int(w))))


@dataclass
class Batch:
    x: np.ndarray  # (B, C, H, W) float32
    widths: np.ndarray | None = None  # CRNN: each image's own width before padding
    n: int = 0  # real images in the batch (the rest is tail padding for fixed-batch engines)
    labels: list | None = None  # ground truth of the first n items, comparable with ``decoded``; None: unlabelled


def make_batches(model: str, items: list[np.ndarray], batch_size: int, meta: dict,
                 fixed_batch: int | None = None, labels: list | None = None) -> list[Batch]:
    """Pre-processed items (and optional labels) -> batches. CRNN groups similar widths and pads (edge
    replication) as inference does; other models group equal shapes. With ``fixed_batch`` every batch has exactly
    that size (tail repeated)."""
    from deployzoo.process.crnn import CrnnPreprocess, batches_by_width, pad_batch

    bs = fixed_batch or batch_size
    out = []
    if model == "crnn":
        cfg = CrnnPreprocess.from_dict(meta.get("preprocess", {}))
        for idx in batches_by_width(range(len(items)), lambda i: items[i].shape[-1], bs, pool_batches=1 << 30):
            n = len(idx)
            chunk = [items[i] for i in idx]
            chunk = chunk + [chunk[-1]] * ((fixed_batch or n) - n)
            x, widths = pad_batch(chunk, cfg)
            out.append(Batch(x, widths, n, None if labels is None else [labels[i] for i in idx]))
    else:
        by_shape: dict[tuple, list[np.ndarray]] = {}
        for x in items:
            by_shape.setdefault(x.shape, []).append(x)
        for group in by_shape.values():
            for i in range(0, len(group), bs):
                chunk = group[i : i + bs]
                n = len(chunk)
                chunk = chunk + [chunk[-1]] * ((fixed_batch or n) - n)
                out.append(Batch(np.stack(chunk), None, n))
    return out


def calibration_inputs(model: str, data_path: str | os.PathLike, count: int = CALIB_COUNT, meta: dict | None = None,
                       batch_size: int = 32, fixed_batch: int | None = None,
                       preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> list[np.ndarray]:
    """Calibration batches from real images, pre-processed exactly as at inference.

    CRNN: a word set (LMDB or gt.txt folder, via ``open_word_set``) -> ``load_image`` -> the checkpoint's
    ``CrnnPreprocess`` (fixed width, or keep-ratio widths bucketed and padded as ``pad_batch`` does).
    VOLO-D2 / OCRNet: a folder of images (searched recursively) -> ``preprocess`` (default
    ``deployzoo.process.vision.volo_preprocess`` / ``ocrnet_preprocess``).
    Returns (B, C, H, W) float32 batches covering ``count`` images spread evenly over the data set.
    """
    meta = meta or {}
    items, _ = _items(model, data_path, count, meta, preprocess)
    return [b.x for b in uniform_batches(model, items, batch_size, meta, fixed_batch)]


def uniform_batches(model: str, items: list[np.ndarray], batch_size: int, meta: dict,
                    fixed_batch: int | None = None) -> list[Batch]:
    """Calibration batches of one shape. Histogram calibrators (percentile, entropy) stack activations across
    batches, so the tail batch is filled up and CRNN batches are padded (edge replication) to one common width."""
    batches = make_batches(model, items, batch_size, meta, fixed_batch or min(batch_size, len(items)))
    width = max(b.x.shape[-1] for b in batches)
    for b in batches:
        if b.x.shape[-1] < width:
            b.x = np.concatenate([b.x, np.repeat(b.x[..., -1:], width - b.x.shape[-1], -1)], -1)
    return batches


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
    from deployzoo.engines.manifest import EngineWriter, host_info, library_versions, now_iso, precision_advice
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
        what = "a word set (LMDB or gt.txt folder)" if model == "crnn" else "a folder of images"
        raise EngineError(f"int8 needs real images to calibrate: pass --calib-data PATH ({what}, ideally from the "
                          "training distribution, not the test set); random or synthetic noise gives wrong ranges")
    mod = _backend_module(backend)  # fail early (clear message) when the backend is not installed
    out = Path(out) if out is not None else default_out(model, backend, precision)
    module, meta = load_model(model, checkpoint, random_weights)
    spec = input_spec(model, shape_mutable, batch_size, meta, input_size)

    with EngineWriter(out) as w:
        ctx = BuildContext(model, precision, backend, module, meta, spec, w.dir, threads,
                           budget=QuantBudget(max_disagreement, max_rel_l2, max_accuracy_drop),
                           options={"calib_method": calib_method, **(options or {})}, progress=progress, opset=opset)
        if precision == "qint8_mixed_float16":
            if probe_count is None:
                probe_count = PROBE_COUNT.get(model, PROBE_COUNT["default"])
            n_probe = max(1, int(probe_count))
            items, labels = _items(model, calib_data, calib_count + n_probe, meta, preprocess,
                                   hw=ctx.input_size if model != "crnn" else None)
            # held-out probe spread over the sample, disjoint from the calibration images (in proportion when the
            # set has fewer images than asked for; a one-image set serves both)
            n = len(items)
            n_p = min(max(1, round(n * n_probe / (n_probe + calib_count))), n - 1) if n > 1 else 1
            probe_idx = set(_spread(n, n_p))
            probe_items = [items[i] for i in sorted(probe_idx)]
            probe_labels = None if labels is None else [labels[i] for i in sorted(probe_idx)]
            calib_items = [x for i, x in enumerate(items) if i not in probe_idx or n == 1][:calib_count]
            bs = 32 if model == "crnn" else calib_batch(spec)
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


# ------------------------------------------------------------------------------------------------ engines

def run_fixed_batches(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int,
                      out_batch_axis: int = 0) -> np.ndarray:
    """Run a fixed-batch ``run`` on any number of inputs: split into ``batch``-sized chunks, pad the tail by
    repeating its last input, concatenate the outputs along ``out_batch_axis`` and drop the padding."""
    n = x.shape[0]
    if n == batch:
        return run(x)
    if n == 0:
        raise EngineError("empty batch: nothing to run")
    outs = []
    for i in range(0, n, batch):
        chunk = x[i : i + batch]
        k = chunk.shape[0]
        if k < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - k, axis=0)])
        y = run(chunk)
        outs.append(np.take(y, np.arange(k), axis=out_batch_axis))
    return np.concatenate(outs, axis=out_batch_axis)


class Engine:
    """A verified, loaded engine. ``engine(x)`` maps (B, C, H, W) float32 to the model output (CRNN: logits
    (T, B, C)) for any B, also on fixed-batch engines (split and tail-padded), so it is a deployzoo Runner.

    Attributes: ``manifest`` (dict), ``name`` ("<backend>/<precision alias>", the Runner name), ``model``,
    ``precision``, ``backend``, ``path``, ``input_spec``, ``fixed_batch`` (None when the batch is dynamic).
    """

    def __init__(self, path: Path, manifest: dict, runner: Callable[[np.ndarray], np.ndarray]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self.model: str = manifest["model"]
        self.precision: str = manifest["precision"]
        self.backend: str = manifest["backend"]
        self.name = f"{self.backend}/{SHORT.get(self.precision, self.precision)}"
        self.input_spec: dict = manifest["input"]
        self.fixed_batch: int | None = self.input_spec.get("fixed_batch")
        self.runner = runner
        self.threads: int | None = getattr(runner, "threads", None)
        self._shape = self.input_spec["shape"]

    @property
    def preprocess(self) -> dict:
        return self.manifest.get("preprocess", {})

    @property
    def alphabet(self) -> str | None:
        return self.manifest.get("alphabet")

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != len(self._shape):
            raise EngineError(f"engine {self.path}: expected a {len(self._shape)}-d input {self._shape}, got shape "
                              f"{x.shape}")
        for i, (got, want) in enumerate(zip(x.shape[1:], self._shape[1:]), 1):
            if isinstance(want, int) and got != want:
                raise EngineError(f"engine {self.path}: input dim {i} must be {want} (input {self._shape}), got shape "
                                  f"{x.shape}")
        return x

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = self._check(x)
        if self.fixed_batch is not None and x.shape[0] != self.fixed_batch:
            return run_fixed_batches(self.runner, x, self.fixed_batch, self.input_spec["output"]["batch_axis"])
        return self.runner(x)

    def recognizer(self, lexicon: str | os.PathLike | None = None, batch_size: int = 32):
        """A CRNN ``Recognizer`` over this engine, with the engine's pre-processing and alphabet."""
        from deployzoo.process.crnn import CrnnPreprocess
        from deployzoo.process.ctc import Lexicon
        from deployzoo.recognizer import Recognizer

        if self.model != "crnn":
            raise EngineError(f"engine {self.path}: built for '{self.model}', not a word recogniser")
        lex = Lexicon.from_file(lexicon) if lexicon else None
        return Recognizer(self, CrnnPreprocess.from_dict(self.preprocess), self.alphabet, lex, batch_size,
                          source=str(self.path))

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, model={self.model}, backend={self.backend}, precision={self.precision})"


def open_engine(path: str | os.PathLike, expect_model: str | None = None, threads: int | None = None) -> Engine:
    """Verify an engine directory (manifest, checksums, backend, model, device) and load it.

    Raises EngineError naming the directory, the file and the reason when anything is off.
    """
    from deployzoo.engines.manifest import verify_engine

    manifest = verify_engine(path, expect_model)
    mod = _backend_module(manifest["backend"])
    runner = mod.load(Path(path), manifest, threads)
    return Engine(Path(path), manifest, runner)
