"""CRNN (Shi et al., arXiv 1507.05717) with meijieru/crnn.pytorch parameter names, and its strict loader.

The module does no pre-processing (see ``deployzoo.process``).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from deployzoo.checkpoint import load_strict, read_checkpoint, unwrap_state_dict
from deployzoo.errors import CheckpointError
from deployzoo.process.crnn import output_length  # noqa: F401  (re-exported: the VGG's frame count)

#: meijieru's VGG: (out_channels, kernel, padding, batchnorm) per conv, and the pool after it (if any).
_CONVS = [(64, 3, 1, False), (128, 3, 1, False), (256, 3, 1, True), (256, 3, 1, False),
          (512, 3, 1, True), (512, 3, 1, False), (512, 2, 0, True)]
_POOLS = {0: ((2, 2), (2, 2), (0, 0)), 1: ((2, 2), (2, 2), (0, 0)),
          3: ((2, 2), (2, 1), (0, 1)), 5: ((2, 2), (2, 1), (0, 1))}


class BidirectionalLSTM(nn.Module):
    """One BiLSTM layer plus a Linear projection (meijieru's ``rnn.i.{rnn,embedding}``)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, x: Tensor) -> Tensor:
        """x: (T, B, n_in) -> (T, B, n_out)."""
        rec, _ = self.rnn(x)  # (T, B, 2 * n_hidden)
        return self.embedding(rec)  # Linear acts on the last dim: (T, B, n_out)


class CRNN(nn.Module):
    """x: (B, 1, 32, W) gray in [-1, 1] -> raw logits (T, B, num_classes), T = W // 4 + 1 (no log_softmax)."""

    def __init__(self, img_h: int = 32, in_channels: int = 1, num_classes: int = 37, hidden: int = 256) -> None:
        super().__init__()
        if img_h != 32:
            raise ValueError(f"CRNN needs an input height of 32, got {img_h}")
        cnn = nn.Sequential()
        c_in = in_channels
        for i, (c_out, k, p, bn) in enumerate(_CONVS):
            cnn.add_module(f"conv{i}", nn.Conv2d(c_in, c_out, k, 1, p))
            if bn:
                cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(c_out))
            cnn.add_module(f"relu{i}", nn.ReLU(True))
            if i in _POOLS:
                kernel, stride, pad = _POOLS[i]
                cnn.add_module(f"pooling{len([j for j in _POOLS if j < i])}", nn.MaxPool2d(kernel, stride, pad))
            c_in = c_out
        self.cnn = cnn
        self.rnn = nn.Sequential(BidirectionalLSTM(512, hidden, hidden), BidirectionalLSTM(hidden, hidden, num_classes))
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, 1, 32, W) -> logits (T, B, num_classes)."""
        f = self.cnn(x)  # (B, 512, 1, T)
        f = f.squeeze(2).permute(2, 0, 1)  # (T, B, 512)
        return self.rnn(f)  # (T, B, num_classes)


def crnn_state_dict_filter(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Accept meijieru files as they are: ``module.`` already stripped; cast fp16/bf16 weights back to fp32."""
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def crnn(num_classes: int = 37, hidden: int = 256) -> CRNN:
    """Factory with meijieru's demo settings: CRNN(imgH=32, nc=1, nclass=37, nh=256)."""
    return CRNN(32, 1, num_classes, hidden)


def load_crnn_checkpoint(model: nn.Module, path) -> dict:
    """meijieru layout (plain, ``module.``-prefixed, with or without num_batches_tracked, fp16 or fp32), or our
    trainer's ``{'state_dict': ..., 'deployzoo': {...}}``. Returns the deployzoo metadata (pre-processing...)."""
    obj = read_checkpoint(path)
    meta = obj.get("deployzoo", {}) if isinstance(obj.get("deployzoo"), dict) else {}
    if meta.get("model", "crnn") != "crnn":
        raise CheckpointError(f"checkpoint {path}: was saved for model '{meta['model']}', not 'crnn'")
    load_strict(model, crnn_state_dict_filter(unwrap_state_dict(obj)), str(path), "crnn")
    return dict(meta)
