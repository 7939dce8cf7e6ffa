"""CTC decoding of CRNN outputs: greedy with confidences, open-vocabulary with an English word prior (the
default), and lexicon-constrained (max CTC probability over a closed word list).

Logits are (T, B, C) as the model emits them; class 0 is the blank. Every decoder has
``decode_batch(logits, lengths) -> list[Decoded]`` and reads each image's frames alone: a word's text never
depends on its batch neighbours.
"""

from __future__ import annotations

import functools
import gzip
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple
from pathlib import Path

import numpy as np

from deployzoo.errors import DatasetError, DeployzooError
from deployzoo.host import usable_cores
from deployzoo.process.text import ALPHABET, BLANK, normalize_label


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


@dataclass
class Decoded:
    """One recognised word. ``confidence`` is the product of the per-character confidences."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    error: str | None = None  # set when the image could not be read; text is then empty


def greedy_decode(logits: np.ndarray, lengths: Sequence[int] | None = None, alphabet: str = ALPHABET) -> list[Decoded]:
    """Best path: argmax per frame, merge repeats, drop blanks.

    logits: (T, B, C); lengths: valid frames per item (padding frames after them are ignored).
    A character's confidence is the highest softmax probability over the frames of its run.
    """
    T, B, _ = logits.shape
    probs = np.exp(log_softmax(logits))  # (T, B, C)
    best = probs.argmax(-1)  # (T, B)
    pmax = probs.max(-1)  # (T, B)
    out = []
    for b in range(B):
        n = T if lengths is None else int(min(lengths[b], T))
        chars: list[str] = []
        confs: list[float] = []
        prev = BLANK
        for t in range(n):
            k = int(best[t, b])
            if k != BLANK and k == prev:
                confs[-1] = max(confs[-1], float(pmax[t, b]))
            elif k != BLANK:
                chars.append(alphabet[k - 1])
                confs.append(float(pmax[t, b]))
            prev = k
        conf = float(np.prod(confs)) if confs else float(pmax[:n, b].mean()) if n else 0.0
        out.append(Decoded("".join(chars), conf, confs))
    return out


def ctc_log_prob(logp: np.ndarray, target: Sequence[int]) -> float:
    """log P(target | X) by the CTC forward algorithm. logp: (T, C) log-probabilities. Reference implementation."""
    ext = [BLANK]
    for k in target:
        ext += [k, BLANK]
    S, T = len(ext), logp.shape[0]
    a = np.full(S, -np.inf)
    a[0] = logp[0, BLANK]
    if S > 1:
        a[1] = logp[0, ext[1]]
    for t in range(1, T):
        prev = a.copy()
        for s in range(S):
            v = prev[s]
            if s >= 1:
                v = np.logaddexp(v, prev[s - 1])
            if s >= 2 and ext[s] != BLANK and ext[s] != ext[s - 2]:
                v = np.logaddexp(v, prev[s - 2])
            a[s] = v + logp[t, ext[s]]
    return float(np.logaddexp(a[-1], a[-2]) if S > 1 else a[-1])


def ctc_log_probs(logp: np.ndarray, targets: Sequence[Sequence[int]]) -> np.ndarray:
    """log P(target | X) for many targets at once (CTC forward vectorised over targets and states).

    logp: (T, C) log-probabilities shared by all targets, or (N, T, C) one image per target."""
    per_target = logp.ndim == 3
    T = logp.shape[1] if per_target else logp.shape[0]
    N = len(targets)
    S = 2 * max((len(t) for t in targets), default=0) + 1
    ext = np.zeros((N, S), dtype=np.int64)  # blank-interleaved labels, padded with blanks
    last = np.empty(N, dtype=np.int64)  # index of the final label state
    for i, t in enumerate(targets):
        ext[i, 1 : 2 * len(t) : 2] = t
        last[i] = 2 * len(t)
    skip = np.zeros((N, S), dtype=bool)  # s-2 -> s allowed: a label differing from the label before it
    skip[:, 2:] = (ext[:, 2:] != BLANK) & (ext[:, 2:] != ext[:, :-2])
    rows = np.arange(N)[:, None]
    # emission probabilities of every state at every frame: (T, N, S). The forward pass runs in the linear domain,
    # each row rescaled to sum 1 at every frame (Graves' scaling): additions instead of logaddexp, 6x faster.
    emit = np.exp(logp[rows, :, ext].transpose(2, 0, 1) if per_target else logp[:, ext])
    a = np.zeros((N, S))
    a[:, 0] = emit[0, :, 0]
    a[:, 1] = np.where(last > 0, emit[0, :, 1], 0.0)
    log_scale = np.zeros(N)
    for t in range(T):
        if t:
            prev = a
            a = prev.copy()
            a[:, 1:] += prev[:, :-1]
            a[:, 2:] += np.where(skip[:, 2:], prev[:, :-2], 0.0)
            a *= emit[t]
        c = a.sum(axis=1)
        with np.errstate(divide="ignore"):
            log_scale += np.log(c)
        a /= np.where(c > 0, c, 1.0)[:, None]
    end = a[rows[:, 0], last] + np.where(last > 0, a[rows[:, 0], np.maximum(last - 1, 0)], 0.0)
    with np.errstate(divide="ignore"):
        return np.log(end) + log_scale


class _Decoder:
    """What every decoder offers besides ``decode_batch``: several batches at once, each decoded alone."""

    def decode_batch(self, logits: np.ndarray, lengths: Sequence[int] | None = None) -> list[Decoded]:
        raise NotImplementedError

    def decode_batches(self, items: Sequence[tuple[np.ndarray, Sequence[int] | None]]) -> list[list[Decoded]]:
        """[(logits (T, B, C), lengths or None), ...] -> one list of Decoded per batch, as ``decode_batch`` would
        give for each; a decoder with a per-call cost (the word prior's search) pays it once."""
        return [self.decode_batch(logits, lengths) for logits, lengths in items]


class Lexicon(_Decoder):
    """A word list searched by CTC probability: ``decode`` returns argmax_w P(w | X) over the lexicon.

    The words sit in a prefix trie processed one depth at a time, all nodes of a depth as numpy arrays.
    A prefix's probability of being emitted bounds every word below it, so branches that cannot beat the
    best complete word found so far are pruned (exact, not a beam).
    """

    name = "lexicon"

    def __init__(self, words: Iterable[str], alphabet: str = ALPHABET) -> None:
        norm = sorted({w for w in (normalize_label(x, alphabet) for x in words) if w})
        if not norm:
            raise ValueError("lexicon is empty after normalisation to [0-9a-z]")
        self.words = norm
        self.alphabet = alphabet
        index = {c: i + 1 for i, c in enumerate(alphabet)}
        # levels[d] = (parent index into level d-1, class index, parent's class or -1, word id or -1)
        node_of: dict[str, tuple[int, int]] = {"": (0, 0)}
        levels: list[list[list[int]]] = []
        for wid, w in enumerate(norm):
            for d in range(1, len(w) + 1):
                pre = w[:d]
                if pre not in node_of:
                    while len(levels) < d:
                        levels.append([[], [], [], []])
                    lv = levels[d - 1]
                    parent = node_of[w[: d - 1]][1]
                    lv[0].append(parent)
                    lv[1].append(index[w[d - 1]])
                    lv[2].append(index[w[d - 2]] if d > 1 else -1)
                    lv[3].append(-1)
                    node_of[pre] = (d, len(lv[0]) - 1)
            d, i = node_of[w]
            levels[d - 1][3][i] = wid
        self._levels = [tuple(np.asarray(c, dtype=np.int64) for c in lv) for lv in levels]
        self.num_nodes = sum(len(lv[0]) for lv in self._levels)

    @classmethod
    def from_file(cls, path: str | os.PathLike, alphabet: str = ALPHABET) -> "Lexicon":
        p = Path(path)
        if not p.is_file():
            raise DatasetError(f"lexicon {p}: file not found")
        text = p.read_text(encoding="utf-8", errors="replace")
        words = [tok for line in text.splitlines() for tok in line.replace(",", " ").split()]
        try:
            return cls(words, alphabet)
        except ValueError as e:
            raise DatasetError(f"lexicon {p}: {e}") from None

    def __len__(self) -> int:
        return len(self.words)

    def decode(self, logp: np.ndarray) -> tuple[str, float]:
        """logp: (T, C) log-probabilities of one image -> (best word, its log CTC probability)."""
        T = logp.shape[0]
        y_blank = logp[:, BLANK]
        # Column 0 is t = -1. The root (empty prefix) ends in blank with prob 1 at t = -1.
        pb_par = np.concatenate([[0.0], np.cumsum(y_blank)])[None]  # (1, T+1)
        pnb_par = np.full((1, T + 1), -np.inf)
        alive = np.array([0])  # indices (into the previous level) of nodes still worth expanding
        best_word, best = self._seed(logp)  # a tight lower bound from the words nearest the greedy reading
        for parent, cls_, last, wid in self._levels:
            keep = np.isin(parent, alive)
            if not keep.any():
                break
            parent, cls_, last, wid = parent[keep], cls_[keep], last[keep], wid[keep]
            # map parents to rows of pb_par / pnb_par (rows are the alive nodes of the previous level)
            row = np.searchsorted(alive, parent)
            from_par = np.logaddexp(pb_par[row, :T], np.where((cls_ != last)[:, None], pnb_par[row, :T], -np.inf))
            emit = logp[:, cls_].T  # (N, T)
            start = emit + from_par  # (N, T): prefix's last char first emitted at t
            n = len(cls_)
            pnb = np.full((n, T + 1), -np.inf)
            pb = np.full((n, T + 1), -np.inf)
            for t in range(T):
                pnb[:, t + 1] = np.logaddexp(emit[:, t] + pnb[:, t], start[:, t])
                pb[:, t + 1] = y_blank[t] + np.logaddexp(pb[:, t], pnb[:, t])
            full = np.logaddexp(pb[:, T], pnb[:, T])
            words = np.flatnonzero(wid >= 0)
            if len(words):
                j = words[np.argmax(full[words])]
                if full[j] > best or (full[j] == best and self.words[int(wid[j])] < best_word):
                    best, best_word = float(full[j]), self.words[int(wid[j])]
            bound = np.logaddexp.reduce(start, axis=1)  # P(prefix is emitted): bounds every word below it
            ok = bound > best
            idx_all = np.flatnonzero(keep)
            alive, pb_par, pnb_par = idx_all[ok], pb[ok], pnb[ok]
            if not len(alive):
                break
        return best_word, best

    def _seed(self, logp: np.ndarray, k: int = 16) -> tuple[str, float]:
        """Best of the ``k`` lexicon words closest (edit distance) to the greedy string, scored exactly."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        best = logp.argmax(1)
        greedy = "".join(self.alphabet[c - 1] for i, c in enumerate(best) if c != BLANK and (i == 0 or c != best[i - 1]))
        cands = [w for w, _, _ in process.extract(greedy, self.words, scorer=Levenshtein.distance, limit=k)]
        cands = [w for w in cands if 2 * len(w) + 1 <= 2 * logp.shape[0] + 1]
        if not cands:
            return "", -np.inf
        scores = ctc_log_probs(logp, [[self.alphabet.index(c) + 1 for c in w] for w in cands])
        j = int(np.argmax(scores))
        return cands[j], float(scores[j])

    def decode_batch(self, logits: np.ndarray, lengths: Sequence[int] | None = None) -> list[Decoded]:
        """logits: (T, B, C) raw -> one Decoded per item; confidence is P(word | X) under CTC."""
        logp = log_softmax(logits)
        out = []
        for b in range(logits.shape[1]):
            n = logits.shape[0] if lengths is None else int(lengths[b])
            word, lp = self.decode(logp[:n, b])
            out.append(Decoded(word, float(np.exp(lp)), []))
        return out


class Greedy(_Decoder):
    """Best-path decoding (``greedy_decode``) as a decoder object."""

    name = "greedy"

    def __init__(self, alphabet: str = ALPHABET) -> None:
        self.alphabet = alphabet

    def decode_batch(self, logits: np.ndarray, lengths: Sequence[int] | None = None) -> list[Decoded]:
        return greedy_decode(logits, lengths, self.alphabet)


SEARCH_PER_THREAD = 64  # word-prior search: texts per thread (one batch's ~16 texts: a second thread did not pay)
WORDS_FILE = "words_en.tsv.gz"  # in deployzoo.weights; written by scripts/build_wordlist.py from wordfreq


class WordPrior(_Decoder):
    """Open-vocabulary decoding with an English word-frequency prior (noisy channel): the default for CRNN.

    Each image's greedy reading ``g`` competes with the listed words ``w`` within ``max_edits`` edits of it:

        score(w) = log P(w | X) + weight * zipf(w)        (CTC probability of the whole word, summed over paths)
        score(g) = log P(g | X) + weight * zipf(g)        when g is a listed word, else
                   log P(g | X) + weight * (oov_zipf - oov_per_char * len(g))

    and the highest score is read. A string that is not a word is scored as if its characters were drawn at random
    (``oov_per_char`` = log10 of the alphabet size), so a short code or number ("10", "4") keeps its reading
    unless the image clearly says otherwise, while a long non-word must be read clearly to beat a nearby word.
    The search runs only when ``g`` is not listed or P(g | X) < ``sure``. The settings were chosen on held-out real
    training words, never on a benchmark test set (``bench/word_prior.py``; weights/README.md gives the table).
    A chosen word's confidence is P(word | X); a kept greedy reading keeps its greedy confidences.
    """

    name = "words"

    def __init__(self, words: Sequence[str], zipf: Sequence[float], weight: float = 0.75, oov_zipf: float = 6.0,
                 oov_per_char: float | None = None, max_edits: int = 4, sure: float = 0.9, candidates: int = 64,
                 alphabet: str = ALPHABET, min_zipf: float | None = None) -> None:
        allowed = set(alphabet)
        keep = [(w, float(z)) for w, z in zip(words, zipf)
                if w and set(w) <= allowed and (min_zipf is None or float(z) >= min_zipf)]
        if not keep:
            raise ValueError("word list is empty after keeping words of the alphabet")
        self.words = [w for w, _ in keep]
        # what the search compares: ASCII bytes when the alphabet is ASCII (the same edit distances; rapidfuzz reads
        # a list of bytes in half the time of a list of str, and that reading is paid on every call), else the str
        self._choices = [w.encode("ascii") for w in self.words] if alphabet.isascii() else self.words
        self.zipf = {w: z for w, z in keep}
        self.weight, self.oov_zipf, self.max_edits = weight, oov_zipf, max_edits
        self.oov_per_char = float(np.log10(len(alphabet))) if oov_per_char is None else oov_per_char
        self.log_sure, self.candidates, self.alphabet = float(np.log(sure)), candidates, alphabet
        self.sure, self.min_zipf = sure, min_zipf
        self._index = {c: i + 1 for i, c in enumerate(alphabet)}

    def prior(self, text: str) -> float:
        """weight * (zipf of a listed word, or the random-characters score of any other string)."""
        z = self.zipf.get(text)
        return self.weight * (z if z is not None else self.oov_zipf - self.oov_per_char * len(text))

    @classmethod
    def from_file(cls, path: str | os.PathLike, alphabet: str = ALPHABET, **settings) -> "WordPrior":
        """``word<TAB>zipf`` lines (gzip when the name ends in .gz); ``#`` lines are comments."""
        p = Path(path)
        try:
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            rows = [ln.split("\t") for ln in raw.decode("utf-8").splitlines() if ln and not ln.startswith("#")]
            words, zipf = [r[0] for r in rows], [float(r[1]) for r in rows]
        except (OSError, EOFError, gzip.BadGzipFile, UnicodeDecodeError, IndexError, ValueError) as e:
            raise DatasetError(f"word list {p}: unreadable ({type(e).__name__}: {e}); expected word<TAB>zipf lines")
        try:
            return cls(words, zipf, alphabet=alphabet, **settings)
        except ValueError as e:
            raise DatasetError(f"word list {p}: {e}") from None

    @staticmethod
    @functools.cache
    def shipped(alphabet: str = ALPHABET) -> "WordPrior":
        """The English list shipped in the package (200,000 words), loaded once per process."""
        from importlib import resources

        return WordPrior.from_file(Path(str(resources.files("deployzoo.weights") / WORDS_FILE)), alphabet)

    def _score(self, logp: np.ndarray, words: Sequence[str]) -> np.ndarray:
        return ctc_log_probs(logp, [[self._index[c] for c in w] for w in words])

    def near(self, texts: Sequence[str]) -> list[list[str]]:
        """For each text, the listed words within ``max_edits`` edits (nearest first, then most frequent), at most
        ``candidates`` of them. One ``rapidfuzz.process.cdist`` call for all texts (7x faster than one by one);
        ASCII texts and words are compared as bytes (1.6x faster than as str, same distances). One thread per
        ``SEARCH_PER_THREAD`` texts, at most the usable cores: one batch's search (a server's) stays on one core,
        where a second thread did not pay; the merged searches of ``decode_batches`` use more."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        if not texts:
            return []
        as_bytes = self._choices is not self.words and all(t.isascii() for t in texts)
        queries = [t.encode("ascii") for t in texts] if as_bytes else list(texts)
        workers = min(usable_cores(), -(-len(queries) // SEARCH_PER_THREAD))
        dist = process.cdist(queries, self._choices if as_bytes else self.words, scorer=Levenshtein.distance,
                             score_cutoff=self.max_edits, dtype=np.int8, workers=workers)
        out = []
        for row in dist:
            hit = np.flatnonzero(row <= self.max_edits)
            hit = hit[np.argsort(row[hit], kind="stable")[: self.candidates]]
            out.append([self.words[i] for i in hit])
        return out

    def decode_batch(self, logits: np.ndarray, lengths: Sequence[int] | None = None) -> list[Decoded]:
        return self.decode_batches([(logits, lengths)])[0]

    def decode_batches(self, items: Sequence[tuple[np.ndarray, Sequence[int] | None]]) -> list[list[Decoded]]:
        """Several batches with one word search for all of them: the search's cost per call (rapidfuzz reads the
        whole list, ~9 ms) is paid once. Each image is still read alone: the result is ``decode_batch``'s."""
        reads = [self._greedy_scored(logits, lengths) for logits, lengths in items]
        keys = [(k, b) for k, r in enumerate(reads) for b in r.base]  # (batch, item) of the readings to search from
        texts = [reads[k].out[b].text for k, b in keys]
        pairs: list[list[tuple[int, str]]] = [[] for _ in reads]
        for (k, b), text, near in zip(keys, texts, self.near(texts)):
            pairs[k].extend((b, w) for w in near if w != text)
        return [self._choose(*r, p) for r, p in zip(reads, pairs)]

    def _greedy_scored(self, logits: np.ndarray, lengths: Sequence[int] | None) -> "_Readings":
        """Greedy readings, log-probabilities (B, T, C), frames per item, and the score of each greedy reading that
        needs a search (not a listed word, or read below ``sure``), by item."""
        out = greedy_decode(logits, lengths, self.alphabet)
        logp = log_softmax(logits).transpose(1, 0, 2)  # (B, T, C)
        T = logp.shape[1]
        frames = [T if lengths is None else int(min(lengths[b], T)) for b in range(len(out))]
        # score the greedy readings, one vectorised CTC pass per frame count (an image's padding frames are unread)
        base: dict[int, float] = {}
        for n, items in _group([b for b, d in enumerate(out) if d.text], frames).items():
            lps = self._score(logp[items, :n], [out[b].text for b in items])
            for b, lp in zip(items, lps.tolist()):
                if out[b].text not in self.zipf or lp < self.log_sure:
                    base[b] = lp + self.prior(out[b].text)
        return _Readings(out, logp, frames, base)

    def _choose(self, out: list[Decoded], logp: np.ndarray, frames: list[int], base: dict[int, float],
                pairs: list[tuple[int, str]]) -> list[Decoded]:
        """Each searched item's best-scoring candidate replaces its greedy reading when it scores higher."""
        best: dict[int, tuple[float, str, float]] = {}
        for n, idx in _group(range(len(pairs)), [frames[b] for b, _ in pairs]).items():
            lps = self._score(logp[[pairs[i][0] for i in idx], :n], [pairs[i][1] for i in idx])
            for i, lp in zip(idx, lps.tolist()):
                b, w = pairs[i]
                score = lp + self.prior(w)
                if score > base[b] and score > best.get(b, (-np.inf,))[0]:
                    best[b] = (score, w, lp)
        for b, (_, w, lp) in best.items():
            out[b] = Decoded(w, float(np.exp(lp)), [])
        return out


class _Readings(NamedTuple):
    """One batch's greedy readings as ``WordPrior`` searches from them (``_greedy_scored``)."""

    out: list[Decoded]
    logp: np.ndarray  # (B, T, C)
    frames: list[int]
    base: dict[int, float]  # item -> score of its greedy reading, for the items that need a search


def _group(items: Iterable[int], key: Sequence[int]) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i in items:
        groups.setdefault(key[i], []).append(i)
    return groups


DECODERS = ("words", "greedy")


def make_decoder(decode: str = "words", lexicon: str | os.PathLike | None = None, alphabet: str = ALPHABET):
    """The decoder a recogniser uses: a closed ``lexicon`` file when given, else ``decode`` = ``words`` (English
    word prior, the default) or ``greedy`` (best path)."""
    if lexicon:
        return Lexicon.from_file(lexicon, alphabet)
    if decode == "greedy":
        return Greedy(alphabet)
    if decode == "words":
        return WordPrior.shipped(alphabet)
    raise DeployzooError(f"unknown decoding {decode!r}; use one of {', '.join(DECODERS)} (or --lexicon FILE)")
