"""CRNN training throughput (images/s) on this machine's device, for comparison with seed 002's 11,733 img/s on
one Ascend 910 card (1p, AMP O2, 100x32 inputs).

    python bench/train_throughput.py [--batch-size 256] [--amp bf16|fp16|none] [--steps 50] [--data-pipeline]
    python bench/train_throughput.py --compare --data synth_lmdb --real real_words ... [--rounds 3]
    python bench/train_throughput.py --batch-size 64 --amp bf16 --profile     # where a step's time goes
    python bench/train_throughput.py --batch-size 64 --amp bf16 [--compile]   # torch.compile on the CNN or not

Default: model-only (a fixed batch in device memory: forward + CTC + backward + Adam step). With
--data-pipeline the batches come from the data loader, as in real training: the synthetic renderer in DataLoader
workers, or with --data pre-rendered LMDB shards (``deployzoo synth``), plus --real words at --real-ratio.

--profile runs torch.profiler over the model-only steps and prints the operators by self CPU time (which share
of a step is convolution, LSTM, pooling, optimiser), to tell what a faster recipe could still win.

--compare times, interleaved in one run (A B A B, median of --rounds), the CPU recipe before this change
(renderer in a DataLoader worker, NCHW) against after (pre-rendered shards reused across epochs, channels_last),
each as a whole training loop with data. Its last row is the ceiling: the convolution and matmul FLOPs of a step
(counted) at this device's dense matmul rate (measured, same precision), everything else free; no recipe of this
model trains faster on this device.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from deployzoo.bench import machine_info, machine_line
from deployzoo.engines.manifest import library_versions
from deployzoo.host import host_info
from deployzoo.train import TrainConfig, Trainer

BASE = dict(out="/tmp/deployzoo_train_bench", val_synth=0, val_every=0, ckpt_every=10 ** 9, log_every=10 ** 9,
            progress=False, augment=1.0)


def measure(cfg: TrainConfig, warmup: int, steps: int, data_pipeline: bool, profile: bool = False,
            compile_cnn: bool = False) -> tuple[float, str]:
    tr = Trainer(cfg)
    if compile_cnn:  # TorchInductor on the convolutional part (the LSTMs stay eager); warm-up steps compile it
        tr.model.cnn = torch.compile(tr.model.cnn)
    sync = torch.cuda.synchronize if tr.device.type == "cuda" else (lambda: None)
    if data_pipeline:
        it = iter(tr.loader())
        batches = None
    else:
        from deployzoo.train import Encoded, collate

        enc = Encoded(tr.base, tr.pre, 0.0, 0)
        items = [enc[(i, i)] for i in range(cfg.batch_size * 2)]
        batches = [collate([x for x in items if x is not None][: cfg.batch_size], tr.pre)]
    n = 0
    prof = None
    for s in range(warmup + steps):
        b = next(it) if batches is None else batches[0]
        while b is None:
            b = next(it)
        if s == warmup:
            if profile:
                flops = step_flops(tr, b)
                prof = torch.profiler.profile()
                prof.__enter__()
            sync()
            t0 = time.perf_counter()
        tr.train_step(b)
        if s >= warmup:
            n += sum(p[0].shape[0] for p in (b if isinstance(b, list) else [b]))
    sync()
    seconds = time.perf_counter() - t0
    if prof is not None:
        prof.__exit__(None, None, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
        print(f"conv + matmul work: {flops / 1e9:.1f} GFLOP per step, done at "
              f"{flops * steps / seconds / 1e12:.2f} TFLOP/s (profiler on); this device's dense matmul at the "
              f"same precision: {matmul_tflops(tr.device, tr.amp_dtype):.2f} TFLOP/s")
    dev = torch.cuda.get_device_name() if tr.device.type == "cuda" else host_info()["cpu"]
    return n / seconds, dev


def step_flops(tr: Trainer, batch) -> int:
    """Convolution and matmul FLOPs of one training step on ``batch`` (the step is taken)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        tr.train_step(batch)
    return fc.get_total_flops()


def ceiling(cfg: TrainConfig) -> tuple[float, float, float]:
    """(images/s, GFLOP per image, TFLOP/s): the most any recipe of this model can train at on this device if
    its convolution and matmul work ran at the device's dense-matmul rate and everything else were free."""
    from deployzoo.train import Encoded, collate

    tr = Trainer(cfg)
    enc = Encoded(tr.base, tr.pre, 0.0, 0)
    items = [x for x in (enc[(i, i)] for i in range(cfg.batch_size * 2)) if x is not None][: cfg.batch_size]
    batch = collate(items, tr.pre)
    tr.train_step(batch)  # warm-up
    per_image = step_flops(tr, batch) / len(items)
    rate = matmul_tflops(tr.device, tr.amp_dtype) * 1e12
    return rate / per_image, per_image / 1e9, rate / 1e12


def matmul_tflops(device: torch.device, dtype: torch.dtype | None, n: int = 4096, reps: int = 5) -> float:
    """Dense n x n matmul rate on ``device`` at ``dtype`` (fp32 when None): the ceiling a compute-bound step meets."""
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--data-pipeline", action="store_true")
    ap.add_argument("--data", nargs="+", default=[], help="pre-rendered LMDB shards (deployzoo synth) for the pipeline")
    ap.add_argument("--real", nargs="+", default=[], help="real word sets mixed in (--real-ratio)")
    ap.add_argument("--real-ratio", type=float, default=0.5)
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--keep-ratio", action="store_true")
    ap.add_argument("--compare", action="store_true", help="before vs after, interleaved (needs --data)")
    ap.add_argument("--profile", action="store_true", help="per-operator time of the timed steps (torch.profiler)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the convolutional part first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    common = dict(BASE, batch_size=args.batch_size, amp=args.amp, threads=args.threads, keep_ratio=args.keep_ratio)
    if args.compare:
        if not args.data:
            ap.error("--compare needs --data (pre-rendered shards for the 'after' recipe)")
        steps = args.warmup + args.steps
        variants = {
            "before: renderer in 1 worker, NCHW": TrainConfig(**common, steps=steps, workers=1, channels_last=False),
            "after: shards + real words, channels_last": TrainConfig(
                **common, steps=steps, workers=args.workers if args.workers >= 0 else 1, channels_last=True,
                train=args.data, real=args.real, real_ratio=args.real_ratio),
        }
        machine = machine_info()  # before the rounds: the load average then says whether the machine was quiet
        res: dict[str, list[float]] = {k: [] for k in variants}
        for r in range(args.rounds):
            for name, cfg in variants.items():
                ips, _ = measure(cfg, args.warmup, args.steps, True)
                res[name].append(ips)
                print(f"round {r + 1}: {name}: {ips:.0f} images/s", flush=True)
        med = {k: float(np.median(v)) for k, v in res.items()}
        first = next(iter(med.values()))
        print(f"\n{machine_line(machine, library_versions(), ('torch',))}; batch {args.batch_size}, AMP {args.amp}, "
              f"{args.steps} steps x {args.rounds} interleaved rounds\n")
        print("| recipe | images/s (median) | min | max | vs before |")
        print("|---|---:|---:|---:|---:|")
        for k, v in res.items():
            print(f"| {k} | {med[k]:.0f} | {min(v):.0f} | {max(v):.0f} | {med[k] / first:.2f}x |")
        top, gflop, tflops = ceiling(variants[next(reversed(variants))])
        print(f"| ceiling: {gflop:.2f} GFLOP of convolution + matmul per image at this device's dense matmul rate "
              f"({tflops:.2f} TFLOP/s, same precision), everything else free | {top:.0f} | | | {top / first:.2f}x |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"machine": machine, "rounds": res, "median": med, "ceiling_images_per_s": top,
                           "gflop_per_image": gflop, "matmul_tflops": tflops}, f, indent=2)
        return
    cfg = TrainConfig(**common, steps=args.warmup + args.steps, channels_last=args.channels_last,
                      workers=args.workers if args.data_pipeline else 0, train=args.data, real=args.real,
                      real_ratio=args.real_ratio)
    ips, dev = measure(cfg, args.warmup, args.steps, args.data_pipeline, args.profile, args.compile)
    rec = {"device": dev, "cores": os.cpu_count(), "batch_size": args.batch_size, "amp": args.amp,
           "data_pipeline": args.data_pipeline, "images_per_s": ips, "seed_002_ascend_1p": 11733.53,
           "torch": torch.__version__}
    print("| device | batch | AMP | data | images/s | vs seed 002 (11,733 img/s, 1 Ascend 910) |")
    print("|---|---:|---|---|---:|---:|")
    data = ("LMDB shards" if args.data else "renderer workers") if args.data_pipeline else "in memory"
    print(f"| {dev} | {args.batch_size} | {args.amp} | {data} | {ips:.0f} | {ips / 11733.53:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rec, f, indent=2)


if __name__ == "__main__":
    main()
