"""Rendering one synthetic word: vocabulary, natural-image colours and backgrounds, ``WordRenderer``."""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from deployzoo.data.synth.config import ALNUM, NATURAL_DIR, FontsNotFoundError, SynthConfig
from deployzoo.data.synth.fonts import FontFace, font_index


# --------------------------------------------------------------------------------------------- words


_VOCAB: dict[tuple[int, float], tuple[list[str], np.ndarray]] = {}


def _vocabulary(size: int, power: float) -> tuple[list[str], np.ndarray]:
    """Top ``size`` English words (wordfreq) that the renderer can draw, and cumulative sampling weights."""
    k = (size, power)
    if k not in _VOCAB:
        try:
            import wordfreq  # noqa: PLC0415
        except ImportError as e:
            raise ImportError("the synthetic renderer needs `wordfreq` (pip install wordfreq)") from e
        freqs = wordfreq.get_frequency_dict("en")
        ok = set(ALNUM + "'-.")
        words, f = [], []
        for w in wordfreq.top_n_list("en", size):
            if len(w) > 24 or not w.isascii() or not set(w) <= ok or not any(c.isalnum() for c in w):
                continue
            if w[0] in "'-." or w[-1] in "'-":
                continue
            words.append(w)
            f.append(freqs.get(w, 1e-9))
        p = np.asarray(f, dtype=np.float64) ** power
        cdf = np.cumsum(p)
        _VOCAB[k] = (words, cdf / cdf[-1])
    return _VOCAB[k]


# --------------------------------------------------------------------------------------------- images


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 25) -> tuple[np.ndarray, np.ndarray]:
    """Plain k-means (k-means++ init) on rows of x; returns centres and cluster sizes."""
    c = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min(((x[:, None, :] - np.asarray(c)[None]) ** 2).sum(-1), axis=1)
        c.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.asarray(c, dtype=np.float64)
    for _ in range(iters):
        lab = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        for j in range(k):
            m = lab == j
            if m.any():
                c[j] = x[m].mean(0)
    n = np.bincount(lab, minlength=k)
    return c, n


class _Natural:
    """Natural photographs (gray, float32 0..1) and colour-cluster gray-level pairs derived from them."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []
        rgb_pixels = []
        for p in sorted(NATURAL_DIR.glob("*.jpg")):
            im = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            if im is None:
                continue
            if im.ndim == 3:
                rgb_pixels.append(cv2.cvtColor(im, cv2.COLOR_BGR2RGB))
                g = cv2.cvtColor(im, cv2.COLOR_BGR2GRAY)
            else:
                g = im
            self.images.append(g.astype(np.float32) / 255.0)
        # colour clusters per colour image (MJSynth samples text/border/background colours from k-means
        # clusters of natural images); pairs of clusters with their luminances, weighted by cluster sizes.
        rng = np.random.default_rng(1234)
        pairs, weights = [], []
        for img in rgb_pixels:
            px = img.reshape(-1, 3).astype(np.float64)
            px = px[rng.choice(len(px), size=min(3000, len(px)), replace=False)]
            cen, n = _kmeans(px, 8, rng)
            lum = (cen @ np.array([0.299, 0.587, 0.114])) / 255.0
            for i in range(len(cen)):
                for j in range(len(cen)):
                    if i != j and n[i] and n[j]:
                        pairs.append((lum[i], lum[j]))
                        weights.append(math.sqrt(n[i] * n[j]))
        if pairs:
            self.pairs = np.asarray(pairs, dtype=np.float32)
            w = np.asarray(weights)
            self.pair_cdf = np.cumsum(w) / w.sum()
        else:
            self.pairs = np.zeros((0, 2), np.float32)
            self.pair_cdf = np.zeros(0)

    def crop(self, rng: np.random.Generator, h: int, w: int) -> np.ndarray | None:
        """A random crop of a random photo, resized to (h, w): scale varies from texture to smooth."""
        if not self.images:
            return None
        img = self.images[rng.integers(len(self.images))]
        ih, iw = img.shape
        # crop height in source pixels: from much smaller than h (blown-up, smooth) to larger (fine texture)
        ch = int(np.clip(h * math.exp(rng.uniform(math.log(0.25), math.log(4.0))), 4, ih))
        cw = int(np.clip(ch * w / h, 4, iw))
        ch = int(np.clip(cw * h / w, 4, ih))
        y = rng.integers(0, ih - ch + 1)
        x = rng.integers(0, iw - cw + 1)
        c = img[y:y + ch, x:x + cw]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if rng.random() < 0.3:
            c = c[::-1]
        inter = cv2.INTER_AREA if ch > h else cv2.INTER_LINEAR
        return cv2.resize(np.ascontiguousarray(c), (w, h), interpolation=inter)


_NATURAL: _Natural | None = None


def _natural() -> _Natural:
    global _NATURAL
    if _NATURAL is None:
        _NATURAL = _Natural()
    return _NATURAL


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Value noise in [0, 1] with about ``cells`` blobs along the height."""
    gh = max(2, int(round(cells)) + 1)
    gw = max(2, int(round(cells * w / max(h, 1))) + 1)
    g = rng.random((gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _linear_ramp(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A linear ramp 0..1 across the image in a random direction."""
    a = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = (xx - w / 2) * math.cos(a) + (yy - h / 2) * math.sin(a)
    span = abs(w * math.cos(a)) + abs(h * math.sin(a)) + 1e-3
    return (r / span + 0.5).astype(np.float32)


# --------------------------------------------------------------------------------------------- renderer


class WordRenderer:
    """Renders word crops; ``render(i)`` is deterministic in ``(seed, i)``."""

    FALLBACK_FAMILIES = ("dejavu sans", "liberation sans", "noto sans", "freesans")

    def __init__(self, cfg: SynthConfig | None = None, seed: int = 0, faces: list[FontFace] | None = None) -> None:
        self.cfg = cfg or SynthConfig()
        self.seed = int(seed)
        self.faces = list(faces) if faces is not None else font_index(self.cfg.font_dirs)
        if not self.faces:
            raise FontsNotFoundError("no font faces given; run `bash scripts/install_fonts.sh` (as root)")
        w = np.asarray([f.weight for f in self.faces], dtype=np.float64)
        self._face_cdf = np.cumsum(w) / w.sum()
        full = set(ALNUM)
        self._full_faces = [i for i, f in enumerate(self.faces) if full <= set(f.chars)]
        fb = [i for i, f in enumerate(self.faces) if f.family in self.FALLBACK_FAMILIES and full <= set(f.chars)]
        self._fallback = fb or self._full_faces or list(range(len(self.faces)))
        self.words, self._word_cdf = _vocabulary(self.cfg.vocab_size, self.cfg.word_freq_power)
        self._fonts: OrderedDict[int, ImageFont.FreeTypeFont] = OrderedDict()
        self.failures = 0  # draws that raised (see _note_failure)
        self.natural = _natural() if (self.cfg.natural_bg or self.cfg.natural_blend or self.cfg.color_clusters) \
            else None

    # ----------------------------------------------------------------- public

    def render(self, index: int) -> tuple[np.ndarray, str]:
        """Sample ``index``: (gray uint8 (H, W), text as drawn)."""
        rng = np.random.default_rng([self.seed, int(index)])
        for _ in range(8):
            text = self.sample_text(rng)
            fi = self.pick_face(rng, text)
            if fi is None:
                continue
            try:
                img = self._render(rng, text, fi)
            except Exception as e:  # a renderer bug on one (text, face, draw) costs one retry, never a training run
                self._note_failure(index, text, fi, e)
                continue
            if img is not None:
                return img, text
        # a last resort that always works: a plain word in a fallback face
        text = self.words[int(np.searchsorted(self._word_cdf, rng.random()))]
        fi = self._fallback[rng.integers(len(self._fallback))]
        img = self._render(rng, text, fi, plain=True)
        assert img is not None
        return img, text

    def _note_failure(self, index: int, text: str, fi: int, e: Exception) -> None:
        """Count a failed draw and warn once per renderer, naming the sample, so the bug can be reproduced."""
        self.failures += 1
        if self.failures == 1:
            warnings.warn(f"synthetic renderer (seed {self.seed}): sample {index} failed to draw {text!r} in "
                          f"{Path(self.faces[fi].path).name} ({type(e).__name__}: {e}); drew another word instead "
                          "(further failures are only counted in WordRenderer.failures)", RuntimeWarning,
                          stacklevel=3)

    def render_with_face(self, index: int) -> tuple[np.ndarray, str, FontFace]:
        """Like :meth:`render`, also returning the face used (for tests and inspection)."""
        self._last_face = None
        img, text = self.render(index)
        return img, text, self.faces[self._last_face]

    # ----------------------------------------------------------------- text

    def _word(self, rng: np.random.Generator) -> str:
        return self.words[min(int(np.searchsorted(self._word_cdf, rng.random())), len(self.words) - 1)]

    def sample_text(self, rng: np.random.Generator) -> str:
        cfg = self.cfg
        u = rng.random()
        if u < cfg.p_digits:
            t = self._digits(rng)
        elif u < cfg.p_digits + cfg.p_alnum:
            t = self._alnum(rng)
        elif u < cfg.p_digits + cfg.p_alnum + cfg.p_random_letters:
            n = int(rng.integers(1, 11))
            t = "".join(rng.choice(list(string.ascii_lowercase), n))
            t = self._case(rng, t)
        else:
            t = self._word(rng)
            if cfg.punctuation and rng.random() < cfg.p_punct:
                t = self._punctuate(rng, t)
            elif not cfg.punctuation:
                t = re.sub(r"[^0-9A-Za-z]", "", t) or "a"
            t = self._case(rng, t)
        if len(t) > cfg.max_chars:
            t = t[: cfg.max_chars]
        if not any(c.isalnum() for c in t):
            t = t + str(int(rng.integers(10)))
        return t

    def _case(self, rng: np.random.Generator, t: str) -> str:
        p = np.asarray(self.cfg.case_probs, dtype=np.float64)
        k = rng.choice(4, p=p / p.sum())
        if k == 1:
            return t[:1].upper() + t[1:]
        if k == 2:
            return t.upper()
        if k == 3:
            flips = rng.random(len(t)) < 0.5
            return "".join(c.upper() if f else c for c, f in zip(t, flips))
        return t

    def _digits(self, rng: np.random.Generator) -> str:
        n = int(min(10, 1 + rng.geometric(0.3)))
        d = "".join(str(x) for x in rng.integers(0, 10, n))
        if not self.cfg.punctuation or rng.random() < 0.65:
            return d
        k = rng.integers(6)
        if k == 0 and n >= 3:
            return f"{d[:-2]}.{d[-2:]}"  # 12.99
        if k == 1:
            return "$" + d[:4] + (f".{d[4:6]}" if n > 5 else "")
        if k == 2 and n >= 5:
            return f"{d[:3]}-{d[3:]}"  # phone fragment
        if k == 3 and n >= 3:
            return f"{d[:2]}:{d[2:4].rjust(2, '0')}"  # time
        if k == 4:
            return d + "%"
        return f"{d[:-3]},{d[-3:]}" if n >= 4 else "#" + d

    def _alnum(self, rng: np.random.Generator) -> str:
        L, D = string.ascii_uppercase, string.digits
        k = rng.integers(6)
        ch = lambda s, n: "".join(rng.choice(list(s), n))  # noqa: E731
        if k == 0:
            t = ch(L, int(rng.integers(1, 4))) + ch(D, int(rng.integers(1, 5)))  # A12, BX300
        elif k == 1:
            t = ch(D, int(rng.integers(1, 4))) + ch(L, int(rng.integers(1, 3)))  # 3B, 24H
        elif k == 2:
            t = ch(L, 2) + ch(D, 2) + ch(L, 3)  # plate AB12CDE
        elif k == 3:
            t = ch(L, int(rng.integers(1, 3))) + ch(D, 1) + ch(D + L, int(rng.integers(0, 3)))  # SW1A
        elif k == 4:
            t = ch(L + D, int(rng.integers(2, 8)))
        else:
            w = self._word(rng)[:8]
            t = (w + ch(D, int(rng.integers(1, 4)))) if rng.random() < 0.6 else (ch(D, int(rng.integers(1, 3))) + w)
            return self._case(rng, t)
        if self.cfg.punctuation and rng.random() < 0.15 and len(t) >= 2:
            i = int(rng.integers(1, len(t)))
            t = t[:i] + "-" + t[i:]
        return t if rng.random() < 0.75 else t.lower()

    def _punctuate(self, rng: np.random.Generator, t: str) -> str:
        k = rng.random()
        if k < 0.35:
            w2 = self._word(rng)
            return (t[:1] + "-" + w2) if rng.random() < 0.2 else (t + "-" + w2)  # e-mail, long-term
        if k < 0.75:
            return t + str(rng.choice(list(".,!:?")))
        if k < 0.85:
            return t + "'s"
        if k < 0.95:
            o, c = [("(", ")"), ('"', '"'), ("'", "'")][rng.integers(3)]
            return o + t + c
        return t + "&"  # rare: "Smith&" (a crop cut before the next word)

    # ----------------------------------------------------------------- fonts

    def pick_face(self, rng: np.random.Generator, text: str) -> int | None:
        """Index of a face covering every character of ``text`` (family-weighted), None if none found."""
        for _ in range(24):
            i = min(int(np.searchsorted(self._face_cdf, rng.random())), len(self.faces) - 1)
            if self.faces[i].covers(text):
                return i
        for _ in range(24):
            i = self._fallback[rng.integers(len(self._fallback))]
            if self.faces[i].covers(text):
                return i
        return None

    def _font(self, fi: int) -> ImageFont.FreeTypeFont:
        f = self._fonts.get(fi)
        if f is None:
            face = self.faces[fi]
            f = ImageFont.truetype(face.path, self.cfg.font_px, index=face.index,
                                   layout_engine=ImageFont.Layout.BASIC)
            self._fonts[fi] = f
            if len(self._fonts) > 384:
                self._fonts.popitem(last=False)
        else:
            self._fonts.move_to_end(fi)
        return f

    # ----------------------------------------------------------------- drawing

    def _text_layer(self, rng, text, font, face: FontFace, plain):
        """Draw [fragment] word [fragment]; returns (fill mask uint8, word ink box, info) or None."""
        cfg = self.cfg
        px = cfg.font_px
        asc, desc = font.getmetrics()
        track = 0.0
        if cfg.spacing and not plain and rng.random() < cfg.p_spacing:
            track = px * (rng.uniform(-0.06, 0.06) if rng.random() < 0.4 else rng.uniform(0.05, 0.45))
        frag_l = frag_r = ""
        if cfg.fragments and not plain:
            if rng.random() < cfg.p_fragment:
                frag_l = self._fragment(rng, text, face)
            if rng.random() < cfg.p_fragment:
                frag_r = self._fragment(rng, text, face)
        space = max(font.getlength(" "), px * 0.2)
        gap_l = space * rng.uniform(0.7, 2.2)
        gap_r = space * rng.uniform(0.7, 2.2)

        def width(s: str) -> float:
            return font.getlength(s) + track * max(0, len(s) - 1) if s else 0.0

        margin = px  # room for overhangs, italics and swashes
        w_l = width(frag_l) + gap_l if frag_l else 0.0
        w_word = width(text)
        w_r = width(frag_r) + gap_r if frag_r else 0.0
        W = int(math.ceil(margin * 2 + w_l + w_word + w_r))
        H = int(math.ceil(asc + desc + margin * 2))
        if W > 6000:
            return None
        img = Image.new("L", (W, H), 0)
        wimg = Image.new("L", (W, H), 0)
        base = margin + asc
        x0 = margin + w_l

        def draw(d: ImageDraw.ImageDraw, s: str, x: float) -> None:
            if not s:
                return
            if track == 0.0:
                d.text((x, base), s, font=font, fill=255, anchor="ls")
                return
            for i, c in enumerate(s):
                d.text((x + font.getlength(s[:i]) + track * i, base), c, font=font, fill=255, anchor="ls")

        dw = ImageDraw.Draw(wimg)
        draw(dw, text, x0)
        if cfg.underline and not plain and rng.random() < cfg.p_underline:
            th = max(2, int(round(px * rng.uniform(0.04, 0.09))))
            yu = int(base + desc * rng.uniform(0.3, 0.9))
            # tight negative tracking can make the word's advance width < 1 px: never a reversed box
            dw.rectangle([int(x0), yu, int(x0 + max(w_word, 1.0)), yu + th - 1], fill=255)
        word = np.asarray(wimg)
        rows = np.flatnonzero(word.max(1) > 40)
        cols = np.flatnonzero(word.max(0) > 40)
        if len(rows) == 0 or len(cols) == 0:
            return None
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        ink = word > 127
        perim = np.count_nonzero(ink[:, 1:] != ink[:, :-1]) + np.count_nonzero(ink[1:] != ink[:-1])
        stroke = 2.0 * np.count_nonzero(ink) / max(perim, 1)  # mean stroke width, pixels
        line = 0
        if cfg.fragments and not plain and rng.random() < cfg.p_line_fragment:
            line = -1 if rng.random() < 0.5 else 1  # a line of text above / below the word
        if frag_l or frag_r or line:
            d = ImageDraw.Draw(img)
            draw(d, frag_l, margin)
            draw(d, frag_r, x0 + w_word + gap_r)
            if line:
                lead = (asc + desc) * rng.uniform(1.0, 1.35)
                yb = base + line * lead
                ltxt = " ".join(self._fragment(rng, text, face) for _ in range(3)).strip()
                if ltxt and 0 < yb - asc * 0.3 and yb - asc < H:
                    xs = x0 - rng.uniform(0, w_word * 0.8 + 1)
                    d.text((xs, yb), ltxt, font=font, fill=255, anchor="ls")
            mask = np.maximum(np.asarray(img), word)
        else:
            mask = word
        info = {"asc": asc, "desc": desc, "base": base, "frag_l": bool(frag_l), "frag_r": bool(frag_r),
                "gap_l": gap_l, "gap_r": gap_r,
                "x0": x0, "w_word": w_word, "stroke": stroke, "line": line}
        return np.ascontiguousarray(mask), box, info

    def _fragment(self, rng, text, face: FontFace) -> str:
        for _ in range(4):
            w = self._word(rng)
            if text.isupper():
                w = w.upper()
            elif rng.random() < 0.3:
                w = w.capitalize()
            if face.covers(w):
                return w
        return ""

    def _render(self, rng: np.random.Generator, text: str, fi: int, plain: bool = False) -> np.ndarray | None:
        cfg = self.cfg
        self._last_face = fi
        font = self._font(fi)
        layer = self._text_layer(rng, text, font, self.faces[fi], plain)
        if layer is None:
            return None
        mask, (bx0, by0, bx1, by1), info = layer
        bw, bh = bx1 - bx0, by1 - by0
        if bw < 1 or bh < 1:
            return None

        # ---- outline (border layer), drawn at mask resolution
        border = None
        if cfg.outline and not plain and rng.random() < cfg.p_outline:
            r = max(1, int(round(cfg.font_px * rng.uniform(0.03, 0.1))))
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            border = cv2.dilate(mask, k)

        # ---- geometry: source word box -> destination quad (units: text box height = 1)
        aspect = bw / bh
        sx = 1.0
        if cfg.stretch and not plain and rng.random() < 0.5:
            sx = math.exp(rng.uniform(math.log(0.75), math.log(1.3)))
        wq = aspect * sx
        quad = np.array([[-wq / 2, -0.5], [wq / 2, -0.5], [wq / 2, 0.5], [-wq / 2, 0.5]], dtype=np.float64)
        if cfg.shear and not plain and rng.random() < cfg.p_shear:
            s = rng.uniform(-0.3, 0.3)
            quad[:, 0] -= s * quad[:, 1]
        if cfg.perspective and not plain and rng.random() < cfg.p_perspective:
            p = rng.uniform(-0.18, 0.18)  # yaw: one end taller
            quad[:, 1] *= 1 + p * (quad[:, 0] / max(wq / 2, 1e-3))
            quad += rng.normal(0, 0.04, quad.shape)
        theta = 0.0
        if cfg.rotation and not plain:
            m = cfg.max_rotation * (3 if rng.random() < 0.1 else 1)
            theta = math.radians(rng.uniform(-m, m)) if rng.random() < 0.7 else 0.0
            # a long word rotated far would leave a tall crop with tiny text: keep the crop < ~2.5 lines
            lim = math.asin(min(1.0, 1.5 / max(wq, 1e-3)))
            theta = max(-lim, min(lim, theta))
        c, s_ = math.cos(theta), math.sin(theta)
        quad = quad @ np.array([[c, s_], [-s_, c]])

        # curved baseline: vertical offset f(x) in text-height units along the word
        curve_amp, curve_kind, curve_ph, curve_fr = 0.0, 0, 0.0, 1.0
        if cfg.curve and not plain and rng.random() < cfg.p_curve:
            curve_kind = int(rng.integers(2))
            curve_amp = rng.uniform(0.15, 0.5) * (1 if rng.random() < 0.5 else -1)
            if curve_kind == 1:
                curve_amp *= 0.5
                curve_ph, curve_fr = rng.uniform(0, 2 * math.pi), rng.uniform(0.5, 1.5)

        # bounding box of the destination (quad + curve excursion), paddings
        y_ext = abs(curve_amp)
        qx0, qy0 = quad.min(0)
        qx1, qy1 = quad.max(0)
        qy0 -= y_ext if curve_amp < 0 or curve_kind == 1 else 0
        qy1 += y_ext if curve_amp > 0 or curve_kind == 1 else 0
        tight = rng.random() < cfg.tight_crop_p
        if tight:  # may shave a pixel off ascenders/descenders, never a letter's side
            pt, pb = rng.uniform(-0.03, 0.08, 2)
            pl, pr = rng.uniform(0.0, 0.12, 2)
        else:
            pt, pb = rng.uniform(0.05, 0.35, 2)
            pl, pr = rng.uniform(0.08, 0.6, 2)
        unit_x = sx / bh * 1.0  # destination units per source pixel (x)
        if info["frag_l"]:
            gap = info["gap_l"] * unit_x
            pl = max(pl, gap * rng.uniform(0.3, 0.9)) + rng.uniform(0.0, 0.5)
        if info["frag_r"]:
            gap = info["gap_r"] * unit_x
            pr = max(pr, gap * rng.uniform(0.3, 0.9)) + rng.uniform(0.0, 0.5)
        if info["line"] < 0:
            pt = max(pt, rng.uniform(0.25, 0.6))
        elif info["line"] > 0:
            pb = max(pb, rng.uniform(0.25, 0.6))
        tot_h = (qy1 - qy0) + pt + pb
        H = int(rng.integers(cfg.height_range[0], cfg.height_range[1] + 1))
        scale = H / tot_h
        W = int(round(((qx1 - qx0) + pl + pr) * scale))
        if W > cfg.max_width:
            scale *= cfg.max_width / W
            W = cfg.max_width
            H = max(8, int(round(tot_h * scale)))
        W = max(W, 8)
        # destination pixel coordinates of the source box corners
        dst = (quad - [qx0 - pl, qy0 - pt]) * scale
        src = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], dtype=np.float32)
        Hm = cv2.getPerspectiveTransform(src, dst.astype(np.float32))
        Hinv = np.linalg.inv(Hm)

        # ---- one remap: output pixel -> source pixel (through the inverse homography and the curve)
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        den = Hinv[2, 0] * xx + Hinv[2, 1] * yy + Hinv[2, 2]
        mx = (Hinv[0, 0] * xx + Hinv[0, 1] * yy + Hinv[0, 2]) / den
        my = (Hinv[1, 0] * xx + Hinv[1, 1] * yy + Hinv[1, 2]) / den
        if curve_amp:
            t = (mx - (bx0 + bx1) / 2) / (bw / 2)  # -1..1 along the word
            if curve_kind == 0:
                off = curve_amp * (t * t - 0.33)
            else:
                off = curve_amp * np.sin(curve_fr * math.pi * t + curve_ph)
            my = my - off * bh
        layers = mask if border is None else np.dstack([mask, border])
        warped = cv2.remap(layers, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if border is None:
            a_fill = warped.astype(np.float32) * (1 / 255)
            a_border = None
        else:
            a_fill = warped[..., 0].astype(np.float32) * (1 / 255)
            a_border = warped[..., 1].astype(np.float32) * (1 / 255)
        if float(a_fill.max()) < 0.3:
            return None
        stroke_out = info["stroke"] * scale / bh  # stroke width in output pixels
        return self._compose(rng, a_fill, a_border, H, W, plain, stroke_out)

    # ----------------------------------------------------------------- appearance

    def _gray_pair(self, rng: np.random.Generator) -> tuple[float, float, float]:
        """(text, background) gray levels in 0..1, and the contrast the text should keep."""
        cfg = self.cfg
        nat = self.natural
        if rng.random() < cfg.p_print_colors:  # printed-sign look: dark on light or light on dark
            fg, bg = rng.uniform(0.0, 0.3), rng.uniform(0.7, 1.0)
            if rng.random() < 0.35:
                fg, bg = bg, fg
        elif cfg.color_clusters and nat is not None and len(nat.pairs):
            fg, bg = nat.pairs[min(int(np.searchsorted(nat.pair_cdf, rng.random())), len(nat.pairs) - 1)]
            fg = float(np.clip(fg + rng.normal(0, 0.06), 0, 1))
            bg = float(np.clip(bg + rng.normal(0, 0.06), 0, 1))
        else:
            fg, bg = float(rng.random()), float(rng.random())
        # text on real signs is mostly well contrasted; keep some low-contrast samples
        need = cfg.min_contrast + (rng.uniform(0.15, 0.55) if rng.random() < 0.88 else rng.uniform(0.0, 0.15))
        if abs(fg - bg) < need:
            if bg >= 0.5:
                fg = bg - need if bg - need >= 0 else min(1.0, bg + need)
            else:
                fg = bg + need if bg + need <= 1 else max(0.0, bg - need)
            if abs(fg - bg) < cfg.min_contrast:  # mid-grey corner case
                fg = 0.0 if bg > 0.5 else 1.0
        return fg, bg, min(need, 0.9)

    def _background(self, rng: np.random.Generator, H: int, W: int, bg: float) -> np.ndarray:
        cfg = self.cfg
        nat = self.natural
        u = rng.random()
        if cfg.natural_bg and nat is not None and u < cfg.p_natural_bg:
            crop = nat.crop(rng, H, W)
            if crop is not None:
                # re-level the crop around the sampled background gray, random contrast
                k = rng.uniform(0.3, 1.0)
                return np.clip(bg + (crop - float(crop.mean())) * k, 0, 1).astype(np.float32)
        out = np.full((H, W), bg, np.float32)
        if not cfg.procedural_bg:
            return out
        v = rng.random()
        if v < 0.35:
            return out  # flat
        if v < 0.55:  # gradient
            return np.clip(out + (_linear_ramp(rng, H, W) - 0.5) * rng.uniform(0.1, 0.5), 0, 1)
        if v < 0.72:  # blotches / stains
            n = _smooth_noise(rng, H, W, rng.uniform(1, 5))
            return np.clip(out + (n - 0.5) * rng.uniform(0.1, 0.5), 0, 1)
        if v < 0.87:  # grain: concrete / paper / metal
            n = rng.normal(0, 1, (H, W)).astype(np.float32)
            n = cv2.GaussianBlur(n, (0, 0), rng.uniform(0.5, 2.0))
            n /= float(n.std()) + 1e-6
            if rng.random() < 0.4:  # brushed metal: stretch along x
                n = cv2.GaussianBlur(n, (0, 0), sigmaX=rng.uniform(4, 12), sigmaY=0.3)
                n /= float(n.std()) + 1e-6
            return np.clip(out + n * rng.uniform(0.02, 0.12), 0, 1)
        # stripes / wood grain / panels
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        a = rng.uniform(0, math.pi)
        f = rng.uniform(0.05, 0.6)
        warp = _smooth_noise(rng, H, W, 2) * rng.uniform(0, 12)
        stripes = np.sin((xx * math.cos(a) + yy * math.sin(a)) * f + warp)
        return np.clip(out + stripes * rng.uniform(0.03, 0.15), 0, 1).astype(np.float32)

    def _blend_natural(self, rng: np.random.Generator, layer: np.ndarray, max_amount: float = 0.45) -> np.ndarray:
        """MJSynth: blend a layer with a natural crop, random amount and blend mode."""
        nat = self.natural
        H, W = layer.shape
        crop = nat.crop(rng, H, W) if nat is not None else None
        if crop is None:
            return layer
        a = rng.uniform(0.1, max_amount)
        mode = rng.integers(5)
        if mode == 0:  # normal
            mixed = crop
        elif mode == 1:  # multiply
            mixed = layer * crop
        elif mode == 2:  # screen
            mixed = 1 - (1 - layer) * (1 - crop)
        elif mode == 3:  # overlay
            mixed = np.where(layer < 0.5, 2 * layer * crop, 1 - 2 * (1 - layer) * (1 - crop))
        else:  # soft texture: add the crop's detail only
            mixed = layer + (crop - float(crop.mean()))
        return np.clip(layer * (1 - a) + mixed * a, 0, 1).astype(np.float32)

    def _legible(self, img: np.ndarray, alpha: np.ndarray, col: float, need: float) -> tuple[float, np.ndarray]:
        """Move gray level ``col`` away from the pixels under ``alpha`` until it contrasts with them by
        ``need`` (and by 1.5 std of a textured background); then, where a bright or dark patch of the
        background still hides part of the text, damp the background's variations."""
        under = img[alpha > 0.5]
        if not under.size:
            return col, img
        mb, sb = float(under.mean()), float(under.std())
        req = min(0.9, max(need, self.cfg.min_contrast + 1.5 * sb))
        if abs(col - mb) < req:
            up, down = mb + req, mb - req
            col = min(1.0, up) if ((col >= mb and up <= 1) or down < 0) else max(0.0, down)
        # every part of the word must stay visible: the 5% least contrasted text pixels decide
        thr = min(abs(col - mb), max(self.cfg.min_contrast, 0.5 * need))
        d = np.abs(under - col)
        k5 = max(0, int(0.05 * d.size) - 1)
        if float(np.partition(d, k5)[k5]) < thr:
            for k in (0.6, 0.4, 0.25, 0.1):
                dk = np.abs(mb + (under - mb) * k - col)
                if float(np.partition(dk, k5)[k5]) >= thr:
                    break
            img = mb + (img - mb) * k
        return col, img

    def _compose(self, rng, a_fill, a_border, H, W, plain, stroke: float = 3.0) -> np.ndarray:
        cfg = self.cfg
        fg, bg, need = self._gray_pair(rng)
        img = self._background(rng, H, W, bg)
        if cfg.natural_blend and not plain and rng.random() < cfg.p_natural_blend:
            img = self._blend_natural(rng, img)

        # shadow (drop shadow or soft glow) from the text's (or its border's) alpha
        if cfg.shadow and not plain and rng.random() < cfg.p_shadow:
            src = a_border if a_border is not None else a_fill
            dx, dy = rng.normal(0, H * 0.04, 2)
            M = np.float32([[1, 0, dx], [0, 1, abs(dy) + H * 0.02]])
            sh = cv2.warpAffine(src, M, (W, H))
            sig = rng.uniform(0.3, 2.5)
            sh = cv2.GaussianBlur(sh, (0, 0), sig)
            col = 0.0 if bg > 0.35 or rng.random() < 0.5 else 1.0
            strength = rng.uniform(0.35, 0.85)
            img = img * (1 - sh * strength) + col * sh * strength

        # border / outline: it must stand out from the background, and the fill from the border
        if a_border is not None:
            bcol = float(np.clip(1 - fg if rng.random() < 0.6 else bg + (0.35 if bg < 0.5 else -0.35), 0, 1))
            if abs(bcol - fg) < 0.25:
                bcol = 1.0 - fg if abs(fg - 0.5) > 0.15 else (0.0 if fg > 0.5 else 1.0)
            bcol, img = self._legible(img, a_border, bcol, need)
            img = img * (1 - a_border) + bcol * a_border

        # legibility: the text must stand out from what lies under it (textured or blended backgrounds)
        fg, img = self._legible(img, a_fill, fg, need)

        # text fill: flat, slightly graded, or blended with a natural crop (MJSynth)
        fill = np.float32(fg)
        r = rng.random()
        if not plain and r < 0.25 and cfg.procedural_bg:
            fill = np.clip(fg + (_linear_ramp(rng, H, W) - 0.5) * rng.uniform(0.05, 0.3), 0, 1)
        elif not plain and r < 0.4 and cfg.natural_blend:
            fill = self._blend_natural(rng, np.full((H, W), fg, np.float32), 0.3)
        img = img * (1 - a_fill) + fill * a_fill

        # lighting: smooth illumination field, sometimes a specular highlight
        if cfg.lighting and not plain and rng.random() < cfg.p_lighting:
            if rng.random() < 0.6:
                light = 1 + (_linear_ramp(rng, H, W) - 0.5) * rng.uniform(0.2, 0.8)
            else:
                light = 1 + (_smooth_noise(rng, H, W, rng.uniform(0.7, 2.5)) - 0.5) * rng.uniform(0.2, 0.7)
            img = img * light
            if rng.random() < 0.25:  # specular highlight
                hl = _smooth_noise(rng, H, W, rng.uniform(0.5, 1.5)) ** 4
                img = img + hl * rng.uniform(0.1, 0.3)

        # optics: defocus / motion blur
        if cfg.blur and not plain and rng.random() < cfg.p_blur:
            if rng.random() < cfg.p_motion_blur:
                k = int(rng.integers(3, 8))
                ker = np.zeros((k, k), np.float32)
                ker[k // 2, :] = 1
                ang = rng.uniform(-30, 30) + (90 if rng.random() < 0.2 else 0)
                R = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), ang, 1)
                ker = cv2.warpAffine(ker, R, (k, k))
                ker /= ker.sum() + 1e-6
                img = cv2.filter2D(img, -1, ker, borderType=cv2.BORDER_REFLECT)
            else:
                # thin strokes would vanish under a blur wider than themselves
                hi = max(0.3, min(cfg.max_blur_sigma * H / 40, 0.7 * stroke))
                img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, hi) if hi > 0.3 else 0.3)

        # low resolution: text seen from far away, upscaled by the crop pipeline
        if cfg.lowres and not plain and rng.random() < cfg.p_lowres:
            f = rng.uniform(max(0.3, min(0.9, 1.1 / max(stroke, 1e-3))), 0.9)
            h2, w2 = max(6, int(H * f)), max(6, int(W * f))
            small = cv2.resize(img, (w2, h2), interpolation=cv2.INTER_AREA)
            inter = [cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_NEAREST][rng.choice(3, p=[0.6, 0.3, 0.1])]
            img = cv2.resize(small, (W, H), interpolation=inter)

        # sensor noise
        if cfg.noise and not plain and rng.random() < cfg.p_noise:
            sd = rng.uniform(0.005, cfg.max_noise)
            img = img + rng.normal(0, sd, img.shape).astype(np.float32)
            if rng.random() < 0.1:  # salt and pepper
                sp = rng.random(img.shape)
                img[sp < 0.004] = 0
                img[sp > 0.996] = 1

        if cfg.invert_p and rng.random() < cfg.invert_p:
            img = 1 - img
        out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)

        if cfg.jpeg and not plain and rng.random() < cfg.p_jpeg:
            q = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
            ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
        return out
