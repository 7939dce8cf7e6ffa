"""Lexicon-constrained CTC decoding speed: ms per image for lexicons of 1k..50k words.

    python bench/lexicon_decode.py [--checkpoint FILE] [--data PATH] [--json OUT]

Words come from wordfreq's English list when installed (else random strings). Logits are real CRNN outputs on
real word images when --checkpoint and --data are given, otherwise peaked random matrices (T=26).
Compares the trie search with exhaustive per-word CTC scoring (the naive method) on the smallest lexicon.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from deployzoo.process.ctc import Lexicon, ctc_log_prob, log_softmax
from deployzoo.process.text import ALPHABET, encode, normalize_label


def vocabulary(n: int) -> list[str]:
    try:
        from wordfreq import top_n_list

        words = [normalize_label(w) for w in top_n_list("en", n * 2)]
        words = list(dict.fromkeys(w for w in words if w))[:n]
        if len(words) >= n:
            return words
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(list(ALPHABET[10:]), rng.integers(2, 12))) for _ in range(n)]


def logits_for(args, n: int) -> list[np.ndarray]:
    if args.checkpoint and args.data:
        import deployzoo
        from deployzoo.data.words import open_word_set
        from deployzoo.process.crnn import pad_batch

        rec = deployzoo.load("crnn", checkpoint=args.checkpoint)
        ds = open_word_set(args.data)
        xs = [rec.prepare(ds[i].data if ds[i].data is not None else ds[i].path) for i in range(min(n, len(ds)))]
        x, _ = pad_batch(xs, rec.cfg)
        out = rec.runner(x)
        return [log_softmax(out[:, b]) for b in range(out.shape[1])]
    rng = np.random.default_rng(1)
    mats = []
    words = vocabulary(1000)
    for _ in range(n):  # like a trained CRNN: blank dominates between characters; characters peaked but noisy
        w = words[rng.integers(len(words))][:12]
        z = rng.normal(0, 1.5, (26, 37))
        z[:, 0] += 8
        for t, k in enumerate(encode(w)):
            z[2 * t + 1, 0] -= 8
            z[2 * t + 1, k] += rng.uniform(3, 7)
        mats.append(log_softmax(z))
    return mats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint")
    ap.add_argument("--data")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--json")
    args = ap.parse_args()
    mats = logits_for(args, args.images)
    rows = []
    for size in (1000, 10000, 50000):
        t = time.perf_counter()
        lex = Lexicon(vocabulary(size))
        build = time.perf_counter() - t
        t = time.perf_counter()
        for m in mats:
            lex.decode(m)
        per = (time.perf_counter() - t) / len(mats) * 1000
        rows.append({"words": len(lex), "trie_nodes": lex.num_nodes, "build_s": round(build, 2), "ms_per_image": round(per, 2)})
    lex = Lexicon(vocabulary(1000))
    t = time.perf_counter()
    for m in mats[:5]:
        max(lex.words, key=lambda w: ctc_log_prob(m, encode(w)))
    naive = (time.perf_counter() - t) / 5 * 1000
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| lexicon words | trie nodes | build (s) | trie search ms/image |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['words']} | {r['trie_nodes']} | {r['build_s']} | {r['ms_per_image']} |")
    print(f"exhaustive CTC scoring of 1000 words: {naive:.1f} ms/image "
          f"({naive / rows[0]['ms_per_image']:.0f}x the trie search on the same lexicon)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "naive_ms_1000": naive}, f, indent=2)


if __name__ == "__main__":
    main()
