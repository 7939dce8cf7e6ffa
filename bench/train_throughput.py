"""CRNN training throughput (images/s) on this machine's device, for comparison with seed 002's 11,733 img/s on
one Ascend 910 card (1p, AMP O2, 100x32 inputs).

    python bench/train_throughput.py [--batch-size 256] [--amp bf16|fp16|none] [--steps 50] [--data-pipeline]

Default: model-only (a fixed batch in device memory: forward + CTC + backward + Adam step). With
--data-pipeline the batches come from the synthetic renderer in DataLoader workers, as in real training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from deployzoo.train import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data-pipeline", action="store_true")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--json")
    args = ap.parse_args()
    cfg = TrainConfig(out="/tmp/deployzoo_train_bench", steps=args.warmup + args.steps, batch_size=args.batch_size,
                      amp=args.amp, workers=args.workers if args.data_pipeline else 0, val_synth=0, val_every=0,
                      ckpt_every=10 ** 9, log_every=10 ** 9, progress=False, augment=1.0)
    tr = Trainer(cfg)
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
    if args.data_pipeline:
        it = iter(tr.loader())
        batches = None
    else:
        from deployzoo.train import Encoded, collate

        enc = Encoded(tr.base, tr.pre, 0.0, 0)
        items = [enc[(i, i)] for i in range(args.batch_size * 2)]
        batch = collate([x for x in items if x is not None][: args.batch_size], tr.pre)
        batches = [batch]
    n = 0
    for s in range(args.warmup + args.steps):
        b = next(it) if batches is None else batches[0]
        if s == args.warmup:
            sync()
            t0 = time.perf_counter()
        tr.train_step(b)
        if s >= args.warmup:
            n += b[0].shape[0]
    sync()
    dt = time.perf_counter() - t0
    dev = torch.cuda.get_device_name() if tr.device.type == "cuda" else platform.processor() or platform.machine()
    rec = {"device": dev, "cores": os.cpu_count(), "batch_size": args.batch_size, "amp": str(tr.amp_dtype),
           "data_pipeline": args.data_pipeline, "images_per_s": n / dt, "seed_002_ascend_1p": 11733.53,
           "torch": torch.__version__}
    print("| device | batch | AMP | data | images/s | vs seed 002 (11,733 img/s, 1 Ascend 910) |")
    print("|---|---:|---|---|---:|---:|")
    print(f"| {dev} | {args.batch_size} | {rec['amp']} | {'renderer workers' if args.data_pipeline else 'in memory'} "
          f"| {rec['images_per_s']:.0f} | {rec['images_per_s'] / 11733.53:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
