"""Cityscapes segmentation evaluation (OCRNet): mIoU, per-class IoU, aAcc and mAcc as mmseg's ``IoUMetric``.

Whole-image inference (mmseg ``test_cfg.mode='whole'``): each frame goes through the test Resize (a 1024x2048 frame
is unchanged), the runner gives 1/4-resolution logits, which are resized bilinearly to the input size and then to
the frame's size and argmaxed. One 19x19 confusion matrix is accumulated over the whole set (pixels labelled 255
ignored); IoU = TP / (TP + FP + FN) per class, mIoU the mean over classes that occur (NaN-mean).

Images and labels are decoded and pre-processed in DataLoader workers. An unreadable image or label map is listed
with its reason and left out of the confusion matrix; the report states how many images the numbers cover.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deployzoo.data.cityscapes import CityscapesVal, open_cityscapes
from deployzoo.errors import DeployzooError
from deployzoo.evaluation.classification import RANDOM_WEIGHTS_LINE, subset_indices
from deployzoo.evaluation.common import default_workers, iter_decoded, note_error
from deployzoo.evaluation.report import markdown_table
from deployzoo.metrics import confusion_matrix, iou_from_confusion
from deployzoo.models.ocrnet import CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES
from deployzoo.process.vision import ocrnet_preprocess


@dataclass
class _Item:
    index: int
    key: str
    views: list[np.ndarray] | None = None
    gt: np.ndarray | None = None
    ori_hw: tuple[int, int] = (0, 0)
    error: str | None = None
    decode_s: float = 0.0


class _Decode:
    """Index -> _Item with the image's network inputs (one per scale) and its train-id map, in a DataLoader worker
    (picklable for spawn: holds the data set and the test sizes, not the runner)."""

    def __init__(self, ds: CityscapesVal, scales: Sequence[float], test_scale: tuple[int, int] | None) -> None:
        self.ds, self.scales, self.test_scale = ds, tuple(scales), test_scale

    def __call__(self, i: int) -> _Item:
        t = time.perf_counter()
        it = _Item(i, self.ds[i].key)
        try:
            rgb, it.gt = self.ds.load(i)
            it.ori_hw = rgb.shape[:2]
            it.views = [ocrnet_preprocess(rgb, self.test_scale, r) for r in self.scales]
        except (DeployzooError, ValueError) as e:
            it.error = str(e)
        it.decode_s = time.perf_counter() - t
        return it


@dataclass
class SegmentationResult:
    model: str
    data: str
    layout: str
    dataset: str = ""
    source: str = ""
    runner: str = ""
    random_weights: bool = False
    metric: str = "miou"
    flip: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])
    test_scale: list[int] | None = None  # Resize box (w, h); None = images at their own size
    n: int = 0  # images attempted
    evaluated: int = 0  # images in the confusion matrix (n - errors)
    errors: int = 0
    accuracy: float = 0.0  # = miou, the headline metric, as a fraction
    miou: float = 0.0
    aacc: float = 0.0  # all-pixel accuracy over labelled pixels
    macc: float = 0.0  # mean per-class accuracy
    correct: int = 0  # correctly labelled pixels
    pixels: int = 0  # labelled (non-ignored) pixels
    class_names: list[str] = field(default_factory=lambda: list(CITYSCAPES_CLASSES))
    iou: list[float | None] = field(default_factory=list)  # per class; None where the class never occurs
    class_acc: list[float | None] = field(default_factory=list)
    confusion: list[list[int]] = field(default_factory=list)  # rows ground truth, columns prediction
    limit: int | None = None
    seconds: float = 0.0
    seconds_per_image: float = 0.0
    infer_seconds_per_image: float = 0.0
    error_list: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)  # per image: key, size, pixel_acc, seconds

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_cityscapes(runner, data: str | os.PathLike | CityscapesVal, flip: bool = False,
                        scales: Sequence[float] = (1.0,), batch_size: int = 1, workers: int | None = None,
                        progress: bool = True, limit: int | None = None, split: str = "val",
                        test_scale: tuple[int, int] | str | None = "auto", model: str = "ocrnet_hr18",
                        source: str = "", random_weights: bool = False, out_dir: str | os.PathLike | None = None,
                        log: Callable[[str], None] | None = None) -> SegmentationResult:
    """mIoU of ``runner`` ((B, 3, H, W) float32 -> (B, 19, H/4, W/4) logits) on Cityscapes.

    Args:
        runner: any Runner; called with ``ocrnet_preprocess`` outputs (1024x2048 for Cityscapes frames).
        data: folder holding ``leftImg8bit/`` and ``gtFine/``, or an opened ``CityscapesVal``.
        flip, scales: test-time augmentation (horizontal flip; image ratios such as 0.5 .. 1.75), softmax-averaged.
        batch_size: frames per runner call without augmentation (frames of one size only).
        workers: decoding processes; default 0 for <= 4 images, else min(2, CPUs).
        progress: print one line per image (time, pixel accuracy) to ``log`` (default: stderr).
        limit: evaluate ``limit`` frames spread evenly over the set.
        test_scale: mmseg test Resize box (w, h) with keep_ratio; ``None`` feeds frames at their own size;
            ``"auto"``: (2048, 1024), or the size a fixed-size engine was built at.
        out_dir: if given, write each prediction as ``<out_dir>/<city>/<name>_pred_labelTrainIds.png``.
        model, source, random_weights: recorded in the result (the report warns about random weights).
    """
    from deployzoo.predict import Segmenter

    if batch_size < 1:
        raise DeployzooError(f"batch_size must be >= 1, got {batch_size}")
    ds = data if isinstance(data, CityscapesVal) else open_cityscapes(data, split)
    idx = subset_indices(len(ds), limit)
    if workers is None:
        workers = default_workers(len(idx), 4, 2)
    seg = Segmenter(runner, flip=flip, scales=scales, test_scale=test_scale, source=source,
                    random_weights=random_weights)
    if log is None:
        log = (lambda s: print(s, file=sys.stderr, flush=True)) if progress else (lambda s: None)
    res = SegmentationResult(model=model, data=str(ds.root), layout=ds.layout, dataset=ds.summary, source=source,
                             runner=getattr(runner, "name", type(runner).__name__), random_weights=random_weights,
                             flip=flip, scales=list(seg.scales), test_scale=list(seg.test_scale) if seg.test_scale else None,
                             limit=limit)
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    preds: dict[int, dict] = {}
    out_path = Path(out_dir) if out_dir else None
    total = len(idx)
    t0 = time.perf_counter()

    decode = _Decode(ds, seg.scales, seg.test_scale)

    def record(it: _Item, labels: np.ndarray | None, seconds: float, infer_s: float, error: str | None) -> None:
        res.n += 1
        p: dict = {"key": it.key}
        if error is None:
            if labels.max(initial=0) >= NUM_CLASSES:
                raise DeployzooError(f"runner predicts class {labels.max()} but Cityscapes has {NUM_CLASSES}")
            c = confusion_matrix(labels, it.gt, NUM_CLASSES, IGNORE_INDEX)
            np.add(cm, c, out=cm)
            lab = int(c.sum())
            acc = float(np.trace(c) / lab) if lab else None
            p.update(size=[int(it.ori_hw[0]), int(it.ori_hw[1])], pixel_acc=_r(acc), labelled=lab,
                     seconds=round(seconds, 4), infer_seconds=round(infer_s, 4))
            msg = f"{it.ori_hw[0]}x{it.ori_hw[1]}  infer {infer_s:7.2f} s  total {seconds:7.2f} s  " \
                  f"pixel acc {acc if acc is not None else float('nan'):.4f}"
            if out_path is not None:
                _save(out_path, it.key, labels)
        else:
            note_error(res, p, it.key, error)
            msg = f"ERROR {error}"
        preds[it.index] = p
        log(f"[{res.n:>{len(str(total))}}/{total}] {it.key}  {msg}")

    pending: list[tuple[_Item, float]] = []

    def flush() -> None:
        t = time.perf_counter()
        inf0 = seg.infer_seconds
        try:
            labels = seg.predict_batch([it.views[0] for it, _ in pending], [it.ori_hw for it, _ in pending])
        except DeployzooError as e:  # e.g. a frame whose size a fixed-shape engine cannot take: this batch only
            for it, dec in pending:
                record(it, None, dec, 0.0, str(e))
            pending.clear()
            return
        share, inf = (time.perf_counter() - t) / len(pending), (seg.infer_seconds - inf0) / len(pending)
        for (it, dec), lab in zip(pending, labels):
            record(it, lab, dec + share, inf, None)
        pending.clear()

    for it in iter_decoded(decode, idx, workers, chunk=1, prefetch=2):
        if it.error is not None:
            record(it, None, it.decode_s, 0.0, it.error)
            continue
        if seg.augmented:
            t = time.perf_counter()
            inf0 = seg.infer_seconds
            try:
                labels = seg.predict_views(it.views, it.ori_hw)
            except DeployzooError as e:
                record(it, None, it.decode_s, 0.0, str(e))
                continue
            record(it, labels, it.decode_s + time.perf_counter() - t, seg.infer_seconds - inf0, None)
            continue
        if pending and pending[0][0].views[0].shape != it.views[0].shape:
            flush()
        pending.append((it, it.decode_s))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()

    res.seconds = time.perf_counter() - t0
    res.evaluated = res.n - res.errors
    _fill_metrics(res, cm)
    res.seconds_per_image = res.seconds / res.n if res.n else 0.0
    res.infer_seconds_per_image = seg.infer_seconds / res.evaluated if res.evaluated else 0.0
    res.predictions = [preds[i] for i in sorted(preds)]
    return res


def _fill_metrics(res: SegmentationResult, cm: np.ndarray) -> None:
    iou = iou_from_confusion(cm)
    gt = cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(gt > 0, np.diag(cm) / np.maximum(gt, 1), np.nan)
    res.confusion = cm.astype(int).tolist()
    res.iou = [_r(v) for v in iou]
    res.class_acc = [_r(v) for v in acc]
    res.correct, res.pixels = int(np.trace(cm)), int(cm.sum())
    res.aacc = res.correct / res.pixels if res.pixels else 0.0
    res.miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else 0.0
    res.macc = float(np.nanmean(acc)) if np.isfinite(acc).any() else 0.0
    res.accuracy = res.miou


def _r(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) or np.isnan(v) else round(float(v), 6)


def _save(out_dir: Path, key: str, labels: np.ndarray) -> None:
    from PIL import Image

    from deployzoo.atomic import atomic_path

    with atomic_path(out_dir / f"{key}_pred_labelTrainIds.png") as tmp:  # never a half-written prediction map
        Image.fromarray(labels, "L").save(tmp, format="PNG")


def format_report(result: SegmentationResult) -> str:
    """Per-class IoU / Acc table (mmseg's layout), then a summary table and the ``mIoU:`` line."""
    r = result
    rows = [[name, _pct(i), _pct(a)] for name, i, a in zip(r.class_names, r.iou, r.class_acc)]
    lines = [markdown_table(["class", "IoU", "Acc"], rows, align="<>>")]
    tta = ("flip " if r.flip else "") + ("scales " + ",".join(f"{s:g}" for s in r.scales) if len(r.scales) > 1 else "")
    lines.append(markdown_table(
        ["data", "images", "errors", "aAcc", "mIoU", "mAcc", "s/img", "infer s/img", "aug"],
        [[_short(r.data), r.evaluated, r.errors, _pct(r.aacc), _pct(r.miou), _pct(r.macc),
          round(r.seconds_per_image, 2), round(r.infer_seconds_per_image, 2), tta.strip() or "none"]],
        align="<>>>>>>><"))
    lines.append(f"{_short(r.data)}: {r.dataset}" + (f"; limit {r.limit}" if r.limit else ""))
    if r.errors:
        lines.append(f"{r.errors} of {r.n} images could not be read and are not in the metrics:")
        for e in r.error_list[:5]:
            lines.append(f"  {e['key']}: {e['error']}")
        if len(r.error_list) > 5:
            lines.append(f"  ... {len(r.error_list) - 5} more (see --json)")
    if r.random_weights:
        lines.append(RANDOM_WEIGHTS_LINE)
    lines.append(f"mIoU: {r.miou * 100:.2f}  aAcc: {r.aacc * 100:.2f}  mAcc: {r.macc * 100:.2f}")
    return "\n".join(lines)


def _pct(v: float | None) -> str:
    return "nan" if v is None else f"{v * 100:.2f}"


def _short(path: str, n: int = 28) -> str:
    s = Path(path).name or path
    return s if len(s) <= n else "..." + s[-(n - 3):]
