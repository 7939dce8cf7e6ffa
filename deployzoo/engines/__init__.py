"""Inference back ends behind one small interface: a Runner maps an input batch to the model's output.

Every back end lives in its own module and is imported only when used.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


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
    if engine is None and checkpoint is None and not random_weights and model == "crnn" and not _has_torch():
        from deployzoo.specs import shipped_engine

        engine = shipped_engine()  # no torch: the shipped ONNX Runtime engine of the same weights
        if engine is None:
            raise DeployzooError("the shipped CRNN weights need torch (pip install 'deployzoo[torch]'), and the "
                                 "shipped engine is missing from this install; pass --engine DIR")
    if engine is not None:
        from deployzoo.engines.build import open_engine

        eng = open_engine(engine, expect_model=model, threads=threads)
        meta = {"preprocess": eng.preprocess, "alphabet": eng.alphabet, "engine": eng.manifest,
                "random_weights": bool(eng.manifest.get("random_weights", False))}
        return eng, {**meta, "source": f"engine {eng.path} ({eng.name})"}
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


def _has_torch() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True
