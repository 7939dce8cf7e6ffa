"""Write the English word list that CRNN's word-prior decoding reads (weights/words_en.tsv.gz).

    python scripts/build_wordlist.py [--size 200000] [--out weights/words_en.tsv.gz]

Needs `wordfreq` (in the `torch` extra). Each line is ``word<TAB>zipf``: wordfreq's top English words, folded to the
recogniser's alphabet [0-9a-z] (``it's`` -> ``its``; a folded form keeps its highest frequency), most frequent first,
digit-only tokens left out (numbers are read as they are, not pulled towards a word). The data is derived from
wordfreq (https://github.com/rspeer/wordfreq), whose word lists are CC BY-SA 4.0: see weights/README.md.
Re-run after upgrading wordfreq; the decoder's settings were tuned on this list (model card).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata

from deployzoo.atomic import atomic_path
from deployzoo.process.text import normalize_label


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--out", default="weights/words_en.tsv.gz")
    args = ap.parse_args()
    from wordfreq import top_n_list, zipf_frequency

    zipf: dict[str, float] = {}
    for raw in top_n_list("en", int(args.size * 1.4)):
        w = normalize_label(raw)
        if not w or w.isdigit():
            continue
        z = zipf_frequency(raw, "en")
        if w not in zipf:
            if len(zipf) == args.size:
                continue
            zipf[w] = z
        else:
            zipf[w] = max(zipf[w], z)
    if len(zipf) < args.size:
        raise SystemExit(f"wordfreq gave only {len(zipf)} words; asked for {args.size}")
    words = sorted(zipf, key=lambda w: -zipf[w])  # stable: ties keep wordfreq's order
    header = (f"# {len(words)} English words from wordfreq {importlib.metadata.version('wordfreq')} (CC BY-SA 4.0, "
              "https://github.com/rspeer/wordfreq), folded to [0-9a-z]; word<TAB>zipf frequency\n")
    body = "".join(f"{w}\t{zipf[w]:.2f}\n" for w in words)
    with atomic_path(args.out) as tmp:
        with gzip.GzipFile(tmp, "wb", mtime=0) as f:  # mtime 0: the same words give the same bytes
            f.write((header + body).encode())
    print(f"wrote {args.out}: {len(words)} words")


if __name__ == "__main__":
    main()
