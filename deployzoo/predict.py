"""The predictors: images in, answers out, over any runner (a checkpoint or a built engine).

``deployzoo.load(model, checkpoint=... | engine=... | random_weights=True)`` returns the model's predictor:

    rec = deployzoo.load("crnn")                                   # Recognizer: the shipped weights (or engine)
    rec("word.png").text
    clf = deployzoo.load("volo_d2", checkpoint="d2_224_85.2.pth.tar")
    clf("cat.jpg").topk              # [(281, 0.73), (285, 0.11), ...]   (class index, probability)
    seg = deployzoo.load("ocrnet_hr18", checkpoint="ocrnet_hr18_512x1024_160k_cityscapes_....pth")
    seg("frankfurt.png")             # uint8 (H, W) Cityscapes train ids 0..18

The same objects serve the Python API, ``recognize`` / ``eval`` / ``serve`` and the benchmarks; nothing here imports
torch (a checkpoint's runner does, when one is used). Without a checkpoint the published vision models raise
CheckpointError saying where to download the weights; random weights are built only on ``random_weights=True`` and
every object and report made from them says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deployzoo.errors import DeployzooError
from deployzoo.process.crnn import (TALL, CrnnPreprocess, batches_by_width, output_length, pad_batch, preprocess,
                                    views)
from deployzoo.process.ctc import Decoded, make_decoder
from deployzoo.process.image import ImageLike, describe, load_image, prepare_each
from deployzoo.process.text import ALPHABET
from deployzoo.process.vision import (
    OCRNET_TEST_SCALE_WH,
    ocrnet_preprocess,
    seg_labels,
    seg_probs_add,
    softmax,
    volo_preprocess,
)

RANDOM_WEIGHTS_WARNING = ("random weights (random_weights=True / --random-weights): predictions and accuracy are "
                          "meaningless; use them to test the pipeline only")


def load_runner(model: str, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
                threads: int | None = None, engine: str | os.PathLike | None = None):
    """(runner, metadata) for a registered model; see ``deployzoo.engines.resolve_runner``."""
    from deployzoo.engines import resolve_runner

    return resolve_runner(model, checkpoint, engine, random_weights, threads)


def weights_source(meta: dict) -> str:
    """What the runner's weights are, for reports: the checkpoint path, or "random weights (seed 0)"."""
    return meta.get("source") or ("random weights (seed 0)" if meta.get("random_weights") else
                                  str(meta.get("checkpoint", "")))


def _run(runner, x: np.ndarray) -> np.ndarray:
    out = runner(np.ascontiguousarray(x, dtype=np.float32))
    return np.asarray(out)


# ------------------------------------------------------------------------------------------------ classification


@dataclass
class Classification:
    """One image's result: ``topk`` = [(class index, probability)], best first; ``error`` set if it was unreadable."""

    topk: list[tuple[int, float]]
    error: str | None = None
    num_classes: int = 0

    @property
    def index(self) -> int:
        """Top-1 class index (-1 for an unreadable image)."""
        return self.topk[0][0] if self.topk else -1

    @property
    def wnid(self) -> str:
        """Top-1 WordNet id (``n01440764``), for 1000-class models."""
        from deployzoo.data.imagenet import IMAGENET_WNIDS

        return IMAGENET_WNIDS[self.index] if 0 <= self.index < len(IMAGENET_WNIDS) else ""


class Classifier:
    """ImageNet classifier over any runner. ``clf(img)`` -> Classification; ``clf([img, ...])`` -> list of them.

    Images may be paths, bytes, PIL images or numpy arrays (EXIF orientation applied). In a list, an unreadable
    image gives a Classification with ``error`` set; the other images are still classified.
    """

    def __init__(self, runner, topk: int = 5, batch_size: int = 32, source: str = "",
                 random_weights: bool = False) -> None:
        if batch_size < 1 or topk < 1:
            raise DeployzooError(f"batch_size and topk must be >= 1, got {batch_size} and {topk}")
        self.runner = runner
        self.topk = topk
        self.batch_size = batch_size
        self.source = source
        self.random_weights = random_weights

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
                        model: str = "volo_d2", threads: int | None = None, engine=None, **kwargs) -> "Classifier":
        _check_task(model, "classification")
        runner, meta = load_runner(model, checkpoint, random_weights, threads, engine)
        return cls(runner, source=weights_source(meta), random_weights=meta["random_weights"], **kwargs)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> Classification | list[Classification]:
        if isinstance(images, (list, tuple)):
            return self.classify(list(images))
        return self.classify([images], raise_errors=True)[0]

    def classify(self, images: list[ImageLike], raise_errors: bool = False) -> list[Classification]:
        out, ready = prepare_each(images, self.prepare, lambda e: Classification([], error=e), raise_errors)
        for a in range(0, len(ready), self.batch_size):
            chunk = ready[a:a + self.batch_size]
            for (i, _), c in zip(chunk, self.infer_batch([x for _, x in chunk])):
                out[i] = c
        return out  # type: ignore[return-value]

    def prepare(self, item: ImageLike, name: str | None = None) -> np.ndarray:
        """One image -> float32 (3, 224, 224) (``volo_preprocess``). Files are read as the ImageNet eval reads them
        (timm's loader: no EXIF rotation), so the API and ``deployzoo eval`` agree on every file."""
        name = name or describe(item)
        if isinstance(item, (str, os.PathLike)):
            from deployzoo.data.imagenet import read_rgb

            return volo_preprocess(read_rgb(Path(item), name))
        return volo_preprocess(load_image(item, "RGB", name=name))

    def infer_batch(self, xs: list[np.ndarray]) -> list[Classification]:
        """Pre-processed images -> Classification each (softmax of the logits, top-k by stable descending order)."""
        logits = _run(self.runner, np.stack(xs))
        if logits.ndim != 2 or logits.shape[0] != len(xs):
            raise DeployzooError(f"runner output {logits.shape} is not (B={len(xs)}, classes) logits: wrong model?")
        probs = softmax(logits, axis=1)
        k = min(self.topk, logits.shape[1])
        order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return [Classification([(int(c), float(p[c])) for c in o], num_classes=logits.shape[1])
                for o, p in zip(order, probs)]


# ------------------------------------------------------------------------------------------------ segmentation


@dataclass
class Segmentation:
    """One image's result in a list call: ``labels`` uint8 (H, W) train ids, or ``error`` if it was unreadable."""

    labels: np.ndarray | None
    error: str | None = None


class Segmenter:
    """Cityscapes segmenter over any runner ((B, 3, h, w) -> (B, K, h/4, w/4) logits).

    ``seg(img)`` -> uint8 (H, W) train ids at the image's size; ``seg([img, ...])`` -> list of Segmentation.
    ``flip`` and ``scales`` turn on mmseg's test-time augmentation (softmax averaged over the views);
    ``test_scale`` is the test Resize box (w, h), ``None`` to feed images at their own size; ``"auto"`` (default):
    mmseg's (2048, 1024), or the (w, h) of an engine built at a fixed size (``--input-size``), so a Cityscapes frame
    is resized, keeping its ratio, to exactly what the engine takes.
    """

    def __init__(self, runner, flip: bool = False, scales: Sequence[float] = (1.0,),
                 test_scale: tuple[int, int] | str | None = "auto", source: str = "",
                 random_weights: bool = False) -> None:
        if not scales or any(s <= 0 for s in scales):
            raise DeployzooError(f"scales must be positive ratios, got {list(scales)}")
        spec = getattr(runner, "input_spec", None) or {}
        shape = spec.get("shape") or []
        self.fixed_hw = tuple(shape[-2:]) if len(shape) == 4 and all(isinstance(d, int) for d in shape[-2:]) else None
        if self.fixed_hw and len(scales) > 1:
            raise DeployzooError(f"engine {getattr(runner, 'path', '')}: input fixed at {self.fixed_hw[0]}x"
                                 f"{self.fixed_hw[1]}, so multi-scale testing needs a checkpoint (--checkpoint)")
        self.runner = runner
        self.flip = flip
        self.scales = tuple(float(s) for s in scales)
        if test_scale == "auto":
            test_scale = (self.fixed_hw[1], self.fixed_hw[0]) if self.fixed_hw else OCRNET_TEST_SCALE_WH
        self.test_scale = tuple(test_scale) if test_scale is not None else None
        self.source = source
        self.random_weights = random_weights
        self.infer_seconds = 0.0  # time spent inside the runner, accumulated

    @classmethod
    def from_checkpoint(cls, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
                        model: str = "ocrnet_hr18", threads: int | None = None, engine=None, **kwargs) -> "Segmenter":
        _check_task(model, "segmentation")
        runner, meta = load_runner(model, checkpoint, random_weights, threads, engine)
        return cls(runner, source=weights_source(meta), random_weights=meta["random_weights"], **kwargs)

    @property
    def augmented(self) -> bool:
        return self.flip or len(self.scales) > 1

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> np.ndarray | list[Segmentation]:
        if isinstance(images, (list, tuple)):
            out = []
            for item in images:
                try:
                    out.append(Segmentation(self.segment(item)))
                except DeployzooError as e:
                    out.append(Segmentation(None, str(e)))
            return out
        return self.segment(images)

    def segment(self, item: ImageLike) -> np.ndarray:
        rgb = load_image(item, "RGB", name=describe(item))
        return self.predict_views(self.prepare(rgb), rgb.shape[:2])

    def prepare(self, rgb: np.ndarray) -> list[np.ndarray]:
        """uint8 RGB (H, W, 3) -> one float32 (3, h, w) input per scale (flipped views are made at run time)."""
        views = [ocrnet_preprocess(rgb, self.test_scale, r) for r in self.scales]
        if self.fixed_hw and views[0].shape[-2:] != self.fixed_hw:
            raise DeployzooError(f"image {rgb.shape[1]}x{rgb.shape[0]} becomes a {views[0].shape[2]}x{views[0].shape[1]} "
                                 f"input, but the engine is fixed at {self.fixed_hw[1]}x{self.fixed_hw[0]}: use a "
                                 "checkpoint, or an engine built for this size")
        return views

    def _logits(self, x: np.ndarray) -> np.ndarray:
        t = time.perf_counter()
        out = _run(self.runner, x)
        self.infer_seconds += time.perf_counter() - t
        if out.ndim != 4 or out.shape[0] != x.shape[0]:
            raise DeployzooError(f"runner output {out.shape} is not (B={x.shape[0]}, classes, h, w) logits: "
                                 "wrong model?")
        return out

    def predict_batch(self, xs: list[np.ndarray], ori_hws: list[tuple[int, int]]) -> list[np.ndarray]:
        """Single-view inputs of one shape -> label maps at their original sizes (one runner call)."""
        logits = self._logits(np.stack(xs))
        return [seg_labels(lg, x.shape[1:], hw) for lg, x, hw in zip(logits, xs, ori_hws)]

    def predict_views(self, views: list[np.ndarray], ori_hw: tuple[int, int]) -> np.ndarray:
        """The prepared views of one image -> uint8 (H, W) labels: argmax of the logits (one view), or of the summed
        softmax probabilities over scales and flips (mmseg TTA)."""
        if not self.flip and len(views) == 1:
            return self.predict_batch(views, [ori_hw])[0]
        acc = None
        for x in views:
            batch = np.stack([x, x[:, :, ::-1]]) if self.flip else x[None]
            out = self._logits(batch)
            if acc is None:
                acc = np.zeros((out.shape[1], *ori_hw), np.float32)
            seg_probs_add(acc, out[0], x.shape[1:])
            if self.flip:
                seg_probs_add(acc, out[1], x.shape[1:], flipped=True)
        return acc.argmax(0).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ constructors


def _check_task(model: str, task: str) -> None:
    from deployzoo.specs import get_spec

    if get_spec(model).task != task:
        raise DeployzooError(f"model '{model}' is a {get_spec(model).task} model, not {task}")


def from_checkpoint(model: str, checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
                    **kwargs) -> Classifier | Segmenter:
    """A ready Classifier (``volo_d2``) or Segmenter (``ocrnet_hr18``). ``kwargs`` go to the class (``topk``,
    ``batch_size``, ``flip``, ``scales``, ``test_scale``, ``threads``)."""
    from deployzoo.specs import get_spec

    task = get_spec(model).task
    if task == "classification":
        return Classifier.from_checkpoint(checkpoint, random_weights, model=model, **kwargs)
    if task == "segmentation":
        return Segmenter.from_checkpoint(checkpoint, random_weights, model=model, **kwargs)
    raise DeployzooError(f"model '{model}' ({task}) is not a vision model; use deployzoo.load('{model}')")


# ------------------------------------------------------------------------------------ word recognition

DECODE_GROUP = 512  # images whose network outputs a Recognizer decodes together (logits ~4 KB per image)


class Recognizer:
    """CRNN recogniser. ``rec(img)`` -> Decoded; ``rec([img, ...])`` -> list of Decoded.

    Images may be paths, bytes, PIL images or numpy arrays. In a list, an unreadable image gives a Decoded with
    ``error`` set and empty text; the other images are still read.
    """

    def __init__(self, runner, cfg: CrnnPreprocess = CrnnPreprocess(), alphabet: str = ALPHABET,
                 decoder=None, batch_size: int = 32, source: str = "", tall: float | None = TALL) -> None:
        if batch_size < 1:
            raise DeployzooError(f"batch size must be at least 1, got {batch_size}")
        self.runner = runner
        self.cfg = cfg
        self.alphabet = alphabet
        self.decoder = decoder if decoder is not None else make_decoder("words", alphabet=alphabet)
        self.batch_size = batch_size
        self.source = source
        self.tall = tall  # crops taller than this x their width are also read turned (None: never)

    @classmethod
    def from_weights(cls, checkpoint: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
                     random_weights: bool = False, lexicon: str | os.PathLike | None = None, batch_size: int = 32,
                     threads: int | None = None, decode: str = "words", tall: float | None = TALL) -> "Recognizer":
        """From a checkpoint (default: the shipped weights), an engine dir, or explicit random weights.

        ``decode``: ``words`` (English word prior, default) or ``greedy``; ``lexicon``: a closed word list instead;
        ``tall``: crops taller than this times their width are also read turned (None: every crop upright only)."""
        from deployzoo.engines import resolve_runner

        runner, meta = resolve_runner("crnn", checkpoint, engine, random_weights, threads)
        return cls.from_runner(runner, meta, decode, lexicon, batch_size, tall)

    from_checkpoint = from_weights

    @classmethod
    def from_runner(cls, runner, meta: dict, decode: str = "words", lexicon: str | os.PathLike | None = None,
                    batch_size: int = 32, tall: float | None = TALL) -> "Recognizer":
        """Over any runner with the metadata ``resolve_runner`` / ``engine_meta`` give (pre-processing, alphabet,
        source): the one place a Recognizer is made from weights' metadata."""
        alphabet = meta.get("alphabet") or ALPHABET
        rec = cls(runner, CrnnPreprocess.from_dict(meta.get("preprocess") or {}), alphabet,
                  make_decoder(decode, lexicon, alphabet), batch_size, source=meta.get("source", ""), tall=tall)
        rec.random_weights = bool(meta.get("random_weights"))
        return rec

    @classmethod
    def from_engine(cls, engine, lexicon: str | os.PathLike | None = None, batch_size: int = 32,
                    decode: str = "words") -> "Recognizer":
        """Over a loaded CRNN ``Engine`` (``deployzoo.engines.open_engine``), with its pre-processing and
        alphabet."""
        from deployzoo.engines import engine_meta
        from deployzoo.specs import is_text

        if not is_text(engine.model):
            raise DeployzooError(f"engine {engine.path}: built for '{engine.model}', not a word recogniser")
        return cls.from_runner(engine, {**engine_meta(engine), "source": str(engine.path)}, decode, lexicon,
                               batch_size)

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> Decoded | list[Decoded]:
        if isinstance(images, (list, tuple)):
            return self.recognize(list(images))
        return self.recognize([images], raise_errors=True)[0]

    def recognize(self, images: list[ImageLike], raise_errors: bool = False) -> list[Decoded]:
        out, ready = prepare_each(images, self.prepare_views, lambda e: Decoded("", 0.0, [], error=e), raise_errors)
        for i, res in zip([i for i, _ in ready], self.infer([x for _, x in ready])):
            out[i] = res
        return out  # type: ignore[return-value]

    def prepare(self, item: ImageLike, name: str | None = None) -> np.ndarray:
        """One image -> float32 (1, 32, w), upright only."""
        return preprocess(load_image(item, "L", name=name or describe(item)), self.cfg)

    def prepare_views(self, item: ImageLike, name: str | None = None) -> np.ndarray | tuple[np.ndarray, ...]:
        """One image -> what ``infer`` reads: (1, 32, w), or for a tall crop a tuple of it upright and turned a
        quarter both ways (``process.crnn.views``; ``self.tall = None`` turns that off)."""
        return views(load_image(item, "L", name=name or describe(item)), self.cfg, self.tall)

    def infer(self, xs: list[np.ndarray | tuple[np.ndarray, ...]]) -> list[Decoded]:
        """Pre-processed inputs (``prepare`` or ``prepare_views``) -> Decoded, in input order. Batches group inputs
        of one width bucket; a tuple of views gives the reading ``pick_view`` prefers. The outputs of up to
        ``DECODE_GROUP`` images are decoded together (``decode_batches``: the word prior searches once for them);
        each image's text is the one it gets alone."""
        flat = [(i, k, x) for i, v in enumerate(xs) for k, x in enumerate(v if isinstance(v, tuple) else (v,))]
        reads: list[dict[int, Decoded]] = [{} for _ in xs]
        group: list[tuple[list, np.ndarray, list[int]]] = []  # (chunk, logits, lengths) not decoded yet

        def decode_group() -> None:
            for (chunk, _, _), decoded in zip(group, self.decoder.decode_batches([(o, n) for _, o, n in group])):
                for (i, k, _), d in zip(chunk, decoded):
                    reads[i][k] = d
            group.clear()

        for chunk in batches_by_width(flat, lambda it: it[2].shape[-1], self.batch_size, pool_batches=1 << 30,
                                      bucket_of=self.cfg.padded_width):
            group.append((chunk, *self.run_batch([x for _, _, x in chunk])))
            if sum(len(c) for c, _, _ in group) >= DECODE_GROUP:
                decode_group()
        if group:
            decode_group()
        return [pick_view([r[k] for k in sorted(r)]) for r in reads]

    def run_batch(self, xs: list[np.ndarray]) -> tuple[np.ndarray, list[int]]:
        """One batch through the network: pad to a common width, run -> (logits (T, B, C), each image's frames)."""
        x, widths = pad_batch(xs, self.cfg)
        logits = self.runner(x)
        return logits, [min(output_length(int(w)), logits.shape[0]) for w in widths]

    def infer_batch(self, xs: list[np.ndarray]) -> list[Decoded]:
        """One batch: pad to a common width, run, decode only each image's own frames."""
        return self.decoder.decode_batch(*self.run_batch(xs))


def pick_view(reads: list[Decoded]) -> Decoded:
    """The reading of a crop read in several views (upright first, then turned; ``process.crnn.views``): a turned
    reading of at least 2 characters replaces the upright one when it is more confident. One character or none
    reads about the same either way up, so it never turns a crop (a tall '4' stays '4')."""
    best, score = reads[0], reads[0].confidence if reads[0].text else 0.0  # an empty upright reading yields
    for d in reads[1:]:
        if len(d.text) >= 2 and d.confidence > score:
            best, score = d, d.confidence
    return best


def load(model: str = "crnn", checkpoint: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
         random_weights: bool = False, **kwargs):
    """Python API: a ready predictor. ``crnn`` -> Recognizer, ``volo_d2`` -> Classifier, ``ocrnet_hr18`` -> Segmenter.

    Weights: ``checkpoint`` (CRNN defaults to the shipped weights), ``engine`` (a dir made by ``deployzoo build``),
    or ``random_weights=True`` explicitly.
    """
    from deployzoo.specs import get_spec

    if get_spec(model).task == "text":
        return Recognizer.from_weights(checkpoint, engine, random_weights, **kwargs)
    return from_checkpoint(model, checkpoint, random_weights, engine=engine, **kwargs)
