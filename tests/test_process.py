import io

import numpy as np
import pytest
import torch
from conftest import png_bytes, word_image
from PIL import Image

from deployzoo.errors import ImageError
from deployzoo.process.crnn import CrnnPreprocess, batches_by_width, pad_batch, preprocess
from deployzoo.process.ctc import Lexicon, ctc_log_prob, greedy_decode, log_softmax
from deployzoo.process.image import load_image
from deployzoo.process.text import ALPHABET, LabelStats, encode, normalize_label

# ------------------------------------------------------------------ images


def test_load_image_from_every_kind_of_input(tmp_path):
    img = word_image("abc")
    ref = np.asarray(img)
    img.save(tmp_path / "w.png")
    for item in (tmp_path / "w.png", str(tmp_path / "w.png"), png_bytes(img), img, ref, ref.astype(np.float32) / 255):
        out = load_image(item)
        assert out.dtype == np.uint8 and out.shape == ref.shape
        np.testing.assert_array_equal(out, ref)


def test_load_image_modes():
    gray = np.asarray(word_image("abc"))
    rgb = np.asarray(word_image("abc", mode="RGB"))
    assert load_image(rgb).shape == gray.shape  # RGB -> gray
    assert load_image(gray, "RGB").shape == gray.shape + (3,)
    # RGBA: transparent background composited on white, text stays dark
    rgba = np.zeros(gray.shape + (4,), np.uint8)
    rgba[..., 3] = 255 - gray  # ink opaque, background transparent black
    out = load_image(rgba)
    assert out.max() == 255 and out[gray < 128].mean() < 60
    # palette
    pal = Image.fromarray(rgb).convert("P")
    np.testing.assert_allclose(load_image(pal).astype(int), gray.astype(int), atol=40)
    # 16-bit gray, as PNG bytes and as an array
    g16 = gray.astype(np.uint16) * 257
    np.testing.assert_array_equal(load_image(g16), gray)
    np.testing.assert_array_equal(load_image(png_bytes(Image.fromarray(g16))), gray)


def test_exif_orientation_is_applied():
    img = word_image("abc")  # wide image
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.transpose(Image.Transpose.ROTATE_90).save(buf, format="JPEG", exif=exif)
    out = load_image(buf.getvalue())
    assert out.shape[1] > out.shape[0], "EXIF-rotated image should come back in its display orientation"
    pil = Image.open(io.BytesIO(buf.getvalue()))
    assert load_image(pil).shape == out.shape and pil.size[0] < pil.size[1]  # the caller's image is not turned


def test_pixel_limit_is_checked_from_the_header_and_uint8_arrays_pass_as_they_are():
    big = png_bytes(Image.new("L", (3000, 2000)))  # 6 M pixels in a few kB
    with pytest.raises(ImageError, match="3000x2000 has more than 5000000 pixels"):
        load_image(big, max_pixels=5_000_000)
    assert load_image(big, max_pixels=6_000_000).shape == (2000, 3000)
    gray = np.arange(60, dtype=np.uint8).reshape(6, 10)
    assert load_image(gray) is gray  # already uint8 gray: no copy
    rgb = np.stack([gray] * 3, axis=2)
    assert load_image(rgb, "RGB") is rgb
    np.testing.assert_array_equal(load_image(rgb, "L"), gray)  # converted through PIL as before


@pytest.mark.parametrize("case,match", [
    ("empty", "empty"), ("truncated", "truncated or corrupt"), ("text", "not a recognised image"),
    ("dir", "directory"), ("missing", "not found"), ("zero", "0 pixels"), ("nan", "NaN"),
])
def test_bad_images_raise_clear_errors(tmp_path, case, match):
    p = tmp_path / f"{case}.png"
    data = png_bytes(word_image("abc"))
    if case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif case == "text":
        p.write_text("hello")
    elif case == "dir":
        p.mkdir()
    item = {"zero": np.zeros((0, 5), np.uint8), "nan": np.full((4, 4), np.nan, np.float32)}.get(case, p)
    with pytest.raises(ImageError, match=match) as e:
        load_image(item)
    if isinstance(item, type(p)):
        assert str(p) in str(e.value)


# ------------------------------------------------------------------ pre-processing


def test_fixed_and_keep_ratio_preprocessing():
    gray = np.full((40, 200), 255, np.uint8)
    x = preprocess(gray)
    assert x.shape == (1, 32, 100) and x.dtype == np.float32
    assert x.max() == pytest.approx(1.0) and preprocess(np.zeros((10, 10), np.uint8)).min() == -1.0
    cfg = CrnnPreprocess(keep_ratio=True, max_width=256)
    assert preprocess(gray, cfg).shape == (1, 32, 160)
    assert preprocess(np.zeros((100, 10), np.uint8), cfg).shape == (1, 32, cfg.min_width)
    assert preprocess(np.zeros((10, 1000), np.uint8), cfg).shape == (1, 32, 256)


def test_pad_batch_replicates_edges_and_rounds_to_bucket():
    cfg = CrnnPreprocess(keep_ratio=True, bucket=16)
    a = np.zeros((1, 32, 20), np.float32)
    a[..., -1] = 0.5
    b = np.ones((1, 32, 33), np.float32)
    x, widths = pad_batch([a, b], cfg)
    assert x.shape == (2, 1, 32, 48) and widths.tolist() == [20, 33]
    assert (x[0, :, :, 20:] == 0.5).all() and (x[1] == 1).all()


def test_batches_by_width_group_similar_widths():
    widths = [10, 300, 12, 290, 11, 310, 13, 305]
    batches = list(batches_by_width(range(8), lambda i: widths[i], batch_size=4, pool_batches=2))
    assert [sorted(widths[i] for i in b) for b in batches] == [[10, 11, 12, 13], [290, 300, 305, 310]]


# ------------------------------------------------------------------ labels


def test_label_normalisation_and_stats():
    assert normalize_label("It's E-Mail 2!") == "itsemail2"
    st = LabelStats()
    for raw in ["Hello", "it's", "!!", "abc"]:
        st.add(raw, normalize_label(raw))
    assert (st.total, st.changed, st.emptied) == (4, 2, 1)
    assert "emptied" in st.summary() and "'!'x2" in st.summary()
    assert encode("a0") == [11, 1]


# ------------------------------------------------------------------ CTC decoding


def _logits(rows: list[dict[str, float]]) -> np.ndarray:
    """Per frame {char or '-': prob} -> log-prob logits (T, 1, 37)."""
    p = np.full((len(rows), 1, 37), 1e-12)
    for t, row in enumerate(rows):
        for c, v in row.items():
            p[t, 0, 0 if c == "-" else ALPHABET.index(c) + 1] = v
    return np.log(p)


def test_greedy_merges_repeats_and_keeps_doubled_letters():
    rows = [{"a": .9, "-": .1}, {"a": .8, "-": .2}, {"-": .9, "a": .1}, {"a": .7, "-": .3}, {"b": .6, "-": .4},
            {"b": .95, "-": .05}]
    d = greedy_decode(_logits(rows))[0]
    assert d.text == "aab"
    np.testing.assert_allclose(d.char_confidences, [0.9, 0.7, 0.95], atol=1e-9)
    assert d.confidence == pytest.approx(0.9 * 0.7 * 0.95)


def test_greedy_ignores_padding_frames():
    rows = [{"c": .9, "-": .1}, {"-": 1.0}, {"z": 1.0}, {"z": 1.0}]
    assert greedy_decode(_logits(rows), lengths=[2])[0].text == "c"
    assert greedy_decode(_logits(rows))[0].text == "cz"


def test_lexicon_sums_over_paths():
    # 3 frames, each: blank .4, a .35, b .25. Greedy reads "" (blank wins every frame).
    # P(a)  = 3(.35*.4^2) + 2(.35^2*.4) + .35^3                  = 0.308875
    # P(b)  = 3(.25*.4^2) + 2(.25^2*.4) + .25^3                  = 0.185625
    # P(ab) = 3(.35*.25*.4) + .35^2*.25 + .35*.25^2              = 0.1575
    rows = [{"-": .4, "a": .35, "b": .25}] * 3
    assert greedy_decode(_logits(rows))[0].text == ""
    lex = Lexicon(["A", "b", "ab"])
    word, lp = lex.decode(log_softmax(_logits(rows)[:, 0]))
    assert word == "a" and np.exp(lp) == pytest.approx(0.308875, rel=1e-6)
    assert np.exp(ctc_log_prob(log_softmax(_logits(rows)[:, 0]), encode("ab"))) == pytest.approx(0.1575, rel=1e-6)


def test_lexicon_prefers_ctc_probability_over_edit_distance():
    # Greedy reads "ab". Nearest by edit distance in {"cd", "a"} is "a" (distance 1), but
    # P(cd) = .45 * .45 = 0.2025 while P(a) = .5 * .05 (a then blank) = 0.025: the lexicon must pick "cd".
    rows = [{"a": .5, "c": .45, "-": .05}, {"b": .5, "d": .45, "-": .05}]
    assert greedy_decode(_logits(rows))[0].text == "ab"
    d = Lexicon(["cd", "a"]).decode_batch(_logits(rows))[0]
    assert d.text == "cd" and d.confidence == pytest.approx(0.2025, rel=1e-6)


def test_lexicon_matches_exhaustive_search_and_torch_ctc():
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list(ALPHABET), rng.integers(1, 9))) for _ in range(400)]
    lex = Lexicon(words)
    for _ in range(4):
        logits = rng.normal(size=(26, 1, 37)) * 3
        lp = log_softmax(logits[:, 0])
        word, score = lex.decode(lp)
        scores = {w: ctc_log_prob(lp, encode(w)) for w in lex.words}
        best = max(scores, key=scores.get)
        assert word == best and score == pytest.approx(scores[best], abs=1e-9)
        torch_lp = -torch.nn.functional.ctc_loss(torch.tensor(lp)[:, None], torch.tensor([encode(best)]),
                                                 torch.tensor([26]), torch.tensor([len(best)]), reduction="sum")
        assert score == pytest.approx(torch_lp.item(), abs=1e-6)


def test_lexicon_file_and_empty_lexicon(tmp_path):
    (tmp_path / "lex.txt").write_text("Hello, world\nfoo\n")
    assert Lexicon.from_file(tmp_path / "lex.txt").words == ["foo", "hello", "world"]
    (tmp_path / "empty.txt").write_text("!!\n")
    from deployzoo.errors import DatasetError

    with pytest.raises(DatasetError, match="empty"):
        Lexicon.from_file(tmp_path / "empty.txt")


def test_batches_never_mix_width_buckets_when_asked():
    cfg = CrnnPreprocess(keep_ratio=True)
    widths = [20, 30, 33, 47, 48, 49, 120]
    batches = list(batches_by_width(widths, lambda w: w, 64, bucket_of=cfg.padded_width))
    assert batches == [[20, 30], [33, 47, 48], [49], [120]]
    assert list(batches_by_width(widths, lambda w: w, 2, bucket_of=cfg.padded_width))[1:3] == [[33, 47], [48]]


def test_keep_ratio_reading_does_not_depend_on_batch_neighbours():
    """The backward LSTM reads the padding: a word must be padded to its own bucket whatever else is batched."""
    from deployzoo.engines import EagerRunner
    from deployzoo.models.crnn import crnn
    from deployzoo.predict import Recognizer
    from deployzoo.process.ctc import Greedy

    torch.manual_seed(0)
    rec = Recognizer(EagerRunner(crnn().eval()), CrnnPreprocess(keep_ratio=True), decoder=Greedy())
    short, long = np.asarray(word_image("cat")), np.asarray(word_image("a much longer line of words"))
    alone = rec.recognize([short])[0]
    together = rec.recognize([short, long])[0]
    assert (together.text, together.confidence) == (alone.text, alone.confidence)


def test_tall_crops_are_also_read_turned_a_quarter_both_ways():
    from deployzoo.process.crnn import views

    cfg = CrnnPreprocess()
    wide = np.asarray(word_image("exit"))
    assert isinstance(views(wide, cfg), np.ndarray)
    tall = np.ascontiguousarray(np.rot90(wide))  # text turned counter-clockwise: turning it clockwise restores it
    up, cw, ccw = views(tall, cfg)
    assert np.array_equal(cw, preprocess(wide, cfg))
    assert np.array_equal(ccw, preprocess(np.ascontiguousarray(np.rot90(wide, 2)), cfg))
    assert up.shape == cw.shape == ccw.shape == (1, 32, 100)
    assert isinstance(views(tall, cfg, tall=None), np.ndarray)


def test_pick_view_turns_a_crop_only_for_a_more_confident_word():
    from deployzoo.predict import pick_view
    from deployzoo.process.ctc import Decoded

    up, turned = Decoded("to", 0.03), Decoded("mentos", 0.78)
    assert pick_view([up, Decoded("saw", 0.0), turned]) is turned
    assert pick_view([Decoded("", 0.9), turned]) is turned  # an empty upright reading never wins
    assert pick_view([Decoded("3", 0.9), Decoded("", 0.98), Decoded("e", 0.99)]).text == "3"  # 1 char never turns
    assert pick_view([Decoded("exit", 0.9), Decoded("tixe", 0.5)]).text == "exit"
