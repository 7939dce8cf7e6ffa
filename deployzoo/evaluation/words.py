"""Word-recognition evaluation: case-insensitive alphanumeric word accuracy, 1 - NED, accuracy by length.

Images are decoded and pre-processed in DataLoader workers; the main process only batches, runs and decodes.
Unreadable samples count as wrong and are listed with their reason; samples whose label is empty after
normalisation are dropped from the protocol and counted.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deployzoo.data.words import FolderWordSet, LmdbWordSet, open_word_set
from deployzoo.errors import DeployzooError
from deployzoo.evaluation.common import iter_decoded, note_error, progress_bar
from deployzoo.metrics import one_minus_ned
from deployzoo.process.crnn import CrnnPreprocess, views
from deployzoo.process.image import load_image
from deployzoo.process.text import LabelStats, normalize_label
from deployzoo.predict import Recognizer

LENGTH_CAP = 12  # by-length table groups labels of this length and longer


@dataclass
class _Item:
    index: int
    key: str
    label: str  # raw
    norm: str  # normalised label
    x: np.ndarray | tuple[np.ndarray, ...] | None = None  # process.crnn.views
    error: str | None = None


class _DecodedWords:
    """Raw sample -> pre-processed array, run inside DataLoader workers. Holds only the data set and the
    pre-processing parameters (cheap to send to spawned workers; never the model or an engine session)."""

    def __init__(self, ds: LmdbWordSet | FolderWordSet, cfg: CrnnPreprocess, tall: float | None) -> None:
        self.ds, self.cfg, self.tall = ds, cfg, tall

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> _Item:
        s = self.ds[i]
        item = _Item(i, s.key, s.label, normalize_label(s.label))
        if s.error:
            item.error = s.error
        elif item.norm:  # emptied labels are dropped: no need to decode them
            try:
                gray = load_image(s.data if s.data is not None else s.path, "L", name=s.key)
                item.x = views(gray, self.cfg, self.tall)
            except DeployzooError as e:
                item.error = str(e)
        return item


@dataclass
class WordEvalResult:
    model: str
    data: str
    layout: str
    n: int = 0  # samples evaluated (unreadable ones included, counted wrong)
    correct: int = 0
    accuracy: float = 0.0
    mean_1_ned: float = 0.0
    dropped: int = 0  # label empty after normalisation
    errors: int = 0  # unreadable samples
    seconds: float = 0.0
    images_per_s: float = 0.0  # end to end: read + decode + pre-process + infer + decode
    infer_images_per_s: float = 0.0  # model only
    labels: str = ""
    by_length: dict[str, list[int]] = field(default_factory=dict)  # "len" -> [n, correct]
    error_list: list[dict] = field(default_factory=list)
    predictions: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_words(rec: Recognizer, data: str | os.PathLike, batch_size: int = 64, workers: int | None = None,
                   progress: bool = True, model: str = "crnn", limit: int | None = None) -> WordEvalResult:
    """Evaluate ``rec`` on a word set; ``limit`` evaluates that many samples spread evenly over the set."""
    from deployzoo.evaluation.classification import subset_indices

    if batch_size < 1:
        raise DeployzooError(f"batch size must be at least 1, got {batch_size}")
    ds = open_word_set(data)
    indices = subset_indices(len(ds), limit)
    if workers is None:
        workers = min(4, os.cpu_count() or 1) if len(ds) > 256 else 0
    res = WordEvalResult(model=model, data=str(data), layout=ds.layout)
    stats = LabelStats()
    preds: dict[int, dict] = {}
    ned_sum = 0.0
    infer_s = 0.0
    t0 = time.perf_counter()

    bar = progress_bar(progress, len(indices), Path(data).name, min_total=200)
    try:
        ready: list[_Item] = []

        def flush(batch: list[_Item]) -> None:
            nonlocal infer_s
            t = time.perf_counter()
            outs = rec.infer([it.x for it in batch])
            infer_s += time.perf_counter() - t
            for it, d in zip(batch, outs):
                record(it, d.text, d.confidence, None)

        def record(it: _Item, pred: str, conf: float, error: str | None) -> None:
            nonlocal ned_sum
            ok = error is None and pred == it.norm
            res.n += 1
            res.correct += ok
            ned_sum += one_minus_ned(pred, it.norm)
            L = str(min(len(it.norm), LENGTH_CAP))
            cell = res.by_length.setdefault(L, [0, 0])
            cell[0] += 1
            cell[1] += ok
            p = {"key": it.key, "label": it.norm, "raw_label": it.label, "pred": pred, "correct": ok,
                 "confidence": round(float(conf), 6)}
            if error:
                note_error(res, p, it.key, error)
            preds[it.index] = p
            bar.advance()

        items = iter_decoded(_DecodedWords(ds, rec.cfg, rec.tall).__getitem__, indices, workers, max(8, batch_size // 2))
        stream = (it for it in items if _keep(it, stats, res, bar))
        for it in stream:
            if it.error is not None:
                record(it, "", 0.0, it.error)
            else:
                ready.append(it)
            if len(ready) >= batch_size * 8:  # Recognizer.infer batches them by width and decodes them together
                flush(ready)
                ready = []
        if ready:
            flush(ready)
    finally:
        bar.close()
    res.seconds = time.perf_counter() - t0
    res.accuracy = res.correct / res.n if res.n else 0.0
    res.mean_1_ned = ned_sum / res.n if res.n else 0.0
    res.images_per_s = res.n / res.seconds if res.seconds else 0.0
    res.infer_images_per_s = (res.n - res.errors) / infer_s if infer_s else 0.0
    res.labels = stats.summary()
    res.by_length = dict(sorted(res.by_length.items(), key=lambda kv: int(kv[0])))
    res.predictions = [preds[i] for i in sorted(preds)]
    return res


def _keep(it: _Item, stats: LabelStats, res: WordEvalResult, bar) -> bool:
    if it.error is None or it.label:
        stats.add(it.label, it.norm)
    if not it.norm and it.error is None:
        res.dropped += 1
        bar.advance()
        return False
    return True


# ----------------------------------------------------------------- reporting

def format_report(results: list[WordEvalResult], by_length: bool = True) -> str:
    """The seeds' ``top1 accuracy`` line, then a benchmark table (count-weighted total for several sets)."""
    lines = []
    hdr = f"| {'data':<24} | {'n':>6} | {'correct':>7} | {'accuracy':>8} | {'1-NED':>6} | {'dropped':>7} | {'errors':>6} | {'img/s':>7} |"
    lines += [hdr, "|" + "|".join("-" * (len(c)) for c in hdr.split("|")[1:-1]) + "|"]
    for r in results:
        lines.append(f"| {_short(r.data):<24} | {r.n:>6} | {r.correct:>7} | {r.accuracy * 100:>8.2f} | "
                     f"{r.mean_1_ned * 100:>6.2f} | {r.dropped:>7} | {r.errors:>6} | {r.images_per_s:>7.1f} |")
    n = sum(r.n for r in results)
    correct = sum(r.correct for r in results)
    if len(results) > 1:
        ned = sum(r.mean_1_ned * r.n for r in results) / n if n else 0.0
        secs = sum(r.seconds for r in results)
        lines.append(f"| {'total (count-weighted)':<24} | {n:>6} | {correct:>7} | {correct / max(n, 1) * 100:>8.2f} | "
                     f"{ned * 100:>6.2f} | {sum(r.dropped for r in results):>7} | "
                     f"{sum(r.errors for r in results):>6} | {n / secs if secs else 0:>7.1f} |")
    for r in results:
        lines.append(f"{_short(r.data)}: {r.labels}")
        for e in r.error_list[:5]:
            lines.append(f"  unreadable {e['key']}: {e['error']}")
        if len(r.error_list) > 5:
            lines.append(f"  ... {len(r.error_list) - 5} more unreadable samples (see --json)")
    if by_length:
        lengths = sorted({int(k) for r in results for k in r.by_length})
        cells = []
        for L in lengths:
            tot = [sum(r.by_length.get(str(L), [0, 0])[i] for r in results) for i in (0, 1)]
            name = f"{L}+" if L == LENGTH_CAP else str(L)
            cells.append(f"{name}:{tot[1] / tot[0] * 100:.1f}% ({tot[0]})")
        lines.append("accuracy by label length: " + "  ".join(cells))
    lines.append(f"top1 accuracy: {correct / max(n, 1):.6f}")
    return "\n".join(lines)


def _short(path: str, n: int = 24) -> str:
    s = Path(path).name or path
    return s if len(s) <= n else "..." + s[-(n - 3):]
