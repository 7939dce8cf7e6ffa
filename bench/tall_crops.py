"""Vertical text: how many crops are tall, and how many of them each reading gets right.

    python bench/tall_crops.py --data ../shared/data/real_val/svt_647 ../shared/data/real_val/ic03_860 \
        ../shared/data/real_train/{ic15,iiit5k,svt,ic03,ic13bd}_train:heldout [--checkpoint FILE | --engine DIR]

For every crop more than ``--tall`` times taller than wide (``deployzoo.process.crnn.TALL`` by default), reads it
upright only (``rec.tall = None``) and as ``deployzoo recognize`` does (upright and turned a quarter both ways,
``pick_view``), with the default decoding, and prints per set: images, tall crops, and correct readings of the
tall crops both ways (case-insensitive alphanumeric, as ``deployzoo eval``). Only tall crops can change.
"""

from __future__ import annotations

import argparse
import platform


def main(argv=None) -> int:
    import deployzoo
    from deployzoo.data.words import open_word_set
    from deployzoo.process.crnn import TALL
    from deployzoo.process.image import load_image
    from deployzoo.process.text import normalize_label

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", required=True, help="word sets (LMDB, gt.txt folder, PATH:heldout)")
    ap.add_argument("--checkpoint")
    ap.add_argument("--engine")
    ap.add_argument("--decode", default="words")
    ap.add_argument("--tall", type=float, default=TALL)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)

    rec = deployzoo.load("crnn", checkpoint=a.checkpoint, engine=a.engine, decode=a.decode, threads=a.threads)
    print(f"# {platform.processor() or platform.machine()}, weights {rec.source or 'shipped'}, decode {a.decode}, "
          f"tall: height > {a.tall} x width")
    print("| set | images | tall crops | tall read upright only | tall read turned too (default) |")
    print("|---|---:|---:|---:|---:|")
    totals = [0, 0, 0, 0]
    for path in a.data:
        ds = open_word_set(path)
        grays, labels = [], []
        for i in range(len(ds)):
            s = ds[i]
            label = normalize_label(s.label)
            if s.error or not label:
                continue
            gray = load_image(s.data if s.data is not None else s.path, "L", name=s.key)
            if gray.shape[0] > a.tall * gray.shape[1]:
                grays.append(gray)
                labels.append(label)
        rec.tall = None
        upright = sum(d.text == g for d, g in zip(rec.recognize(grays), labels))
        rec.tall = a.tall
        turned = sum(d.text == g for d, g in zip(rec.recognize(grays), labels))
        row = [len(ds), len(grays), upright, turned]
        totals = [t + r for t, r in zip(totals, row)]
        print(f"| {path.rstrip('/').split('/')[-1]} | " + " | ".join(str(v) for v in row) + " |")
    print("| total | " + " | ".join(str(v) for v in totals) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
