"""CTC decoders without torch: the English word prior (CRNN's default), batched CTC scoring, decoder choice.
Marked ``runtime``: scripts/runtime_check.sh runs these in the base install too."""

import copy
import gzip

import numpy as np
import pytest

from deployzoo.errors import DatasetError, DeployzooError
from deployzoo.process.ctc import (Greedy, Lexicon, WordPrior, ctc_log_prob, ctc_log_probs, greedy_decode,
                                   log_softmax, make_decoder)
from deployzoo.process.text import ALPHABET, encode

pytestmark = pytest.mark.runtime


def _logits(rows: list[dict[str, float]], frames: int | None = None) -> np.ndarray:
    """Per frame {char or '-': prob} -> log-prob logits (T, 1, 37); frames beyond the rows are blank."""
    n = frames or len(rows)
    p = np.full((n, 1, 37), 1e-12)
    p[len(rows):, 0, 0] = 1.0
    for t, row in enumerate(rows):
        for c, v in row.items():
            p[t, 0, 0 if c == "-" else ALPHABET.index(c) + 1] = v
    return np.log(p)


def _spell(word: str, doubt: dict[int, dict[str, float]] | None = None, frames: int = 26) -> np.ndarray:
    """A word read one character per frame with blanks between, sure except where ``doubt`` says."""
    rows = []
    for i, c in enumerate(word):
        rows += [(doubt or {}).get(i, {c: 0.98, "-": 0.02}), {"-": 0.98, c: 0.02}]
    return _logits(rows, frames)


PRIOR = WordPrior(["hello", "world", "the", "street"], [5.0, 5.2, 7.7, 4.9])


def test_word_prior_corrects_a_near_miss_to_a_listed_word():
    # 'w' (0.5) narrowly beats 'e' (0.45): greedy reads the non-word "hwllo"; the prior reads "hello"
    x = _spell("hello", {1: {"w": 0.5, "e": 0.45, "-": 0.05}})
    assert greedy_decode(x)[0].text == "hwllo"
    d = PRIOR.decode_batch(x)[0]
    assert d.text == "hello"
    assert d.confidence == pytest.approx(np.exp(ctc_log_prob(log_softmax(x[:, 0]), encode("hello"))), rel=1e-9)


def test_word_prior_keeps_a_clearly_read_non_word():
    # "hellq" is read with certainty: P(hello) ~ 1e-3 cannot make up for it even with the word's frequency
    x = _spell("hellq", {4: {"q": 0.998, "o": 0.001, "-": 0.001}})
    assert PRIOR.decode_batch(x)[0].text == "hellq"
    # numbers and codes far from every listed word are never searched into a word
    assert PRIOR.decode_batch(_spell("4711"))[0].text == "4711"


def test_word_prior_leaves_a_sure_listed_reading_alone():
    # a listed word read surely stays; a doubtful letter in a frequent word is corrected
    assert PRIOR.decode_batch(_spell("world"))[0].text == "world"
    x = _spell("the", {2: {"a": 0.5, "e": 0.45, "-": 0.05}})
    assert greedy_decode(x)[0].text == "tha"
    assert PRIOR.decode_batch(x)[0].text == "the"


def test_word_prior_reads_each_image_alone_and_ignores_padding_frames():
    imgs = [_spell("hello", {1: {"w": 0.5, "e": 0.45, "-": 0.05}}), _spell("hellq", {4: {"q": 0.998, "o": 0.001,
            "-": 0.001}}), _spell("world"), _spell("tha")]
    alone = [PRIOR.decode_batch(x)[0].text for x in imgs]
    batch = np.concatenate(imgs, axis=1)
    assert [d.text for d in PRIOR.decode_batch(batch)] == alone
    # an image padded with frames it does not own: lengths keep the padding out of the reading
    padded = batch.copy()
    padded[12:, 2] = np.log(np.full(37, 1e-12) + np.eye(37)[ALPHABET.index("s") + 1])  # garbage after the word
    assert [d.text for d in PRIOR.decode_batch(padded, [26, 26, 12, 26])] == alone


def test_batched_ctc_scoring_matches_the_reference():
    rng = np.random.default_rng(0)
    lp = log_softmax(rng.normal(size=(5, 20, 37)) * 3)
    words = ["a", "abba", "zz9", "hello", "e"]
    got = ctc_log_probs(lp, [encode(w) for w in words])  # one image per word
    want = [ctc_log_prob(lp[i], encode(w)) for i, w in enumerate(words)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    shared = ctc_log_probs(lp[0], [encode(w) for w in words])  # one image for all words
    np.testing.assert_allclose(shared, [ctc_log_prob(lp[0], encode(w)) for w in words], rtol=1e-12)


def test_shipped_word_list():
    wp = WordPrior.shipped()
    assert len(wp.words) == 200_000 and wp.words[0] == "the"
    assert not any(w.isdigit() for w in wp.words) and all(set(w) <= set(ALPHABET) for w in wp.words[:5000])
    assert wp.zipf["the"] > wp.zipf["street"] > wp.zipf[wp.words[-1]] >= 1.0


def test_word_list_errors_name_the_file(tmp_path):
    bad = tmp_path / "words.tsv.gz"
    bad.write_bytes(gzip.compress(b"hello\t5.0\nworld\n")[:-6])  # truncated gzip
    with pytest.raises(DatasetError, match="words.tsv.gz: unreadable"):
        WordPrior.from_file(bad)
    empty = tmp_path / "empty.tsv"
    empty.write_text("# nothing\n!!\t3.0\n")
    with pytest.raises(DatasetError, match="empty.tsv: word list is empty"):
        WordPrior.from_file(empty)
    ok = tmp_path / "ok.tsv"
    ok.write_text("# header\nhello\t5.0\nÄrger\t3.0\n")
    assert WordPrior.from_file(ok).words == ["hello"]  # words outside the alphabet are left out


def test_make_decoder(tmp_path):
    assert isinstance(make_decoder(), WordPrior) and make_decoder().name == "words"
    assert isinstance(make_decoder("greedy"), Greedy)
    (tmp_path / "lex.txt").write_text("hello world\n")
    assert isinstance(make_decoder("greedy", lexicon=tmp_path / "lex.txt"), Lexicon)
    with pytest.raises(DeployzooError, match="unknown decoding 'beam'"):
        make_decoder("beam")


def test_word_prior_min_zipf_drops_rare_listed_words():
    # 'w' read at 0.95 against 'e' at 0.04: listed as a rare token, "hwllo" keeps the reading (log(0.95/0.04) = 3.2
    # nats beat the prior's 0.75 x (5 - 1) = 3); not listed, it scores as random letters and "hello" wins
    x = _spell("hello", {1: {"w": 0.95, "e": 0.04, "-": 0.01}})
    words, zipf = ["hello", "hwllo", "world"], [5.0, 1.0, 5.2]
    assert WordPrior(words, zipf).decode_batch(x)[0].text == "hwllo"
    pruned = WordPrior(words, zipf, min_zipf=1.5)
    assert "hwllo" not in pruned.zipf and pruned.decode_batch(x)[0].text == "hello"


def test_word_prior_search_as_bytes_finds_what_str_finds():
    """An ASCII alphabet's words are searched as bytes (faster in rapidfuzz): same neighbours, same order, as the
    str search; a non-ASCII query falls back to str, and a non-ASCII alphabet never uses bytes."""
    import random

    shipped = WordPrior.shipped()
    as_str = copy.copy(shipped)
    as_str._choices = as_str.words  # the str path
    assert isinstance(shipped._choices[0], bytes) and shipped._choices is not shipped.words
    rng = random.Random(3)
    texts = ["", "a", "hcllo", "strcet", "0o0o", "internationalisation", "qxz"]
    texts += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(rng.randint(1, 14)))
              for _ in range(40)]
    got = shipped.near(texts)
    assert got == as_str.near(texts) and got[2][:1] == ["hello"]
    assert shipped.near(["hëllo"]) == as_str.near(["hëllo"])  # not ASCII: compared as str
    ae = WordPrior(["hello", "ärger"], [5.0, 3.0], alphabet="abcdefghijklmnopqrstuvwxyzä")
    assert ae._choices is ae.words and ae.near(["ärgen"])[0] == ["ärger"]


def _doubtful_words(n: int, seed: int = 0) -> list[np.ndarray]:
    """n one-image logits (T, 1, C): listed words with a doubtful letter, sure words and non-words."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w = ["hello", "world", "street", "the", "4711", "hellq"][i % 6]
        j = int(rng.integers(len(w)))
        wrong = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
        p = float(rng.uniform(0.3, 0.7))
        out.append(_spell(w, {j: {wrong: p, w[j]: 0.95 - p, "-": 0.05}} if i % 3 else None))
    return out


def test_decode_batches_is_decode_batch_per_batch_with_one_search(monkeypatch):
    """Several batches decoded together read exactly as each batch alone (Greedy, Lexicon, WordPrior); the word
    prior searches once for all of them."""
    words = _doubtful_words(30)
    batches = [(np.concatenate(words[a:b], axis=1), None) for a, b in ((0, 7), (7, 8), (8, 30))]
    lengths = [26 - k % 5 for k in range(22)]
    batches[2] = (batches[2][0], lengths)  # padding frames in one batch
    lex = Lexicon(["hello", "world", "street", "the"])
    for dec in (PRIOR, Greedy(), lex):
        alone = [[d.text for d in dec.decode_batch(x, n)] for x, n in batches]
        assert [[d.text for d in r] for r in dec.decode_batches(batches)] == alone
    calls = []
    real_near = WordPrior.near
    monkeypatch.setattr(WordPrior, "near", lambda self, texts: calls.append(len(texts)) or real_near(self, texts))
    PRIOR.decode_batches(batches)
    assert len(calls) == 1 and calls[0] > 3
    assert PRIOR.decode_batches([]) == []


def test_recognizer_decodes_groups_of_batches_as_one_batch_at_a_time(monkeypatch):
    """Recognizer.infer decodes up to DECODE_GROUP images' outputs together: same texts as batch by batch."""
    import deployzoo.predict as predict
    from deployzoo.predict import Recognizer

    words = _doubtful_words(40, seed=1)

    def runner(x):  # image k (pixel [0, 0, 0] = k) -> its logits
        return np.concatenate([words[int(round(float(v)))] for v in x[:, 0, 0, 0]], axis=1)

    xs = []
    for k in range(40):
        a = np.zeros((1, 32, 100), np.float32)
        a[0, 0, 0] = k
        xs.append(a)
    rec = Recognizer(runner, decoder=PRIOR, batch_size=8)
    seen = []
    real = PRIOR.decode_batches
    monkeypatch.setattr(PRIOR, "decode_batches", lambda items: seen.append(len(items)) or real(items))
    monkeypatch.setattr(predict, "DECODE_GROUP", 16)
    grouped = [d.text for d in rec.infer(xs)]
    assert seen == [2, 2, 1]  # 40 images, batches of 8, groups of 16 images
    monkeypatch.setattr(predict, "DECODE_GROUP", 1)
    seen.clear()
    assert [d.text for d in rec.infer(xs)] == grouped and seen == [1] * 5
    assert grouped == [d.text for k in range(40) for d in PRIOR.decode_batch(words[k])]


def test_word_search_threads_follow_the_number_of_texts(monkeypatch):
    """One batch's search (up to SEARCH_PER_THREAD texts) runs on one thread; a merged search on more, never on
    more than the usable cores."""
    from rapidfuzz import process

    import deployzoo.process.ctc as ctc

    seen = []
    real = process.cdist
    monkeypatch.setattr(process, "cdist", lambda *a, **k: seen.append(k["workers"]) or real(*a, **k))
    monkeypatch.setattr(ctc, "usable_cores", lambda: 4)
    PRIOR.near(["hcllo"] * ctc.SEARCH_PER_THREAD)
    PRIOR.near(["hcllo"] * (ctc.SEARCH_PER_THREAD + 1))
    PRIOR.near(["hcllo"] * (ctc.SEARCH_PER_THREAD * 9))
    assert seen == [1, 2, 4]
