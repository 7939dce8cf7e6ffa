"""CRNN input pipeline: gray uint8 word image -> float32 (1, 32, W) in [-1, 1], and width-bucketed batches.

Two resize modes:
- fixed (the seeds): stretch every image to ``width`` x 32 (100 x 32 as meijieru's demo and the vendor samples);
- keep_ratio: height 32, width from the aspect ratio (clamped to [min_width, max_width]); a batch is padded
  (edge replication) to the next multiple of ``bucket`` above its widest image, and ``batches_by_width``
  groups images of similar width so a batch does not pay for one wide image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import TypeVar

import cv2
import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class CrnnPreprocess:
    """Pre-processing parameters; stored with checkpoints and in engine manifests."""

    height: int = 32
    width: int = 100  # fixed mode: the width; keep_ratio mode: unused (see max_width)
    keep_ratio: bool = False
    min_width: int = 16
    max_width: int = 256
    bucket: int = 16

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CrnnPreprocess":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def target_width(self, h: int, w: int) -> int:
        """Width after resizing an (h, w) image to height ``self.height``."""
        if not self.keep_ratio:
            return self.width
        tw = int(round(w * self.height / max(h, 1)))
        return int(min(max(tw, self.min_width), self.max_width))

    def padded_width(self, w: int) -> int:
        """Batch width for a widest image of ``w`` pixels (fixed mode: always ``self.width``)."""
        if not self.keep_ratio:
            return self.width
        return int(min(-(-w // self.bucket) * self.bucket, max(self.max_width, w)))


def output_length(width: int) -> int:
    """Number of CTC frames T for an input width W (the conv/pool arithmetic of CRNN's VGG: W / 4 + 1)."""
    return width // 4 + 1


def resize_word(gray: np.ndarray, cfg: CrnnPreprocess) -> np.ndarray:
    """uint8 (H0, W0) -> uint8 (height, w): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    h0, w0 = gray.shape[:2]
    w = cfg.target_width(h0, w0)
    interp = cv2.INTER_AREA if h0 > cfg.height else cv2.INTER_LINEAR
    return cv2.resize(gray, (w, cfg.height), interpolation=interp)


def normalize(u8: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W) -> float32 in [-1, 1] (meijieru: ToTensor then (x - 0.5) / 0.5)."""
    return u8.astype(np.float32) * np.float32(1 / 127.5) - np.float32(1.0)


def preprocess(gray: np.ndarray, cfg: CrnnPreprocess = CrnnPreprocess()) -> np.ndarray:
    """uint8 gray (H0, W0) -> float32 (1, height, w) in [-1, 1]."""
    if gray.ndim != 2:
        raise ValueError(f"expected a gray (H, W) image, got shape {gray.shape}")
    return normalize(resize_word(gray, cfg))[None]


#: a crop more than this many times taller than wide is also read turned a quarter both ways (vertical text)
TALL = 1.5


def tall_threshold(upright: bool) -> float | None:
    """``--upright`` (CLI, server): every crop read upright only (None); otherwise tall crops are also read turned."""
    return None if upright else TALL


def views(gray: np.ndarray, cfg: CrnnPreprocess, tall: float | None = TALL) -> np.ndarray | tuple[np.ndarray, ...]:
    """uint8 gray -> ``preprocess`` of it, or, for a tall crop (height > ``tall`` x width), a tuple of three
    inputs: upright, turned clockwise, turned counter-clockwise. Which reading wins is decided after decoding
    (``deployzoo.predict.pick_view``); ``tall=None`` reads every crop upright only."""
    x = preprocess(gray, cfg)
    if tall is None or gray.shape[0] <= tall * gray.shape[1]:
        return x
    return (x, preprocess(np.ascontiguousarray(np.rot90(gray, -1)), cfg),
            preprocess(np.ascontiguousarray(np.rot90(gray, 1)), cfg))


def pad_batch(items: list[np.ndarray], cfg: CrnnPreprocess) -> tuple[np.ndarray, np.ndarray]:
    """list of (1, H, w_i) -> batch (B, 1, H, W) padded by edge replication, and widths (B,) int64."""
    widths = np.array([x.shape[-1] for x in items], dtype=np.int64)
    W = cfg.padded_width(int(widths.max()))
    out = np.empty((len(items), 1, cfg.height, W), dtype=np.float32)
    for i, x in enumerate(items):
        w = x.shape[-1]
        out[i, :, :, :w] = x
        if w < W:
            out[i, :, :, w:] = x[:, :, w - 1 : w]
    return out, widths


def batches_by_width(items: Iterable[T], width_of, batch_size: int, pool_batches: int = 8,
                     bucket_of: Callable[[int], int] | None = None) -> Iterator[list[T]]:
    """Group a stream into batches of similar width: sort each pool of ``batch_size * pool_batches`` by width.

    With ``bucket_of`` (e.g. ``CrnnPreprocess.padded_width``) a batch never mixes two buckets, so every image is
    padded to its own bucket whatever its neighbours: a keep-ratio word's logits then do not depend on the batch
    (the BiLSTM's backward direction reads the padding). Order inside the output differs from the input; callers
    keep keys or indices to restore it.
    """
    pool: list[T] = []
    for it in items:
        pool.append(it)
        if len(pool) >= batch_size * pool_batches:
            yield from _emit(pool, width_of, batch_size, bucket_of)
            pool = []
    if pool:
        yield from _emit(pool, width_of, batch_size, bucket_of)


def _emit(pool: list[T], width_of, batch_size: int, bucket_of) -> Iterator[list[T]]:
    pool.sort(key=width_of)
    batch: list[T] = []
    key = None
    for it in pool:
        k = bucket_of(width_of(it)) if bucket_of else None
        if batch and (len(batch) == batch_size or k != key):
            yield batch
            batch = []
        batch.append(it)
        key = k
    if batch:
        yield batch
