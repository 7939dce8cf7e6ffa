"""Synthetic word images for CRNN training, in the spirit of MJSynth (Jaderberg et al. 2014) and SynthText.

One sample = one word crop, gray uint8, height ``cfg.height_range`` (32..64 by default), variable width, and
the text exactly as drawn (case and punctuation kept; training normalises it). Sample ``i`` of seed ``s`` is
a pure function of ``(s, i)`` (and of the installed font set): every random draw comes from
``numpy.random.default_rng([s, i])``, so worker count and order never change an image.

Pipeline of :meth:`WordRenderer.render`:

1. text: frequency-weighted English word (``wordfreq``, tempered by ``word_freq_power``), or digits /
   alphanumeric codes / random letters; case variants; optional punctuation (``it's``, ``e-mail``, ``sale!``).
2. font: a family (weighted), then one of its faces whose glyphs cover every character of the text
   (fontTools cmap + a rendered-ink check, computed once per font set and cached on disk).
3. text layer drawn with PIL at a fixed pixel size: optional letter spacing, underline, neighbouring-word
   fragments left/right; outline by dilation.
4. geometry in one ``cv2.remap``: scale, horizontal stretch, shear, rotation, perspective, curved baseline,
   tight or loose crop.
5. appearance: text/background gray levels from colour clusters of natural photographs (k-means, as MJSynth),
   backgrounds flat / gradient / noise / procedural texture / natural crop, MJSynth-style blending of layers
   with natural crops, shadow, lighting, blur, noise, low resolution, JPEG artefacts.

Fonts come from the system font folders; ``scripts/install_fonts.sh`` installs the Debian packages used.
"""

from deployzoo.data.synth.config import (ALNUM, DRAWABLE, FONT_DIRS, FONT_EXTS, INDEX_VERSION, NATURAL_DIR, PUNCT,
                                         FontsNotFoundError, SynthConfig)
from deployzoo.data.synth.fonts import FontFace, font_index
from deployzoo.data.synth.render import WordRenderer
from deployzoo.data.synth.shards import _SynthWordDatasetImpl, encode_image, synth_to_lmdb

__all__ = ["SynthConfig", "WordRenderer", "SynthWordDataset", "synth_to_lmdb", "FontFace", "font_index",
           "FontsNotFoundError", "FONT_DIRS", "encode_image", "ALNUM", "DRAWABLE", "PUNCT", "FONT_EXTS",
           "INDEX_VERSION", "NATURAL_DIR"]


def __getattr__(name: str):
    # SynthWordDataset subclasses torch's Dataset; it is built on first use so that the render workers
    # (which import this module) do not pay torch's import time.
    if name == "SynthWordDataset":
        from torch.utils.data import Dataset  # noqa: PLC0415

        cls = type("SynthWordDataset", (_SynthWordDatasetImpl, Dataset), {
            "__doc__": _SynthWordDatasetImpl.__doc__, "__module__": __name__, "__qualname__": "SynthWordDataset"})
        globals()["SynthWordDataset"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
