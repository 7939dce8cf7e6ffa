"""CTC decoding of CRNN outputs: greedy with confidences, and lexicon-constrained (max CTC probability).

Logits are (T, B, C) as the model emits them; class 0 is the blank.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployzoo.errors import DatasetError
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
    """log P(target | X) for many targets at once (CTC forward vectorised over targets and states)."""
    T = logp.shape[0]
    N = len(targets)
    S = 2 * max((len(t) for t in targets), default=0) + 1
    ext = np.zeros((N, S), dtype=np.int64)  # blank-interleaved labels, padded with blanks
    last = np.empty(N, dtype=np.int64)  # index of the final label state
    for i, t in enumerate(targets):
        ext[i, 1 : 2 * len(t) : 2] = t
        last[i] = 2 * len(t)
    skip = np.zeros((N, S), dtype=bool)  # s-2 -> s allowed: a label differing from the label before it
    skip[:, 2:] = (ext[:, 2:] != BLANK) & (ext[:, 2:] != ext[:, :-2])
    a = np.full((N, S), -np.inf)
    a[:, 0] = logp[0, BLANK]
    a[:, 1] = np.where(last > 0, logp[0, ext[:, 1]], -np.inf)
    rows = np.arange(N)[:, None]
    for t in range(1, T):
        prev = a
        a = prev.copy()
        a[:, 1:] = np.logaddexp(a[:, 1:], prev[:, :-1])
        a[:, 2:] = np.where(skip[:, 2:], np.logaddexp(a[:, 2:], prev[:, :-2]), a[:, 2:])
        a = a + logp[t][ext]
    end = a[rows[:, 0], last]
    end_lab = np.where(last > 0, a[rows[:, 0], np.maximum(last - 1, 0)], -np.inf)
    return np.logaddexp(end, end_lab)


class Lexicon:
    """A word list searched by CTC probability: ``decode`` returns argmax_w P(w | X) over the lexicon.

    The words sit in a prefix trie processed one depth at a time, all nodes of a depth as numpy arrays.
    A prefix's probability of being emitted bounds every word below it, so branches that cannot beat the
    best complete word found so far are pruned (exact, not a beam).
    """

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
