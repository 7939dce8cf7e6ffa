"""Is data loading the bottleneck of `deployzoo eval`? End-to-end eval images/s vs model-only images/s.

    python bench/eval_pipeline.py --data PATH [--checkpoint FILE | --random-weights] [--batch-size 64]

Runs in one process, side by side: (1) the model alone on pre-decoded batches, (2) eval with images decoded in
the main process (workers=0), (3) eval with decoding in DataLoader workers. Reports the ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import torch

from deployzoo.evaluation.words import evaluate_words
from deployzoo.predict import Recognizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.random_weights:
        from deployzoo.models.crnn import crnn

        torch.manual_seed(0)
        path = os.path.join(tempfile.mkdtemp(), "random.pth")
        torch.save(crnn().state_dict(), path)
        args.checkpoint = path
    rec = Recognizer.from_checkpoint(args.checkpoint, batch_size=args.batch_size)

    warm = evaluate_words(rec, args.data, batch_size=args.batch_size, workers=0, progress=False)
    from deployzoo.data.words import open_word_set

    ds = open_word_set(args.data)
    xs = [rec.prepare(s.data if s.data is not None else s.path) for s in (ds[i] for i in range(len(ds))) if not s.error]
    t = time.perf_counter()
    rec.infer(xs)
    model_only = len(xs) / (time.perf_counter() - t)
    e0 = evaluate_words(rec, args.data, batch_size=args.batch_size, workers=0, progress=False)
    e1 = evaluate_words(rec, args.data, batch_size=args.batch_size, workers=args.workers, progress=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; data {args.data} ({warm.n} images); batch {args.batch_size}")
    print("| mode | images/s | vs model only |")
    print("|---|---:|---:|")
    print(f"| model only (pre-decoded, batched by width) | {model_only:.1f} | 1.00 |")
    print(f"| eval, decoding in the main process | {e0.images_per_s:.1f} | {e0.images_per_s / model_only:.2f} |")
    print(f"| eval, decoding in {args.workers} workers | {e1.images_per_s:.1f} | {e1.images_per_s / model_only:.2f} |")
    assert e0.predictions == e1.predictions


if __name__ == "__main__":
    main()
