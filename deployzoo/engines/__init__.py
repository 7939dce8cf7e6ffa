"""Inference back ends behind one small interface: a Runner maps an input batch to the model's output.

The runtime lives here: ``Runner``, ``EagerRunner`` (PyTorch), ``Engine`` / ``open_engine`` (a verified engine
directory) and ``resolve_runner`` (engine, checkpoint or random weights). Building is ``engines.build``; every back
end lives in its own module and is imported only when used.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from deployzoo.errors import EngineError

#: precision aliases as engines name themselves ("onnxruntime/int8")
SHORT = {"force_float32": "fp32", "force_float16": "fp16", "force_bfloat16": "bf16", "qint8_mixed_float16": "int8"}
BACKENDS = {"onnxruntime": "deployzoo.engines.ort", "openvino": "deployzoo.engines.openvino",
            "aoti": "deployzoo.engines.aoti"}


def backend_module(backend: str):
    """The module of a back end (``build(ctx)`` and ``load(path, manifest, threads)``), imported on first use."""
    return importlib.import_module(BACKENDS[backend])


class Runner(Protocol):
    """(B, C, H, W) float32 -> model output as numpy (for CRNN: logits (T, B, C))."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class EagerRunner:
    """Runs a PyTorch module in eval mode under ``torch.inference_mode`` (the checkpoint path)."""

    name = "pytorch"
    precision = "force_float32"

    def __init__(self, model, threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.model = model.eval()
        self._torch = torch

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._torch.inference_mode():
            return self.model(self._torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()


def engine_meta(eng: "Engine") -> dict:
    """What ``resolve_runner`` reports for an opened engine: source, pre-processing, alphabet, manifest."""
    return {"preprocess": eng.preprocess, "alphabet": eng.alphabet, "engine": eng.manifest,
            "random_weights": bool(eng.manifest.get("random_weights", False)),
            "source": f"engine {eng.path} ({eng.name})"}


def resolve_runner(model: str, checkpoint=None, engine=None, random_weights: bool = False,
                   threads: int | None = None) -> tuple[Runner, dict]:
    """The one way to get weights running: an engine dir, a checkpoint (or the shipped default), or explicit
    seeded random weights. Returns (runner, metadata) with ``source``, ``random_weights`` and, when known,
    ``preprocess`` and ``alphabet``."""
    from deployzoo.errors import DeployzooError
    from deployzoo.specs import get_spec

    spec = get_spec(model)
    if sum(x is not None and x is not False for x in (checkpoint, engine, random_weights)) > 1:
        raise DeployzooError("give one of --engine, --checkpoint or --random-weights, not both")
    if engine is None and checkpoint is None and not random_weights and not _has_torch():
        engine = spec.default_engine()  # no torch: the shipped ONNX Runtime engine of the shipped weights
        if engine is None and spec.default_checkpoint() is not None:
            raise DeployzooError(f"the shipped {model} weights need torch (pip install 'deployzoo[torch]'), and the "
                                 "shipped engine is missing from this install; pass --engine DIR")
    if engine is not None:
        eng = open_engine(engine, expect_model=model, threads=threads)
        return eng, engine_meta(eng)
    if random_weights:
        import warnings

        import torch

        with torch.random.fork_rng():
            torch.manual_seed(0)
            net = spec.build()
        warnings.warn(f"{model}: random weights (seed 0): outputs are meaningless", stacklevel=2)
        return EagerRunner(net.eval(), threads), {"checkpoint": None, "random_weights": True,
                                                 "source": "random weights (seed 0)"}
    net, meta = spec.load(checkpoint)
    return EagerRunner(net, threads), {**meta, "random_weights": False, "source": meta["checkpoint"]}


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

    def __repr__(self) -> str:
        return f"Engine({str(self.path)!r}, model={self.model}, backend={self.backend}, precision={self.precision})"


def open_engine(path: str | os.PathLike, expect_model: str | None = None, threads: int | None = None) -> Engine:
    """Verify an engine directory (manifest, checksums, backend, model, device) and load it.

    Raises EngineError naming the directory, the file and the reason when anything is off.
    """
    from deployzoo.engines.manifest import verify_engine

    manifest = verify_engine(path, expect_model)
    mod = backend_module(manifest["backend"])
    runner = mod.load(Path(path), manifest, threads)
    return Engine(Path(path), manifest, runner)


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
