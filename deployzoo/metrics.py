"""Task metrics: word accuracy and normalised edit distance, top-k, confusion-matrix mIoU. numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rapidfuzz.distance import Levenshtein


def one_minus_ned(pred: str, gt: str) -> float:
    """1 - edit_distance / max(len(pred), len(gt)) (ICDAR 2019 normalisation); 1.0 when both are empty."""
    n = max(len(pred), len(gt))
    return 1.0 if n == 0 else 1.0 - Levenshtein.distance(pred, gt) / n


def topk_correct(logits: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """logits (N, C), labels (N,) -> {k: number of samples whose label is among the k highest logits}."""
    order = np.argsort(-logits, axis=1, kind="stable")
    hits = order == labels[:, None]
    return {k: int(hits[:, :k].any(axis=1).sum()) for k in ks}


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Pixel confusion matrix (num_classes, num_classes), rows = ground truth, columns = prediction."""
    m = gt != ignore_index
    idx = gt[m].astype(np.int64) * num_classes + pred[m].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU = TP / (TP + FP + FN); NaN for classes absent from both prediction and ground truth."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """mIoU over classes that occur (nan-mean, as mmseg)."""
    return float(np.nanmean(iou_from_confusion(cm)))
