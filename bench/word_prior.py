"""How the English word prior decodes real words, and how its settings were chosen.

    python bench/word_prior.py --tune ../shared/data/real_train/{ic15,iiit5k,svt,ic03,ic13bd}_train:heldout \
        --val ../shared/data/real_val/svt_647 ../shared/data/real_val/ic03_860 [--checkpoint FILE | --engine DIR] \
        [--grid scores|gate]

Runs the recogniser once per image (logits kept), then decodes the same logits with greedy decoding and with
``WordPrior`` at every setting of a small grid. Settings are ranked by accuracy on the --tune sets (held-out real
*training* words: never a benchmark test split); the --val sets are only reported beside them. Also times greedy
and the shipped settings (ms per image, decoding only, batches of 64, one thread).
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time
from importlib import resources
from pathlib import Path

import numpy as np

GRIDS = {
    # how words and non-words are scored
    "scores": {"weight": (0.5, 0.75, 1.0), "oov_zipf": (-1.0, 1.0, 3.0, 5.0, 6.0, 7.0),
               "oov_per_char": (0.0, float(np.log10(36)))},  # 0: a flat score for every non-word; log10 36: per char
    # when the search runs (a listed greedy reading read at P >= sure is kept as it is; 1.0: always search) and which
    # listed words count (the 200,000-word list ends in rare tokens and misspellings: "horel", "suuth", "mobll")
    "gate": {"sure": (0.5, 0.7, 0.9, 0.99, 1.0), "min_zipf": (None, 1.5, 2.0, 2.5, 3.0), "weight": (0.75, 1.0)},
}


def logits_of(rec, path: str) -> tuple[list[tuple[np.ndarray, list[int]]], list[str]]:
    """(logits (T, B, C), frames per item) per batch of 64, and the normalised labels."""
    from deployzoo.data.words import open_word_set
    from deployzoo.process.crnn import output_length, pad_batch
    from deployzoo.process.text import normalize_label

    ds = open_word_set(path)
    xs, labels = [], []
    for i in range(len(ds)):
        s = ds[i]
        label = normalize_label(s.label)
        if label:
            xs.append(rec.prepare(s.data if s.data is not None else s.path))
            labels.append(label)
    batches = []
    for j in range(0, len(xs), 64):
        x, widths = pad_batch(xs[j : j + 64], rec.cfg)
        out = rec.runner(x)
        batches.append((out, [min(output_length(int(w)), out.shape[0]) for w in widths]))
    return batches, labels


def accuracy(decoder, batches, labels) -> float:
    texts = [d.text for out, n in batches for d in decoder.decode_batch(out, n)]
    return sum(t == g for t, g in zip(texts, labels)) / len(labels)


def ms_per_image(decoder, batches, repeats: int = 2) -> float:
    n = sum(out.shape[1] for out, _ in batches)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for out, frames in batches:
            decoder.decode_batch(out, frames)
        best = min(best, time.perf_counter() - t)
    return 1000 * best / n


def main() -> None:
    import deployzoo
    from deployzoo.process.ctc import Greedy, WordPrior

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tune", nargs="+", required=True, help="word sets the settings are chosen on")
    ap.add_argument("--val", nargs="*", default=[], help="word sets reported beside them")
    ap.add_argument("--checkpoint")
    ap.add_argument("--engine")
    ap.add_argument("--top", type=int, default=8, help="settings shown besides the shipped ones")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="scores", help="which settings to search")
    ap.add_argument("--json")
    args = ap.parse_args()
    rec = deployzoo.load("crnn", checkpoint=args.checkpoint, engine=args.engine, decode="greedy")
    sets = {p: logits_of(rec, p) for p in args.tune + args.val}
    print(f"weights: {rec.source}; tune on {len(args.tune)} sets "
          f"({sum(len(sets[p][1]) for p in args.tune)} words), report {len(args.val)} more", flush=True)
    shipped = WordPrior.shipped(rec.alphabet)
    grid = GRIDS[args.grid]
    defaults = {k: getattr(shipped, k) for k in grid}

    def row(name, decoder) -> dict:
        per = {p: accuracy(decoder, *sets[p]) for p in sets}
        n_tune = sum(len(sets[p][1]) for p in args.tune)
        tune = sum(per[p] * len(sets[p][1]) for p in args.tune) / n_tune
        return {"setting": name, "tune": tune, "sets": per}

    def label(setting: dict) -> str:
        return ", ".join(f"{k}={'-' if v is None else format(v, '.4g')}" for k, v in setting.items())

    from deployzoo.process.ctc import WORDS_FILE

    words_file = Path(str(resources.files("deployzoo.weights") / WORDS_FILE))
    rows = [row("greedy", Greedy(rec.alphabet))]
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        if args.grid == "scores":  # same list, other scores: re-use the loaded prior
            for k, v in setting.items():
                setattr(shipped, k, v)
            rows.append(row(label(setting), shipped))
        else:  # another gate or list: a prior of its own (the other settings as shipped)
            rows.append(row(label(setting), WordPrior.from_file(words_file, rec.alphabet, **setting)))
    for k, v in defaults.items():
        setattr(shipped, k, v)
    name = label(defaults)
    ranked = sorted(rows[1:], key=lambda r: -r["tune"])
    show = [rows[0]] + ranked[: args.top] + [r for r in ranked[args.top :] if r["setting"] == name]
    short = [p.rstrip("/").split("/")[-1] for p in args.val]
    from deployzoo.bench import machine_info

    m = machine_info()
    print(f"\nmachine: {m.get('cpu', platform.machine())}, {m.get('usable_cores', '?')} cores; {len(rows) - 1} settings, "
          "best on --tune first")
    print("| decoding | tune (held-out) | " + " | ".join(short) + " |")
    print("|---|---:|" + "---:|" * len(short))
    for r in show:
        mark = " (shipped)" if r["setting"] == name else ""
        print(f"| {r['setting']}{mark} | {100 * r['tune']:.2f} | "
              + " | ".join(f"{100 * r['sets'][p]:.2f}" for p in args.val) + " |")
    timing_sets = [sets[p][0] for p in sets]
    batches = [b for bs in timing_sets for b in bs]
    t_greedy, t_words = ms_per_image(Greedy(rec.alphabet), batches), ms_per_image(shipped, batches)
    print(f"\ndecoding time per image (batches of 64): greedy {t_greedy:.3f} ms, words ({name}) {t_words:.2f} ms")
    if args.json:
        from deployzoo.atomic import write_json

        write_json({"weights": rec.source, "rows": rows, "shipped": name, "ms_greedy": t_greedy,
                    "ms_words": t_words}, args.json)


if __name__ == "__main__":
    main()
