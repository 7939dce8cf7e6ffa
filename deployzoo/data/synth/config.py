"""Synthetic words: character sets, font folders and the renderer's configuration (``SynthConfig``)."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass
from pathlib import Path


from deployzoo.errors import DatasetError


INDEX_VERSION = 4
ALNUM = string.digits + string.ascii_letters
#: Punctuation the renderer may draw (label normalisation drops it).
PUNCT = "'-.,:!?&/$%#@()+\""
DRAWABLE = ALNUM + PUNCT
FONT_EXTS = (".ttf", ".otf", ".ttc")
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/usr/share/texmf/fonts/opentype",
             "~/.local/share/fonts", "~/.fonts")
NATURAL_DIR = Path(__file__).parent.parent / "natural"

# Families that are not Latin text faces (symbols, maths, icons) or Noto script-specific families.
class FontsNotFoundError(DatasetError):
    """No usable font files in the system font folders."""


# --------------------------------------------------------------------------------------------- config


@dataclass
class SynthConfig:
    """Knobs of the renderer. Every ``p_*`` is a probability per sample; every feature has a switch so an
    ablation can turn features off one at a time."""

    height_range: tuple[int, int] = (32, 64)  # output height, pixels
    max_width: int = 1024  # wider renders are scaled down
    font_px: int = 48  # size the glyphs are drawn at before the geometric warp
    font_dirs: tuple[str, ...] | None = None  # None: FONT_DIRS (or $DEPLOYZOO_FONT_DIRS, ':'-separated)
    # --- text
    vocab_size: int = 100_000  # top-N English words from wordfreq
    word_freq_power: float = 0.5  # sampling weight = frequency ** power (1: natural frequency, 0: uniform)
    max_chars: int = 20
    p_digits: float = 0.09  # digit strings (1-10 digits, sometimes prices, times, phone numbers)
    p_alnum: float = 0.07  # alphanumeric codes (A12, mp3, SW1A, B-52)
    p_random_letters: float = 0.04  # random letter strings (not words)
    case_probs: tuple[float, float, float, float] = (0.42, 0.28, 0.25, 0.05)  # lower, Capital, UPPER, mIxEd
    punctuation: bool = True  # keep wordfreq's it's/u.s; add hyphen compounds, trailing ! . , etc.
    p_punct: float = 0.08
    # --- layout
    spacing: bool = True  # letter spacing changes (tracking)
    p_spacing: float = 0.25
    underline: bool = True
    p_underline: float = 0.04
    fragments: bool = True  # parts of neighbouring words at the left/right edges
    p_fragment: float = 0.3  # per side
    p_line_fragment: float = 0.08  # part of a text line above or below the word
    tight_crop_p: float = 0.45  # tight crop (padding < 8% of text height) else loose
    # --- geometry
    stretch: bool = True  # horizontal scaling (condensed/expanded rendering)
    rotation: bool = True
    max_rotation: float = 6.0  # degrees; 10% of rotated samples go up to 3x this
    perspective: bool = True
    p_perspective: float = 0.5
    shear: bool = True
    p_shear: float = 0.2
    curve: bool = True  # curved or wavy baseline
    p_curve: float = 0.12
    # --- appearance
    natural_bg: bool = True  # crops of natural photographs as backgrounds
    p_natural_bg: float = 0.35
    natural_blend: bool = True  # MJSynth-style blending of the layers with natural crops
    p_natural_blend: float = 0.35
    procedural_bg: bool = True  # gradient / blotch / grain / stripe textures (off: flat only)
    color_clusters: bool = True  # colour pairs from natural-image clusters (off: random gray levels)
    p_print_colors: float = 0.3  # else colour-cluster pairs: high-contrast dark-on-light / light-on-dark
    min_contrast: float = 0.08  # minimum |text - background| gray difference (0..1)
    outline: bool = True
    p_outline: float = 0.15
    shadow: bool = True
    p_shadow: float = 0.18
    lighting: bool = True  # illumination gradients and highlights
    p_lighting: float = 0.35
    blur: bool = True
    p_blur: float = 0.45
    max_blur_sigma: float = 1.6
    p_motion_blur: float = 0.08
    noise: bool = True
    p_noise: float = 0.5
    max_noise: float = 0.06  # std of gaussian noise, fraction of full scale
    lowres: bool = True  # render small and upscale (distant text)
    p_lowres: float = 0.3
    jpeg: bool = True
    p_jpeg: float = 0.4
    jpeg_quality: tuple[int, int] = (15, 90)
    invert_p: float = 0.0  # extra chance to invert the final gray image

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        return cls(**kw)

    def ablate(self, *features: str) -> "SynthConfig":
        """A copy with the named boolean features switched off (``cfg.ablate("curve", "jpeg")``)."""
        d = self.to_dict()
        for f in features:
            if not isinstance(d.get(f), bool):
                raise ValueError(f"SynthConfig has no feature switch {f!r}")
            d[f] = False
        return SynthConfig.from_dict(d)
