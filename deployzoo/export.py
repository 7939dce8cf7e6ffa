"""PyTorch -> ONNX export: dynamic batch (and width for CRNN), metadata, and a parity check against PyTorch.

Exporter choice. PyTorch's torch.export-based ONNX exporter (the default since 2.9) specialises CRNN's BiLSTM
on the example input: the export guards on ``T == W // 4 + 1`` for the example width and bakes that T into a
Reshape, so the model fails at run time for every other width (tried with torch 2.13: "cannot reshape {17,1,2,256}
to {26,-1,512}"). The TorchScript exporter (``dynamo=False``) emits the native ONNX ``LSTM`` op, whose sequence
length and batch come from the input at run time. Its LSTM warning (an ``h0`` shaped for the export batch) does
not apply: the zero initial states are built from ``Shape(input)``, and :func:`_drop_zero_lstm_states` removes
them altogether (ONNX's LSTM defaults to zero states), so no tensor in the graph depends on the export batch.
Every export is checked against PyTorch on batch 1, 3, 7 and widths 64/100/160 (CRNN) before it is used.

Metadata (``metadata_props``): ``deployzoo.model``, ``deployzoo.input`` (JSON input spec), ``deployzoo.preprocess``
(JSON), ``deployzoo.alphabet`` (CRNN), ``deployzoo.checkpoint_sha256``, ``deployzoo.version``.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deployzoo.atomic import atomic_path
from deployzoo.errors import EngineError
from deployzoo.specs import get_spec, is_text

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"

#: fp32 parity tolerance against PyTorch: |onnx - torch| <= ATOL + RTOL * max|torch|.
ATOL = 1e-4
RTOL = 1e-5


# ------------------------------------------------------------------------------------------- model + specs

def load_model(model: str, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
               seed: int = 0) -> tuple[Any, dict]:
    """(nn.Module in eval mode, metadata). ``random_weights`` builds a seeded random model (smoke runs only)."""
    import torch

    spec = get_spec(model)
    if random_weights:
        torch.manual_seed(seed)
        m = spec.build().eval()
        return m, {"checkpoint": None, "random_weights": True, "seed": seed}
    m, meta = spec.load(checkpoint)
    return m, {**meta, "random_weights": False}


def input_spec(model: str, shape_mutable: bool = True, batch_size: int | None = None, meta: dict | None = None,
               input_size: Sequence[int] | None = None) -> dict:
    """The engine's input contract: shape with named dynamic axes, the fixed batch (or None), the output layout.

    ``shape_mutable=False`` fixes the batch to ``batch_size`` (default 1); CRNN's width stays dynamic (it follows
    each image). OCRNet is exported at ``input_size`` (H, W), by default the spec's 1024 x 2048 (Cityscapes
    frames); VOLO-D2 only at 224 x 224 (its position embedding has that grid).
    """
    spec = get_spec(model)
    c, h, w = spec.input_shape
    if input_size is not None:
        hw = tuple(int(v) for v in input_size)
        if spec.task == "text":
            raise EngineError(f"{model}: the input height is fixed at {h} and the width follows each image; "
                              "--input-size is for segmentation models")
        if spec.task != "segmentation" and hw != (h, w):
            raise EngineError(f"{model}: the input size is fixed at {h}x{w} (H x W); --input-size is for "
                              "segmentation models")
        if len(hw) != 2 or min(hw) < 64 or hw[0] % 32 or hw[1] % 32:
            raise EngineError(f"{model}: input size {'x'.join(map(str, hw))} (H x W): both sides must be multiples "
                              "of 32 and at least 64 (HRNet downsamples by 32)")
        h, w = hw
    fixed = None if shape_mutable else int(batch_size or 1)
    if fixed is not None and fixed < 1:
        raise EngineError(f"batch size must be >= 1, got {fixed}")
    b: int | str = fixed if fixed is not None else "batch"
    if spec.dynamic_width:
        shape, out, batch_axis = [b, c, h, "width"], ["T", b, "classes"], 1
        example_w = int((meta or {}).get("preprocess", {}).get("width", w))
    elif spec.task == "segmentation":
        # OCRNet's HRNet fuse layers size their Resize ops from Python ints (deployzoo.models.ocrnet._upsample_to),
        # so the traced graph is valid for the export H x W only: H and W are fixed, the batch is not
        shape, out, batch_axis = [b, c, h, w], [b, "classes", h // 4, w // 4], 0
        example_w = w
    else:
        shape, out, batch_axis = [b, c, h, w], [b, "classes"], 0
        example_w = w
    return {"name": INPUT_NAME, "dtype": "float32", "shape": shape,
            "dynamic_axes": {str(i): d for i, d in enumerate(shape) if isinstance(d, str)},
            "fixed_batch": fixed, "example_shape": [fixed or 2, c, h, example_w],
            "output": {"name": OUTPUT_NAME, "shape": out, "batch_axis": batch_axis}}


def preprocess_params(model: str, meta: dict, input_size: Sequence[int] | None = None) -> dict:
    """What a caller needs to feed the engine: for CRNN the CrnnPreprocess dict and the alphabet; for OCRNet the
    test Resize box, which is the engine's (W, H) when it was built at another ``input_size``."""
    if is_text(model):
        from deployzoo.process.crnn import CrnnPreprocess
        from deployzoo.process.text import ALPHABET

        return {"preprocess": CrnnPreprocess.from_dict(meta.get("preprocess", {})).to_dict(),
                "alphabet": meta.get("alphabet", ALPHABET)}
    from deployzoo.specs import get_spec

    return {"preprocess": get_spec(model).preprocess_params(input_size)}


def checkpoint_sha256(meta: dict) -> str | None:
    from deployzoo.engines.manifest import sha256_file

    ck = meta.get("checkpoint")
    return sha256_file(ck) if ck and Path(ck).is_file() else None


# ------------------------------------------------------------------------------------------------ export

def export_module(module, path: str | os.PathLike, model: str, spec: dict, opset: int = OPSET,
                  metadata: dict[str, Any] | None = None) -> Path:
    """Export ``module`` to ``path`` with the axes of ``spec`` (see ``input_spec``); returns the path."""
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if opset < 17:
        raise EngineError(f"opset {opset}: deployzoo exports with opset >= 17")
    x = _seeded(spec["example_shape"], seed=0)
    dyn_in = {int(k): v for k, v in spec["dynamic_axes"].items()}
    dyn_out = {i: d for i, d in enumerate(spec["output"]["shape"]) if isinstance(d, str) and d != "classes"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-exporter deprecation and the LSTM batch warning (see above)
        with torch.no_grad():
            torch.onnx.export(module.eval(), (torch.from_numpy(x),), str(path), input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={INPUT_NAME: dyn_in, OUTPUT_NAME: dyn_out} if dyn_in else None)
    proto = onnx.load(str(path))
    _drop_zero_lstm_states(proto)
    props = {"deployzoo.model": model, "deployzoo.input": json.dumps(spec), "deployzoo.exporter":
             f"torch.onnx TorchScript exporter (torch {torch.__version__}), opset {opset}"}
    try:
        from importlib.metadata import version

        props["deployzoo.version"] = version("deployzoo")
    except Exception:  # noqa: BLE001 - running from a source tree
        pass
    for k, v in (metadata or {}).items():
        props[f"deployzoo.{k}"] = v if isinstance(v, str) else json.dumps(v)
    del proto.metadata_props[:]
    for k, v in props.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "deployzoo"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path


def _drop_zero_lstm_states(proto) -> int:
    """Remove LSTM initial states that are ConstantOfShape zeros (ONNX defaults them to zero) and the now-dead
    Shape/Gather/Concat chain that sized them from the input batch. Returns the number of states removed."""
    from onnx import numpy_helper

    g = proto.graph
    producers = {o: n for n in g.node for o in n.output}

    def is_zero_const(name: str) -> bool:
        n = producers.get(name)
        if n is None or n.op_type != "ConstantOfShape":
            return False
        val = next((a.t for a in n.attribute if a.name == "value"), None)
        return val is None or not np.any(numpy_helper.to_array(val))

    removed = 0
    for n in g.node:
        if n.op_type in ("LSTM", "GRU", "RNN"):
            for i in range(5, min(len(n.input), 7)):
                if n.input[i] and is_zero_const(n.input[i]):
                    n.input[i] = ""
                    removed += 1
            while n.input and n.input[-1] == "":
                n.input.pop()
    if removed:
        keep = {o.name for o in g.output}
        while True:
            used = keep | {i for n in g.node for i in n.input}
            dead = [n for n in g.node if not any(o in used for o in n.output)]
            if not dead:
                break
            for n in dead:
                g.node.remove(n)
    return removed


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """``deployzoo.*`` metadata_props of an exported model, JSON values decoded."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for p in proto.metadata_props:
        if p.key.startswith("deployzoo."):
            key = p.key.removeprefix("deployzoo.")
            try:
                out[key] = json.loads(p.value) if p.value[:1] in "{[" else p.value
            except json.JSONDecodeError:
                out[key] = p.value
    return out


# ------------------------------------------------------------------------------------------------ parity

def _seeded(shape, seed: int = 0) -> np.ndarray:
    """Inputs in the range real pre-processing produces (CRNN [-1, 1], normalised images about N(0, 1))."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=tuple(shape)).astype(np.float32)


def parity_inputs(model: str, meta: dict, data: str | os.PathLike | None = None, spec: dict | None = None,
                  seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(label, batch) pairs: seeded batches over the shapes users hit, then real images.

    CRNN: batch 1, 3, 7 x widths 64, 100, 160 seeded, plus real word images (``data`` when given, else strips of
    the bundled natural photographs) through the checkpoint's CrnnPreprocess. VOLO/OCRNet: seeded plus the natural
    photographs through ``deployzoo.process.vision``.
    """
    fixed = (spec or {}).get("fixed_batch")
    out: list[tuple[str, np.ndarray]] = []
    if is_text(model):
        for b in (1, 3, 7):
            for w in (64, 100, 160):
                bb = fixed or b
                out.append((f"seeded b{bb} w{w}", _seeded((bb, 1, 32, w), seed + 10 * b + w)))
        out.append(("real " + (Path(data).name if data else "natural-photo strips"),
                    _real_crnn_batch(meta, data, fixed or 8)))
    else:
        from deployzoo.specs import get_spec

        ms = get_spec(model)
        h, w = (spec or {}).get("shape", [0, *ms.input_shape])[2:]
        b = fixed or ms.parity_batch
        out.append((f"seeded b{b}", _seeded((b, ms.input_shape[0], h, w), seed)))
        out.append(("real natural photo" + ("s" if b > 1 else ""), _real_vision_batch(model, b, (h, w))))
    return out


def natural_images() -> list[Path]:
    from importlib import resources

    d = Path(str(resources.files("deployzoo.data") / "natural"))
    return sorted(d.glob("*.jpg"))


def _real_crnn_batch(meta: dict, data, n: int) -> np.ndarray:
    from deployzoo.process.crnn import CrnnPreprocess, pad_batch, preprocess
    from deployzoo.process.image import load_image

    cfg = CrnnPreprocess.from_dict(meta.get("preprocess", {}))
    items = []
    if data:
        from deployzoo.engines.calib import word_items

        items = [x for x, _ in word_items(data, n, cfg)]
    else:
        for p in natural_images():
            g = load_image(p, "L")
            h = g.shape[0] // 6
            items.append(preprocess(g[2 * h : 3 * h], cfg))  # a horizontal strip: word-like aspect ratio
            if len(items) == n:
                break
    while len(items) < n:
        items += items[: n - len(items)]
    x, _ = pad_batch(items[:n], cfg)
    return x


def _real_vision_batch(model: str, n: int, hw: tuple[int, int] = (1024, 2048)) -> np.ndarray:
    """The first ``n`` bundled photos through the engine builder's calibration pre-processing (OCRNet: resized
    to the engine's H x W), so parity and calibration inputs are made in one place."""
    from deployzoo.engines.calib import vision_preprocess
    from deployzoo.process.image import load_image

    fn = vision_preprocess(model, hw)
    return np.stack([fn(load_image(p, "RGB")) for p in natural_images()[:n]])


class torch_threads:
    """``with torch_threads(n):`` run PyTorch with ``n`` intra-op threads (None: leave as is), then restore."""

    def __init__(self, n: int | None) -> None:
        self.n, self.old = n, None

    def __enter__(self) -> None:
        import torch

        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc) -> None:
        import torch

        if self.old:
            torch.set_num_threads(self.old)


def run_torch(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).float().numpy()


def compare(out: np.ndarray, ref: np.ndarray) -> dict:
    """max |out - ref|, relative L2 error and argmax agreement over the class axis."""
    diff = np.abs(out.astype(np.float64) - ref)
    cls_axis = 1 if out.ndim == 4 else -1
    return {"max_abs_diff": float(diff.max()) if diff.size else 0.0,
            "rel_l2": float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-12)),
            "ref_abs_max": float(np.abs(ref).max()) if ref.size else 0.0,
            "argmax_agreement": float((out.argmax(cls_axis) == ref.argmax(cls_axis)).mean())}


def parity_check(run, module, inputs: list[tuple[str, np.ndarray]], atol: float = ATOL, rtol: float = RTOL,
                 raise_on_fail: bool = True, what: str = "export", refs: list[np.ndarray] | None = None) -> list[dict]:
    """Run ``run(x)`` and PyTorch on every input; returns one record per input, raises EngineError on a failure.
    ``refs``: PyTorch outputs already computed for ``inputs`` (PyTorch is the slow side on CPU)."""
    rows = []
    for i, (label, x) in enumerate(inputs):
        ref = refs[i] if refs is not None else run_torch(module, x)
        out = run(x)
        if out.shape != ref.shape:
            raise EngineError(f"{what}: output shape {out.shape} differs from PyTorch's {ref.shape} on {label} "
                              f"input {x.shape}")
        row = {"input": label, "shape": list(x.shape), **compare(out, ref)}
        row["tolerance"] = atol + rtol * row["ref_abs_max"]
        row["ok"] = row["max_abs_diff"] <= row["tolerance"]
        rows.append(row)
        if raise_on_fail and not row["ok"]:
            raise EngineError(f"{what}: differs from PyTorch on {label} input {tuple(x.shape)}: max |diff| "
                              f"{row['max_abs_diff']:.3g} > tolerance {row['tolerance']:.3g}")
    return rows


def ort_runner(path: str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


# --------------------------------------------------------------------------------------------- public API

@dataclass
class ExportReport:
    model: str
    onnx: str
    opset: int
    input: dict
    checkpoint: str | None
    checkpoint_sha256: str | None
    seconds: float
    max_abs_diff: float
    parity: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        lines = ["| input | shape | max abs diff | rel L2 | argmax agree | ok |", "|---|---|---|---|---|---|"]
        for r in self.parity:
            lines.append(f"| {r['input']} | {'x'.join(map(str, r['shape']))} | {r['max_abs_diff']:.3g} | "
                         f"{r['rel_l2']:.3g} | {r['argmax_agreement'] * 100:.2f}% | {'yes' if r['ok'] else 'NO'} |")
        return "\n".join(lines)


def export_onnx(model: str, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None, *,
                random_weights: bool = False, opset: int = OPSET, shape_mutable: bool = True,
                batch_size: int | None = None, data: str | os.PathLike | None = None, check: bool = True,
                module=None, meta: dict | None = None, input_size: Sequence[int] | None = None,
                parity: tuple[list[tuple[str, np.ndarray]], list[np.ndarray]] | None = None) -> ExportReport:
    """Export ``model`` to ONNX and check it against PyTorch in ONNX Runtime.

    Args:
        out: a ``.onnx`` file path, or a directory (then ``DIR/<model>.onnx`` and ``DIR/export.json``).
        checkpoint: weights file (default: the shipped weights); ``random_weights`` for smoke runs.
        shape_mutable: dynamic batch (and CRNN width); False fixes the batch to ``batch_size``.
        input_size: (H, W) of a segmentation export (default the spec's 1024 x 2048).
        data: a word set (CRNN) whose images join the parity inputs.
        check: run the parity check (raises EngineError beyond ``ATOL + RTOL * max|ref|``).
        module, meta: an already loaded model (the engine builder passes its own).
        parity: (inputs, PyTorch outputs) to check with instead of ``parity_inputs`` (the builder's cache).
    """
    t0 = time.perf_counter()
    if module is None:
        module, meta = load_model(model, checkpoint, random_weights)
    meta = meta or {}
    out = Path(out)
    path = out if out.suffix == ".onnx" else out / f"{model}.onnx"
    spec = input_spec(model, shape_mutable, batch_size, meta, input_size)
    pp = preprocess_params(model, meta, input_size)
    ck_sha = checkpoint_sha256(meta)
    # written beside the target and renamed only after the parity check passed: no unchecked .onnx at `path`
    with atomic_path(path) as tmp:
        export_module(module, tmp, model, spec, opset, metadata={**pp, "checkpoint_sha256": ck_sha or "",
                                                                 "random_weights": str(meta.get("random_weights"))})
        rows = []
        if check:
            inputs, refs = parity if parity is not None else (parity_inputs(model, meta, data, spec), None)
            rows = parity_check(ort_runner(tmp), module, inputs, what=f"export {path}", refs=refs)
    rep = ExportReport(model, str(path), opset, spec, meta.get("checkpoint"), ck_sha, time.perf_counter() - t0,
                       max((r["max_abs_diff"] for r in rows), default=float("nan")), rows)
    if out.suffix != ".onnx":
        from deployzoo.evaluation.report import write_json

        write_json(rep.to_json(), out / "export.json")
    return rep
