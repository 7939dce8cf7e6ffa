"""Library functions behind the CLI subcommands: each prints its report and returns an exit code."""

from __future__ import annotations

import json
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


def _tall(upright: bool) -> float | None:
    from deployzoo.process.crnn import tall_threshold

    return tall_threshold(upright)


def _recognizer(model: str, checkpoint, engine, lexicon, batch_size: int, threads: int | None,
                random_weights: bool = False, decode: str = "words", upright: bool = False):
    from deployzoo.predict import Recognizer

    if get_spec(model).task != "text":
        raise DeployzooError(f"model '{model}' is not a word recogniser")
    return Recognizer.from_weights(checkpoint, engine, random_weights, lexicon=lexicon, batch_size=batch_size,
                                   threads=threads, decode=decode, tall=_tall(upright))


def recognize(images: list[str], model: str = "crnn", checkpoint: str | None = None, engine: str | None = None,
              lexicon: str | None = None, batch_size: int = 32, threads: int | None = None,
              json_out: bool = False, random_weights: bool = False, decode: str = "words", upright: bool = False) -> int:
    """``deployzoo recognize IMG...``: text and confidence per image; unreadable images are reported, not fatal."""
    rec = _recognizer(model, checkpoint, engine, lexicon, batch_size, threads, random_weights, decode, upright)
    if rec.random_weights:
        print("WARNING: random weights: the text below is meaningless", file=sys.stderr)
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
             random_weights: bool = False, batch_size: int | None = None, lexicon: str | None = None,
             workers: int | None = None, threads: int | None = None, json_path: str | None = None,
             progress: bool = True, limit: int | None = None, label_file: str | None = None, flip: bool = False,
             scales: list[float] | None = None, out_dir: str | None = None, decode: str = "words",
             upright: bool = False) -> int:
    """``deployzoo eval MODEL --data PATH [...]``: the seeds' accuracy report for any model and any weights."""
    if isinstance(engine, list) and len(engine) > 1:
        return _evaluate_engines(model, data, engine, batch_size, json_path=json_path, threads=threads,
                                 workers=workers, limit=limit, lexicon=lexicon, label_file=label_file, decode=decode,
                                 upright=upright)
    if isinstance(engine, list):
        engine = engine[0]
    task = get_spec(model).task
    tty = progress and sys.stderr.isatty()
    given = {"--lexicon": lexicon, "--decode": None if decode == "words" else decode, "--label-file": label_file,
             "--flip": flip or None, "--scales": scales, "--upright": upright or None,
             "--out-dir": out_dir}
    allowed = {"text": {"--lexicon", "--decode", "--upright"}, "classification": {"--label-file"},
               "segmentation": {"--flip", "--scales", "--out-dir"}}[task]
    wrong = [k for k, v in given.items() if v is not None and k not in allowed]
    if wrong:
        raise DeployzooError(f"eval {model}: {', '.join(wrong)} do(es) not apply to {task} models")
    from deployzoo.evaluation import evaluate as run_eval
    from deployzoo.evaluation.report import write_json
    from deployzoo.predict import load_runner

    runner, meta = load_runner(model, checkpoint, random_weights, threads, engine)
    ev = run_eval(model, runner, data, meta, batch_size=batch_size, workers=workers, progress=tty, limit=limit,
                  decode=decode, lexicon=lexicon, label_file=label_file, flip=flip, scales=scales or (1.0,),
                  out_dir=out_dir, tall=_tall(upright))
    print(ev.report())
    if json_path:
        write_json(ev.to_json(), json_path)
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


def export(model: str, out: str, checkpoint: str | None = None, random_weights: bool = False, opset: int = 17,
           data: str | None = None, shape_mutable: bool = True, batch_size: int | None = None,
           input_size: tuple[int, int] | None = None) -> int:
    """``deployzoo export MODEL --out PATH``: ONNX plus the parity table against PyTorch."""
    from deployzoo.export import export_onnx

    rep = export_onnx(model, out, checkpoint, random_weights=random_weights, opset=opset, data=data,
                      shape_mutable=shape_mutable, batch_size=batch_size, input_size=input_size)
    print(f"wrote {rep.onnx} (opset {rep.opset}, {rep.seconds:.1f} s); max |onnx - torch| = {rep.max_abs_diff:.3g}")
    print(rep.table())
    return 0


def build(model: str, precision: str, out: str, backend: str = "onnxruntime", checkpoint: str | None = None,
          random_weights: bool = False, calib_data: str | None = None, calib_count: int = 256,
          shape_mutable: bool = True, batch_size: int | None = None, threads: int | None = None,
          probe_count: int | None = None, max_accuracy_drop: float = 0.5, max_disagreement: float = 1.0,
          input_size: tuple[int, int] | None = None, int8_lstm: bool = False, portable: bool = False,
          compact_lstm: bool = False, float_precision: str = "auto") -> int:
    """``deployzoo build MODEL --precision P --out DIR``: a verified, self-describing engine directory.
    The int8 budgets are given here in points / percent (the CLI's units); None switches one off.
    ``float_precision``: what an OpenVINO int8 engine's float layers run in (auto: bf16 where native, else f32)."""
    from deployzoo.engines.build import build_engine

    if float_precision != "auto" and backend != "openvino":
        raise DeployzooError(f"build: --float-precision {float_precision} applies to openvino int8 engines only "
                             f"(backend here: {backend})")

    for what, v in (("--max-accuracy-drop", max_accuracy_drop), ("--max-disagreement", max_disagreement)):
        if v is not None and not 0 <= v <= 100:
            raise DeployzooError(f"build: {what} must be between 0 and 100, got {v}")

    path = build_engine(model, precision, backend, checkpoint=checkpoint, calib_data=calib_data,
                        calib_count=calib_count, shape_mutable=shape_mutable, batch_size=batch_size, out=out,
                        random_weights=random_weights, threads=threads, progress=sys.stderr.isatty(),
                        probe_count=probe_count,
                        max_accuracy_drop=None if max_accuracy_drop is None else max_accuracy_drop / 100,
                        max_disagreement=None if max_disagreement is None else max_disagreement / 100,
                        input_size=input_size, options={"int8_lstm": int8_lstm, "portable": portable,
                                                                  "compact_lstm": compact_lstm,
                                                                  "float_precision": float_precision})
    from deployzoo.engines.manifest import read_manifest
    from deployzoo.engines.quant import summary_lines

    q = read_manifest(path).get("quantization") or {}
    for line in summary_lines(q) if "final" in q else []:
        print(line)
    print(f"Generate model done, model save to {path}")
    return 0


def bench(target: str, batch_size: list[int], threads: list[int] | None = None, iterations: int | None = None,
          duration: float | None = None, warmup: int = 5, e2e_data: str | None = None, checkpoint: str | None = None,
          random_weights: bool = False, json_path: str | None = None) -> int:
    """``deployzoo bench ENGINE_DIR|MODEL``: latency percentiles, throughput, peak RSS; sweeps print one table."""
    from deployzoo.bench import benchmark

    if iterations is None and duration is None:
        iterations = 100
    benchmark(target, batch_size=batch_size, threads=threads, iterations=iterations, duration=duration,
              warmup=warmup, e2e_data=e2e_data, checkpoint=checkpoint, random_weights=random_weights,
              json_path=json_path, progress=sys.stderr.isatty(), print_table=True)
    return 0


def run(model: str, out: str = "runs/flow", checkpoint: str | None = None, random_weights: bool = False,
        data: str | None = None, calib_data: str | None = None, precisions: list[str] | None = None,
        backends: list[str] | None = None, batch_size: int = 64, threads: int = 2, count: int = 500,
        limit: int | None = None) -> int:
    """``deployzoo run MODEL``: the seeds' one-click run.sh."""
    from deployzoo.run import run_flow

    rep = run_flow(model, out, checkpoint, data, random_weights, precisions, backends, batch_size, threads, count,
                   calib_data=calib_data, limit=limit)
    print()
    print(f"weights: {rep.weights}\ndata: {rep.data}\nmachine: {rep.machine}, {rep.threads} threads\n"
          f"wall time: {rep.wall_time()} (data, export, every build, accuracy and speed)")
    print(rep.table())
    print(f"report: {Path(out) / 'report.md'}")
    return 0


def _evaluate_engines(model: str, data: list[str], engines: list[str], batch_size: int | None, json_path=None,
                      threads=None, workers=None, limit=None, lexicon=None, label_file=None, decode="words",
                      upright=False) -> int:
    """Several engines on the same data: the seeds' table, Model | Precision | Backend | Batch | accuracy | img/s."""
    from deployzoo.engines import open_engine
    from deployzoo.evaluation.report import markdown_table, write_json

    from deployzoo.evaluation import evaluate as run_eval

    rows, records = [], []
    for path in engines:
        eng = open_engine(path, expect_model=model, threads=threads)
        ev = run_eval(model, eng, data, batch_size=batch_size, workers=workers, limit=limit, decode=decode,
                      lexicon=lexicon, label_file=label_file, log=lambda *_: None, tall=_tall(upright))
        rows.append([model, eng.precision, eng.backend, batch_size or eng.fixed_batch or "-", f"{ev.accuracy:.6f}",
                     f"{ev.images_per_s:.1f}"])
        records.append({"engine": str(path), "precision": eng.precision, "backend": eng.backend, "n": ev.n,
                        "accuracy": ev.accuracy, "images_per_s": ev.images_per_s})
    print(markdown_table(["Model", "Precision", "Backend", "Batch", "accuracy", "images/s"], rows,
                         align="<<<>>>"))
    if json_path:
        write_json({"model": model, "data": data, "engines": records}, json_path)
    return 0


def serve(target: str | None = None, **kw) -> int:
    """``deployzoo serve [TARGET]``: HTTP server with dynamic batching (``deployzoo.serve``)."""
    from deployzoo.serve import serve as _serve

    return _serve(target, **kw)


def export_triton(engine: str, out: str, **kw) -> int:
    """``deployzoo export-triton ENGINE_DIR --out REPO``: an NVIDIA Triton model repository."""
    from deployzoo.triton import export_triton as _export

    paths = _export(engine, out, **kw)
    print(f"wrote Triton model repository {out}: " + ", ".join(p.parent.name for p in paths))
    print(f"  serve: tritonserver --model-repository {out}")
    return 0
