"""Library functions behind the CLI subcommands: each prints its report and returns an exit code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from deployzoo.errors import DeployzooError
from deployzoo.specs import SPECS, get_spec


def models() -> int:
    """``deployzoo models``: one line per registered model."""
    from rich.console import Console
    from rich.table import Table

    t = Table("model", "task", "input (C,H,W)", "metric", "default weights", "description", box=None)
    for name in sorted(SPECS):
        s = SPECS[name]
        w = s.default_checkpoint()
        shape = f"{s.input_shape[0]}x{s.input_shape[1]}x{'W' if s.dynamic_width else s.input_shape[2]}"
        t.add_row(name, s.task, shape, s.metric, "shipped" if w else "--checkpoint", s.summary)
    Console(width=160).print(t)
    return 0


def _recognizer(model: str, checkpoint, engine, lexicon, batch_size: int, threads: int | None):
    from deployzoo.recognizer import load

    if get_spec(model).task != "text":
        raise DeployzooError(f"model '{model}' is not a word recogniser")
    return load(model, checkpoint=checkpoint, engine=engine, lexicon=lexicon, batch_size=batch_size, threads=threads)


def recognize(images: list[str], model: str = "crnn", checkpoint: str | None = None, engine: str | None = None,
              lexicon: str | None = None, batch_size: int = 32, threads: int | None = None,
              json_out: bool = False) -> int:
    """``deployzoo recognize IMG...``: text and confidence per image; unreadable images are reported, not fatal."""
    rec = _recognizer(model, checkpoint, engine, lexicon, batch_size, threads)
    results = rec.recognize(list(images))
    failed = 0
    rows = []
    for path, r in zip(images, results):
        failed += r.error is not None
        rows.append({"image": path, "text": r.text, "confidence": round(r.confidence, 6),
                     **({"error": r.error} if r.error else {})})
    if json_out:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            if "error" in row:
                print(f"{row['image']}\tERROR\t{row['error']}")
            else:
                print(f"{row['image']}\t{row['text']}\t{row['confidence']:.4f}")
    if failed:
        print(f"{failed} of {len(images)} images could not be read", file=sys.stderr)
    return 1 if failed == len(images) else 0


def evaluate(model: str, data: list[str], checkpoint: str | None = None, engine: str | None = None,
             batch_size: int = 64, lexicon: str | None = None, workers: int | None = None,
             threads: int | None = None, json_path: str | None = None, progress: bool = True) -> int:
    """``deployzoo eval MODEL --data PATH [...]``: prints the benchmark table and the seeds' top1 line."""
    from deployzoo.evaluation.report import write_json
    from deployzoo.evaluation.words import evaluate_words, format_report

    spec = get_spec(model)
    if spec.task != "text":
        raise DeployzooError(f"eval for '{model}' ({spec.task}) is not available yet")
    rec = _recognizer(model, checkpoint, engine, lexicon, batch_size, threads)
    results = [evaluate_words(rec, d, batch_size=batch_size, workers=workers, progress=progress and sys.stderr.isatty(),
                              model=model) for d in data]
    print(f"model: {model}  weights: {rec.source}  batch: {batch_size}  lexicon: {lexicon or 'none'}")
    print(format_report(results))
    if json_path:
        n = sum(r.n for r in results)
        correct = sum(r.correct for r in results)
        preds = [{"data": r.data, **p} for r in results for p in r.predictions]
        rec_json = {"model": model, "weights": rec.source, "lexicon": lexicon, "batch_size": batch_size,
                    "n": n, "correct": correct, "accuracy": correct / n if n else 0.0,
                    "mean_1_ned": sum(r.mean_1_ned * r.n for r in results) / n if n else 0.0,
                    "dropped": sum(r.dropped for r in results), "errors": sum(r.errors for r in results),
                    "datasets": [{k: v for k, v in r.to_json().items() if k != "predictions"} for r in results],
                    "predictions": preds}
        write_json(rec_json, json_path)
        print(f"wrote {json_path}")
    return 0


def convert(src: str, out: str, to: str | None = None, check_images: bool = True) -> int:
    """``deployzoo convert SRC --out DST``: gt.txt folder <-> LMDB."""
    from deployzoo.data.words import convert_word_set

    rep = convert_word_set(src, out, to=to, check_images=check_images)
    print(rep.summary())
    return 0


def train(model: str, **cfg) -> int:
    """``deployzoo train crnn [--flags of TrainConfig]``."""
    from deployzoo.train import TrainConfig, Trainer

    res = Trainer(TrainConfig(**cfg)).fit()
    print(f"trained to step {res['step']} in {res['seconds'] / 60:.1f} min; best validation {res['best']:.4f}; "
          f"checkpoints in {cfg.get('out')}")
    return 0


def synth(out: str, count: int, seed: int = 0, workers: int | None = None, shard_size: int | None = None) -> int:
    """``deployzoo synth --out DIR --count N``: rendered words as LMDB shards the trainer and eval read."""
    from deployzoo.data.synth import synth_to_lmdb

    stats = synth_to_lmdb(out, count, seed=seed, workers=workers, shard_size=shard_size)
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items()))
    return 0


def slim(src: str, out: str, half: bool = True) -> int:
    """``deployzoo slim SRC --out DST``: shippable weights (fp16 meijieru state dict + metadata)."""
    from deployzoo.train import slim_checkpoint

    p = slim_checkpoint(src, out, half=half)
    print(f"wrote {p} ({p.stat().st_size / 2**20:.1f} MiB)")
    return 0
