"""Word recognition over any runner: images in, text and confidence out.

The same object serves the Python API, ``deployzoo recognize`` and ``deployzoo eval``; a checkpoint and a
built engine differ only in the runner they bring.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
import numpy as np

from deployzoo.errors import DeployzooError
from deployzoo.process.crnn import CrnnPreprocess, batches_by_width, output_length, pad_batch, preprocess
from deployzoo.process.ctc import Decoded, Lexicon, greedy_decode
from deployzoo.process.image import ImageLike, describe, load_image, prepare_each
from deployzoo.process.text import ALPHABET


class Recognizer:
    """CRNN recogniser. ``rec(img)`` -> Decoded; ``rec([img, ...])`` -> list of Decoded.

    Images may be paths, bytes, PIL images or numpy arrays. In a list, an unreadable image gives a Decoded with
    ``error`` set and empty text; the other images are still read.
    """

    def __init__(self, runner, cfg: CrnnPreprocess = CrnnPreprocess(), alphabet: str = ALPHABET,
                 lexicon: Lexicon | None = None, batch_size: int = 32, source: str = "") -> None:
        if batch_size < 1:
            raise DeployzooError(f"batch size must be at least 1, got {batch_size}")
        self.runner = runner
        self.cfg = cfg
        self.alphabet = alphabet
        self.lexicon = lexicon
        self.batch_size = batch_size
        self.source = source

    @classmethod
    def from_weights(cls, checkpoint: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
                     random_weights: bool = False, lexicon: str | os.PathLike | None = None, batch_size: int = 32,
                     threads: int | None = None) -> "Recognizer":
        """From a checkpoint (default: the shipped weights), an engine dir, or explicit random weights."""
        from deployzoo.engines import resolve_runner

        runner, meta = resolve_runner("crnn", checkpoint, engine, random_weights, threads)
        cfg = CrnnPreprocess.from_dict(meta.get("preprocess") or {})
        lex = Lexicon.from_file(lexicon) if lexicon else None
        rec = cls(runner, cfg, meta.get("alphabet") or ALPHABET, lex, batch_size, source=meta["source"])
        rec.random_weights = meta["random_weights"]
        return rec

    from_checkpoint = from_weights

    @classmethod
    def from_engine(cls, engine, lexicon: str | os.PathLike | None = None, batch_size: int = 32) -> "Recognizer":
        """Over a loaded CRNN ``Engine`` (``deployzoo.engines.open_engine``), with its pre-processing and
        alphabet."""
        from deployzoo.specs import is_text

        if not is_text(engine.model):
            raise DeployzooError(f"engine {engine.path}: built for '{engine.model}', not a word recogniser")
        lex = Lexicon.from_file(lexicon) if lexicon else None
        return cls(engine, CrnnPreprocess.from_dict(engine.preprocess), engine.alphabet or ALPHABET, lex, batch_size,
                   source=str(engine.path))

    def __call__(self, images: ImageLike | Sequence[ImageLike]) -> Decoded | list[Decoded]:
        if isinstance(images, (list, tuple)):
            return self.recognize(list(images))
        return self.recognize([images], raise_errors=True)[0]

    def recognize(self, images: list[ImageLike], raise_errors: bool = False) -> list[Decoded]:
        out, ready = prepare_each(images, self.prepare, lambda e: Decoded("", 0.0, [], error=e), raise_errors)
        for i, res in zip([i for i, _ in ready], self.infer([x for _, x in ready])):
            out[i] = res
        return out  # type: ignore[return-value]

    def prepare(self, item: ImageLike, name: str | None = None) -> np.ndarray:
        """One image -> float32 (1, 32, w), ready for ``infer``."""
        return preprocess(load_image(item, "L", name=name or describe(item)), self.cfg)

    def infer(self, xs: list[np.ndarray]) -> list[Decoded]:
        """Pre-processed inputs (1, 32, w_i) -> Decoded, in input order. Batches group images of similar width."""
        out: list[Decoded | None] = [None] * len(xs)
        for chunk in batches_by_width(range(len(xs)), lambda i: xs[i].shape[-1], self.batch_size, pool_batches=1 << 30):
            for i, d in zip(chunk, self.infer_batch([xs[i] for i in chunk])):
                out[i] = d
        return out  # type: ignore[return-value]

    def infer_batch(self, xs: list[np.ndarray]) -> list[Decoded]:
        """One batch: pad to a common width, run, decode only each image's own frames."""
        x, widths = pad_batch(xs, self.cfg)
        logits = self.runner(x)  # (T, B, C)
        lengths = [min(output_length(int(w)), logits.shape[0]) for w in widths]
        if self.lexicon is not None:
            return self.lexicon.decode_batch(logits, lengths)
        return greedy_decode(logits, lengths, self.alphabet)


def load(model: str = "crnn", checkpoint: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
         random_weights: bool = False, **kwargs):
    """Python API: a ready predictor. ``crnn`` -> Recognizer, ``volo_d2`` -> Classifier, ``ocrnet_hr18`` -> Segmenter.

    Weights: ``checkpoint`` (CRNN defaults to the shipped weights), ``engine`` (a dir made by ``deployzoo build``),
    or ``random_weights=True`` explicitly.
    """
    from deployzoo.specs import get_spec

    if get_spec(model).task == "text":
        return Recognizer.from_weights(checkpoint, engine, random_weights, **kwargs)
    from deployzoo.vision import from_checkpoint

    return from_checkpoint(model, checkpoint, random_weights, engine=engine, **kwargs)
