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
