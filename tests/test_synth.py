"""Synthetic word renderer: determinism, labels vs glyphs, ink, LMDB shards.

Needs the fonts of ``scripts/install_fonts.sh`` (CI runs it in set-up); without fonts these tests fail
with a message saying so, they do not skip.
"""

from __future__ import annotations

import io
import pickle
import string
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFont

from deployzoo.data import synth
from deployzoo.data.synth import SynthConfig, SynthWordDataset, WordRenderer, synth_to_lmdb
from deployzoo.data.words import open_word_set

SEED = 11


def _faces():
    try:
        return synth.font_index()
    except synth.FontsNotFoundError as e:
        pytest.fail(f"{e}\n(the synthetic-data tests need the fonts: run `bash scripts/install_fonts.sh` as root)")


@pytest.fixture(scope="module")
def faces():
    return _faces()


@pytest.fixture(scope="module")
def renderer(faces):
    return WordRenderer(SynthConfig(), seed=SEED)


@pytest.fixture(scope="module")
def clean_renderer(faces):
    """Every appearance feature off: flat background, no degradations (to measure ink exactly)."""
    cfg = SynthConfig().ablate("natural_bg", "natural_blend", "procedural_bg", "shadow", "outline", "lighting",
                               "blur", "noise", "lowres", "jpeg", "fragments", "underline")
    return WordRenderer(cfg, seed=SEED)


def test_fonts_installed_and_diverse(faces):
    assert len(faces) >= 300, f"only {len(faces)} usable font faces; run scripts/install_fonts.sh"
    fams = {f.family for f in faces}
    assert len(fams) >= 100
    for fam in ("dejavu sans", "liberation serif", "dejavu sans mono"):
        assert fam in fams, f"{fam} missing: run scripts/install_fonts.sh"
    # every usable face covers most of [0-9A-Za-z]
    for f in faces:
        assert sum(c in f.chars for c in string.ascii_letters + string.digits) >= 10
    full = [f for f in faces if set(string.ascii_letters + string.digits) <= set(f.chars)]
    assert len(full) >= 300


def test_missing_fonts_fail_clearly(tmp_path):
    with pytest.raises(synth.FontsNotFoundError, match="install_fonts.sh"):
        synth.font_index(font_dirs=(str(tmp_path),))


def test_deterministic_per_index(renderer, faces):
    idx = [0, 1, 7, 123, 4567, 10**9 + 3]
    first = [renderer.render(i) for i in idx]
    again = [renderer.render(i) for i in reversed(idx)][::-1]  # other order, warm caches
    other = WordRenderer(SynthConfig(), seed=SEED)  # a second instance
    third = [other.render(i) for i in idx]
    for (a, ta), (b, tb), (c, tc) in zip(first, again, third):
        assert ta == tb == tc
        assert a.dtype == np.uint8 and a.ndim == 2
        assert np.array_equal(a, b) and np.array_equal(a, c)
    # different indices and different seeds give different samples
    imgs = [r[0] for r in first]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert imgs[i].shape != imgs[j].shape or not np.array_equal(imgs[i], imgs[j])
    s2 = WordRenderer(SynthConfig(), seed=SEED + 1)
    diff = sum(not np.array_equal(s2.render(i)[0], first[k][0]) if s2.render(i)[0].shape == first[k][0].shape
               else True for k, i in enumerate(idx))
    assert diff == len(idx)


def test_output_shape_and_text_mix(renderer):
    lo, hi = renderer.cfg.height_range
    texts = []
    for i in range(300):
        img, text = renderer.render(i)
        assert img.dtype == np.uint8 and img.ndim == 2
        assert lo <= img.shape[0] <= hi, img.shape
        assert 8 <= img.shape[1] <= renderer.cfg.max_width
        assert text and text == text.strip() and any(c.isalnum() for c in text)
        assert set(text) <= set(synth.DRAWABLE + " ")
        texts.append(text)
    vocab = set(renderer.words)
    words = [t for t in texts if t.lower() in vocab]
    assert len(words) >= 0.6 * len(texts), "mostly real words"
    assert any(t.isdigit() for t in texts), "digit strings"
    assert any(t.isupper() and t.isalpha() for t in texts), "UPPER case"
    assert any(t.islower() and t.isalpha() for t in texts), "lower case"
    assert any(t[:1].isupper() and t[1:].islower() and t.isalpha() and len(t) > 1 for t in texts), "Capitalised"
    assert any(len(t) <= 3 for t in texts), "short words"
    assert len(set(texts)) >= 0.8 * len(texts)


def test_label_glyphs_exist_and_draw_ink(renderer, clean_renderer):
    from fontTools.ttLib import TTCollection, TTFont

    cmaps: dict[tuple[str, int], dict] = {}

    def cmap_of(face):
        k = (face.path, face.index)
        if k not in cmaps:
            if face.path.lower().endswith(".ttc"):
                tt = TTCollection(face.path, lazy=True).fonts[face.index]
            else:
                tt = TTFont(face.path, lazy=True, fontNumber=face.index)
            cmaps[k] = tt.getBestCmap()
        return cmaps[k]

    for r in (renderer, clean_renderer):
        for i in range(0, 400, 5):
            img, text, face = r.render_with_face(i)
            cmap = cmap_of(face)
            pil = ImageFont.truetype(face.path, 40, index=face.index)
            for ch in set(text) - {" "}:
                assert ord(ch) in cmap, f"sample {i}: {face.name} has no glyph for {ch!r} in {text!r}"
                assert pil.getmask(ch).getbbox() is not None, f"{face.name}: glyph {ch!r} draws nothing"
            # the image is not blank
            assert float(img.std()) > 4.0, f"sample {i} ({text!r}) looks blank"

    # with a flat background the text must stand out (>= min_contrast) and cover a good share of the crop
    min_levels = clean_renderer.cfg.min_contrast * 255 * 0.9
    for i in range(80):
        img, text = clean_renderer.render(i)
        vals, counts = np.unique(img, return_counts=True)
        bg = int(vals[np.argmax(counts)])
        diff = np.abs(img.astype(int) - bg)
        assert diff.max() >= min_levels, f"sample {i} ({text!r}): text gray level too close to the background"
        ink = diff > diff.max() / 2
        assert ink.mean() > 0.02, f"sample {i} ({text!r}): only {ink.mean():.1%} ink pixels"
        cols = np.flatnonzero(ink.any(0))
        assert cols[-1] - cols[0] > 0.3 * img.shape[1], f"sample {i} ({text!r}): ink does not span the crop"


def test_features_can_be_switched_off():
    cfg = SynthConfig().ablate("curve", "jpeg", "natural_bg")
    assert not cfg.curve and not cfg.jpeg and not cfg.natural_bg and cfg.blur
    with pytest.raises(ValueError):
        SynthConfig().ablate("no_such_feature")
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg


def test_dataset_matches_renderer(renderer):
    ds = SynthWordDataset(6, seed=SEED, offset=100)
    assert len(ds) == 6
    ds2 = pickle.loads(pickle.dumps(ds))  # as DataLoader workers receive it
    for i in range(6):
        img, text = ds2[i]
        ref, rt = renderer.render(100 + i)
        assert text == rt and np.array_equal(img, ref)
    with pytest.raises(IndexError):
        ds[6]


def test_lmdb_shards_readable(tmp_path, renderer):
    out = tmp_path / "synth"
    st = synth_to_lmdb(out, 50, seed=SEED, workers=2, shard_size=20, progress=False)
    assert st["count"] == 50 and st["images_per_s"] > 0 and st["images_per_s_per_core"] > 0
    assert [p.rsplit("/", 1)[-1] for p in st["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    k = 0
    for shard, n in zip(st["shards"], (20, 20, 10)):
        ds = open_word_set(shard)
        assert len(ds) == n
        for j in range(n):
            s = ds[j]
            assert s.error is None
            im = Image.open(io.BytesIO(s.data))
            im.load()
            arr = np.asarray(im.convert("L"))
            ref, text = renderer.render(k)
            assert s.label == text
            assert arr.shape == ref.shape
            assert np.abs(arr.astype(int) - ref.astype(int)).mean() < 3.0  # JPEG q95
            k += 1
    # a single LMDB, in-process, PNG (lossless)
    st = synth_to_lmdb(tmp_path / "one", 50, seed=SEED, workers=1, progress=False, image_format="png")
    ds = open_word_set(tmp_path / "one")
    assert len(ds) == 50
    for j in (0, 17, 49):
        ref, text = renderer.render(j)
        assert ds[j].label == text
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(ds[j].data))), ref)


def test_a_draw_that_raises_costs_one_retry_and_warns_once(faces, monkeypatch):
    """One bad (text, face, distortion) draw must never stop a training run: the sample draws another word, the
    renderer counts the failure and warns once, naming the sample so it can be reproduced."""
    r = WordRenderer(SynthConfig(), seed=SEED, faces=faces)
    real = r._render
    calls = {"n": 0}

    def flaky(rng, text, fi, plain=False):
        calls["n"] += 1
        if calls["n"] in (1, 3):
            raise ValueError("boom")
        return real(rng, text, fi, plain)

    monkeypatch.setattr(r, "_render", flaky)
    with pytest.warns(RuntimeWarning, match=r"sample 5 failed to draw .* \(ValueError: boom\)"):
        img, text = r.render(5)
    assert r.failures == 1 and img.ndim == 2 and img.dtype == np.uint8 and text
    with pytest.warns() as rec:  # the second failure is counted, not warned again
        r.render(6)
        warnings.warn("sentinel", UserWarning)
    assert r.failures == 2 and [str(w.message) for w in rec] == ["sentinel"]


def test_tight_negative_tracking_with_underline_draws(faces):
    """Regression: renderer seed 2, sample 367,980 (a training run's crash) drew an underline box with x1 < x0
    when negative tracking made the word narrower than 1 px in its font. It now draws, and never needs a retry."""
    r = WordRenderer(SynthConfig(), seed=2, faces=faces)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        img, text = r.render(367_980)
    assert r.failures == 0 and img.size and text
