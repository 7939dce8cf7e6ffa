"""Calibration and probe data: real images through the same pre-processing as inference, as batches.

Used by int8 builds (calibration batches, and the labelled held-out probe that measures the accuracy budget, see
``engines.quant``) and by ``export`` (parity inputs). Nothing here imports torch or a backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployzoo.errors import DatasetError, DeployzooError, EngineError
from deployzoo.specs import get_spec, is_text

#: default number of calibration images, and of held-out images used to measure quantisation error (CRNN word
#: images are small and labelled, so more of them make the accuracy budget measurable to a fraction of a point)
CALIB_COUNT = 256
PROBE_COUNT = {"text": 512, "default": 128}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def spread(n_total: int, n: int) -> list[int]:
    """n indices spread evenly over range(n_total) (a calibration set should not be only the first files)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted({int(i) for i in np.linspace(0, n_total - 1, n)})


def word_items(data: str | os.PathLike, n: int, cfg, skip: int = 0) -> list[tuple[np.ndarray, str]]:
    """Up to ``n`` pre-processed word images (1, 32, w) with their raw labels, spread over the set; unreadable
    samples are skipped. ``skip`` > 0 offsets the spread (a disjoint held-out sample)."""
    from deployzoo.data.words import open_word_set
    from deployzoo.process.crnn import preprocess
    from deployzoo.process.image import load_image

    ds = open_word_set(data)
    if len(ds) == 0:
        raise DatasetError(f"calibration data {data}: the word set is empty")
    out = []
    for i in spread(len(ds), min(len(ds), n + skip)):
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


def image_files(data: str | os.PathLike) -> list[Path]:
    p = Path(data)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DatasetError(f"calibration data {p}: not found")
    files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    if not files:
        raise DatasetError(f"calibration data {p}: no images ({', '.join(IMAGE_SUFFIXES)}) found under it")
    return files


def vision_preprocess(model: str, hw: Sequence[int] | None = None) -> Callable[[np.ndarray], np.ndarray]:
    try:
        from deployzoo.process import vision
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise EngineError(f"calibration for {model}: deployzoo.process.vision is not available ({e}); "
                          "pass preprocess=<uint8 RGB (H, W, 3) -> float32 (3, H, W)> to build_engine") from None
    spec = get_spec(model)
    fn = getattr(vision, spec.preprocess_fn, None) if spec.preprocess_fn else None
    if fn is None:
        raise EngineError(f"calibration for {model}: no vision pre-processing registered (ModelSpec.preprocess_fn "
                          "names a function of deployzoo.process.vision); pass preprocess=... to build_engine")
    if spec.resize_to_input:
        import cv2

        h, w = hw or spec.input_shape[1:]

        def fixed_size(rgb: np.ndarray) -> np.ndarray:
            """The engine's fixed H x W (Cityscapes frames already are: then this is the exact test pipeline)."""
            if rgb.shape[:2] != (h, w):
                rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
            return fn(rgb, None)

        return fixed_size
    return fn


def sample_items(model: str, data, n: int, meta: dict, preprocess: Callable | None = None,
           skip: int = 0, hw: Sequence[int] | None = None) -> tuple[list[np.ndarray], list | None]:
    """Up to ``n`` pre-processed inputs spread over ``data``, and their labels where the data set has them
    (CRNN word sets: each label as the class indices of its normalised text) or None."""
    if is_text(model):
        from deployzoo.process.crnn import CrnnPreprocess
        from deployzoo.process.text import ALPHABET, encode, normalize_label

        alphabet = meta.get("alphabet") or ALPHABET
        pairs = word_items(data, n, CrnnPreprocess.from_dict(meta.get("preprocess", {})), skip)
        return [x for x, _ in pairs], [tuple(encode(normalize_label(y, alphabet), alphabet)) for _, y in pairs]
    from deployzoo.process.image import load_image

    fn = preprocess or vision_preprocess(model, hw)
    read = get_spec(model).read_image or (lambda f: load_image(f, "RGB"))  # as the model's evaluation reads
    files = image_files(data)
    out = []
    for i in spread(len(files), min(len(files), n + skip)):
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
    if is_text(model):
        cfg = CrnnPreprocess.from_dict(meta.get("preprocess", {}))
        for idx in batches_by_width(range(len(items)), lambda i: items[i].shape[-1], bs, pool_batches=1 << 30,
                                    bucket_of=cfg.padded_width):
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
    items, _ = sample_items(model, data_path, count, meta, preprocess)
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
