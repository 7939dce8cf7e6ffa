"""ImageNet classification evaluation (VOLO-D2): top-1 / top-5 accuracy over any runner.

Images are decoded and pre-processed (``volo_preprocess``) in DataLoader workers; the main process batches, runs
and scores. An unreadable image counts as wrong (top-1 and top-5) and is listed with its reason.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deployzoo.data.imagenet import ImageNetVal, open_imagenet
from deployzoo.errors import DeployzooError
from deployzoo.evaluation.common import default_workers, iter_decoded, note_error, progress_bar
from deployzoo.evaluation.report import markdown_table
from deployzoo.process.vision import volo_preprocess

RANDOM_WEIGHTS_LINE = ("WARNING: random weights (--random-weights): these numbers measure the pipeline, not the "
                       "published model")


# ------------------------------------------------------------------ shared by classification and segmentation


def subset_indices(n: int, limit: int | None) -> list[int]:
    """All of ``range(n)``, or ``limit`` indices spread evenly over it (deterministic; every class folder or city
    contributes, unlike the first ``limit``)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit <= 0:
        raise DeployzooError(f"limit must be positive, got {limit}")
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, limit)})



# ------------------------------------------------------------------ classification


@dataclass
class _Item:
    index: int
    key: str
    label: int
    x: np.ndarray | None = None
    error: str | None = None


class _Decode:
    """Sample index -> _Item with the pre-processed image, in a DataLoader worker (picklable for spawn)."""

    def __init__(self, ds: ImageNetVal) -> None:
        self.ds = ds

    def __call__(self, i: int) -> _Item:
        s = self.ds[i]
        it = _Item(i, s.key, s.label)
        try:
            it.x = volo_preprocess(self.ds.load(i))
        except DeployzooError as e:
            it.error = str(e)
        return it


@dataclass
class ClassificationResult:
    model: str
    data: str
    layout: str
    dataset: str = ""  # reader summary: images, classes, label source
    source: str = ""  # checkpoint file or engine directory the runner came from
    runner: str = ""  # runner name (pytorch, ort, ...)
    random_weights: bool = False
    metric: str = "top1"
    n: int = 0  # images evaluated (unreadable ones included, counted wrong)
    correct: int = 0  # top-1 correct
    top5_correct: int = 0
    accuracy: float = 0.0  # top-1 as a fraction
    top1: float = 0.0
    top5: float = 0.0
    errors: int = 0
    limit: int | None = None
    batch_size: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0  # end to end: read + decode + pre-process + infer
    infer_images_per_s: float = 0.0  # runner only
    error_list: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_imagenet(runner, data: str | os.PathLike | ImageNetVal, batch_size: int = 32, workers: int | None = None,
                      progress: bool = True, limit: int | None = None, label_file: str | os.PathLike | None = None,
                      model: str = "volo_d2", source: str = "", random_weights: bool = False,
                      topk: int = 5) -> ClassificationResult:
    """Top-1 / top-5 of ``runner`` ((B, 3, 224, 224) float32 -> (B, 1000) logits) on an ImageNet validation set.

    Args:
        runner: any Runner (``EagerRunner``, an engine); called with batches of ``volo_preprocess`` outputs.
        data: ImageNet root, ``val/`` folder, image folder with ``label_file``, or an opened ``ImageNetVal``.
        batch_size: images per runner call (the last batch may be smaller).
        workers: decoding processes; default 0 for <= 64 images, else min(4, CPUs).
        progress: show a progress bar.
        limit: evaluate ``limit`` images spread evenly over the set (sorted order) instead of all.
        label_file: ``FILE LABEL`` lines (see ``deployzoo.data.imagenet``); class folders are used without it.
        model, source, random_weights: recorded in the result (and the report warns about random weights).
        topk: how many (class, probability) pairs each prediction lists.
    """
    from deployzoo.predict import Classifier

    ds = data if isinstance(data, ImageNetVal) else open_imagenet(data, label_file)
    idx = subset_indices(len(ds), limit)
    if workers is None:
        workers = default_workers(len(idx), 64, 4)
    clf = Classifier(runner, topk=max(5, topk), batch_size=batch_size, source=source, random_weights=random_weights)
    res = ClassificationResult(model=model, data=str(ds.root), layout=ds.layout, dataset=ds.summary, source=source,
                               runner=getattr(runner, "name", type(runner).__name__), random_weights=random_weights,
                               limit=limit, batch_size=batch_size)
    preds: dict[int, dict] = {}
    infer_s = 0.0
    decode = _Decode(ds)
    t0 = time.perf_counter()

    def record(it: _Item, top: list[tuple[int, float]], error: str | None) -> None:
        ids = [c for c, _ in top]
        ok1 = error is None and bool(ids) and ids[0] == it.label
        ok5 = error is None and it.label in ids[:5]
        res.n += 1
        res.correct += ok1
        res.top5_correct += ok5
        p = {"key": it.key, "label": it.label, "pred": ids[0] if ids else -1, "correct": ok1, "top5_correct": ok5,
             "topk": [[c, round(float(q), 6)] for c, q in top[:topk]]}
        if error:
            note_error(res, p, it.key, error)
        preds[it.index] = p
        bar.advance()

    def flush(batch: list[_Item]) -> None:
        nonlocal infer_s
        t = time.perf_counter()
        outs = clf.infer_batch([it.x for it in batch])
        infer_s += time.perf_counter() - t
        for it, c in zip(batch, outs):
            if max(it.label, 0) >= c.num_classes:
                raise DeployzooError(f"label {it.label} of {it.key} is outside the runner's {c.num_classes} classes")
            record(it, c.topk, None)

    bar = progress_bar(progress, len(idx), Path(str(ds.root)).name)
    try:
        ready: list[_Item] = []
        for it in iter_decoded(decode, idx, workers, chunk=max(1, min(batch_size, 32))):
            if it.error is not None:
                record(it, [], it.error)
                continue
            ready.append(it)
            if len(ready) == batch_size:
                flush(ready)
                ready = []
        if ready:
            flush(ready)
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    res.accuracy = res.top1 = res.correct / res.n if res.n else 0.0
    res.top5 = res.top5_correct / res.n if res.n else 0.0
    res.images_per_s = res.n / res.seconds if res.seconds else 0.0
    res.infer_images_per_s = (res.n - res.errors) / infer_s if infer_s else 0.0
    res.predictions = [preds[i] for i in sorted(preds)]
    return res


def format_report(results: ClassificationResult | list[ClassificationResult]) -> str:
    """A table (one row per data set), unreadable images, then the seeds' ``top1:`` / ``top5:`` lines."""
    results = [results] if isinstance(results, ClassificationResult) else list(results)
    rows = [[_short(r.data), r.n, r.correct, f"{r.top1 * 100:.2f}", f"{r.top5 * 100:.2f}", r.errors,
             f"{r.images_per_s:.1f}", f"{r.infer_images_per_s:.1f}"] for r in results]
    lines = [markdown_table(["data", "n", "top-1 correct", "top-1 %", "top-5 %", "errors", "img/s", "infer img/s"],
                            rows, align="<>>>>>>>")]
    for r in results:
        lines.append(f"{_short(r.data)}: {r.dataset}" + (f"; limit {r.limit}" if r.limit else ""))
        for e in r.error_list[:5]:
            lines.append(f"  unreadable: {e['error']}")
        if len(r.error_list) > 5:
            lines.append(f"  ... {len(r.error_list) - 5} more unreadable images (see --json)")
    if any(r.random_weights for r in results):
        lines.append(RANDOM_WEIGHTS_LINE)
    n = sum(r.n for r in results)
    lines.append(f"top1: {sum(r.correct for r in results) / max(n, 1):.6f}")
    lines.append(f"top5: {sum(r.top5_correct for r in results) / max(n, 1):.6f}")
    return "\n".join(lines)


def _short(path: str, n: int = 28) -> str:
    s = Path(path).name or path
    if s == "val" and Path(path).parent.name:
        s = f"{Path(path).parent.name}/val"
    return s if len(s) <= n else "..." + s[-(n - 3):]

