"""Accuracy evaluation per task: words (word accuracy), classification (top-1/top-5), segmentation (mIoU).

``evaluate`` is the one entry point: ``deployzoo eval`` (one runner or several engines), ``deployzoo run`` and
the bench scripts all call it with a runner (a checkpoint's or an engine) and get an ``Evaluation`` back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from deployzoo.errors import DeployzooError
from deployzoo.process.crnn import TALL

DEFAULT_BATCH = {"text": 64, "classification": 32, "segmentation": 1}


@dataclass
class Evaluation:
    """One runner on one or more data sets. ``results``: one per word set, or the single vision result."""

    model: str
    task: str
    source: str
    random_weights: bool
    batch_size: int
    results: list = field(default_factory=list)
    decoding: str | None = None  # words: the CTC decoder's name
    lexicon: str | None = None
    tall_crops: float | None = None  # words: crops taller than this x their width were also read turned

    @property
    def n(self) -> int:
        return sum(r.n for r in self.results)

    @property
    def accuracy(self) -> float:
        """The task's headline metric as a fraction: count-weighted word accuracy, top-1, or mIoU."""
        if self.task == "text":
            return sum(r.correct for r in self.results) / self.n if self.n else 0.0
        return self.results[0].accuracy

    @property
    def images_per_s(self) -> float:
        """End to end: read + decode + pre-process + infer + post-process."""
        if self.task == "text":
            seconds = sum(r.seconds for r in self.results)
            return self.n / seconds if seconds else 0.0
        if self.task == "classification":
            return self.results[0].images_per_s
        s = self.results[0].seconds_per_image
        return 1.0 / s if s else 0.0

    def report(self) -> str:
        """The seeds' report: the task's table(s), a warning for random weights, the ``top1`` / ``mIoU`` line."""
        warn = "WARNING: random weights: these accuracies are meaningless\n" if self.random_weights else ""
        if self.task == "text":
            from deployzoo.evaluation.words import format_report

            head = (f"model: {self.model}  weights: {self.source}  batch: {self.batch_size}  decoding: "
                    f"{self.decoding}" + (f" ({self.lexicon})" if self.lexicon else ""))
            return f"{head}\n{warn}{format_report(self.results)}"
        if self.task == "classification":
            from deployzoo.evaluation.classification import format_report
        else:
            from deployzoo.evaluation.segmentation import format_report
        return warn + format_report(self.results[0])

    def to_json(self) -> dict:
        if self.task != "text":
            return self.results[0].to_json()
        n = self.n
        return {"model": self.model, "weights": self.source, "random_weights": self.random_weights,
                "lexicon": self.lexicon, "decoding": self.decoding, "tall_crops_turned_above": self.tall_crops,
                "batch_size": self.batch_size, "n": n,
                "correct": sum(r.correct for r in self.results), "accuracy": self.accuracy,
                "mean_1_ned": sum(r.mean_1_ned * r.n for r in self.results) / n if n else 0.0,
                "dropped": sum(r.dropped for r in self.results), "errors": sum(r.errors for r in self.results),
                "datasets": [{k: v for k, v in r.to_json().items() if k != "predictions"} for r in self.results],
                "predictions": [{"data": r.data, **p} for r in self.results for p in r.predictions]}


def evaluate(model: str, runner, data: str | os.PathLike | Sequence[str | os.PathLike], meta: dict | None = None, *,
             batch_size: int | None = None, workers: int | None = None, progress: bool = False,
             limit: int | None = None, decode: str = "words", lexicon: str | os.PathLike | None = None,
             label_file: str | os.PathLike | None = None, flip: bool = False, scales: Sequence[float] = (1.0,),
             out_dir: str | os.PathLike | None = None, log: Callable[[str], None] | None = None,
             tall: float | None = TALL) -> Evaluation:
    """Accuracy of ``runner`` (``resolve_runner`` / ``open_engine``) for ``model`` on ``data``.

    ``meta``: what ``resolve_runner`` returned with the runner (source, pre-processing, alphabet); for an engine
    it may be left out. Words take several data sets (one table, count-weighted total) and ``decode`` / ``lexicon`` /
    ``tall`` (crops taller than this times their width are also read turned; None: upright only);
    ImageNet takes ``label_file``; Cityscapes takes ``flip`` / ``scales`` / ``out_dir``. ``batch_size`` defaults
    to 64 words, 32 ImageNet images or 1 Cityscapes frame."""
    from deployzoo.engines import Engine, engine_meta
    from deployzoo.specs import get_spec

    task = get_spec(model).task
    sets = [str(data)] if isinstance(data, (str, os.PathLike)) else [str(d) for d in data]
    if not sets:
        raise DeployzooError(f"eval {model}: no data set given")
    if task != "text" and len(sets) != 1:
        raise DeployzooError(f"eval {model}: give one --data folder (got {len(sets)})")
    if meta is None:
        if not isinstance(runner, Engine):
            raise DeployzooError("evaluate: pass the metadata resolve_runner returned with a non-engine runner")
        meta = engine_meta(runner)
    from deployzoo.predict import weights_source

    batch = batch_size or DEFAULT_BATCH[task]
    ev = Evaluation(model, task, weights_source(meta), bool(meta.get("random_weights")), batch)
    if task == "text":
        from deployzoo.evaluation.words import evaluate_words
        from deployzoo.predict import Recognizer

        rec = Recognizer.from_runner(runner, {**meta, "source": ev.source}, decode, lexicon, batch, tall)
        ev.decoding, ev.lexicon, ev.tall_crops = rec.decoder.name, str(lexicon) if lexicon else None, rec.tall
        ev.results = [evaluate_words(rec, d, batch_size=batch, workers=workers, progress=progress, model=model,
                                     limit=limit) for d in sets]
    elif task == "classification":
        from deployzoo.evaluation.classification import evaluate_imagenet

        ev.results = [evaluate_imagenet(runner, sets[0], batch_size=batch, workers=workers, progress=progress,
                                        limit=limit, label_file=label_file, model=model, source=ev.source,
                                        random_weights=ev.random_weights)]
    else:
        from deployzoo.evaluation.segmentation import evaluate_cityscapes

        ev.results = [evaluate_cityscapes(runner, sets[0], flip=flip, scales=tuple(scales), batch_size=batch,
                                          workers=workers, progress=progress, limit=limit, model=model,
                                          source=ev.source, random_weights=ev.random_weights, out_dir=out_dir,
                                          log=log)]
    return ev
