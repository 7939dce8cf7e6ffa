"""Latency / throughput benchmark in the spirit of mm_run, ais_bench, onnxruntime_perf_test and benchmark_app.

``benchmark(target, ...)``: ``target`` is an engine directory (``deployzoo build``) or a model name (PyTorch eager,
the checkpoint path). For every (threads, batch size) pair it measures session creation, the first inference,
then ``iterations`` runs (or runs for ``duration`` seconds) after ``warmup``: latency mean/p50/p90/p99/max,
throughput in images/s, peak RSS. Two modes:

- ``infer`` (default): pure inference on a seeded batch of the engine's input shape, as ``mm_run``/``ais_bench``;
- ``e2e`` (``e2e_data=PATH``, CRNN): read + decode + pre-process + infer + CTC decode of real word images from a
  word set, through the same ``Recognizer`` as ``deployzoo recognize``.

Prints one markdown table and returns (and optionally writes) a JSON record with the machine (CPU model, cores,
ISA flags, load average: other processes on the machine skew timings), library versions and the settings.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deployzoo.errors import DeployzooError
from deployzoo.specs import get_spec, is_text

DEFAULT_DURATION = 5.0  # seconds per configuration when neither iterations nor duration is given
MIN_ITERATIONS = 5


def _as_list(v) -> list:
    if v is None:
        return [None]
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str):
        return [int(x) for x in v.split(",") if x.strip()]
    return [v]


def _rss_mb() -> tuple[float, float | None]:
    """(peak RSS of this process so far, current RSS) in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if sys.platform == "darwin":  # pragma: no cover - bytes on macOS
        peak /= 1024
    cur = None
    try:
        import psutil

        cur = psutil.Process().memory_info().rss / 2**20
    except ImportError:
        pass
    return round(peak, 1), (round(cur, 1) if cur is not None else None)


def latency_stats(lat_ms: Sequence[float]) -> dict:
    a = np.asarray(lat_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "p50": float(p50),
            "p90": float(p90), "p99": float(p99), "max": float(a.max())}


def machine_info() -> dict:
    from deployzoo.host import host_info

    info = host_info()
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        pass
    return info


def machine_line(m: dict, libraries: dict | None = None,
                 names: tuple[str, ...] = ("onnxruntime", "openvino", "torch")) -> str:
    """'Machine: CPU, N usable cores (ISA flags), load average ...; library versions': the line every bench table
    names its machine with (``machine_info()``, ``library_versions()``)."""
    flags = f" ({', '.join(m['cpu_flags'])})" if m.get("cpu_flags") else ""
    line = f"Machine: {m['cpu']}, {m['usable_cores']} usable cores{flags}, load average {m.get('load_average', '?')}"
    if libraries is not None:
        line += "; " + ", ".join(f"{n} {libraries.get(n, '-')}" for n in names)
    return line


class _Target:
    """Opens the runner for a thread count; knows the input shape and, for CRNN, the pre-processing."""

    def __init__(self, target: str | os.PathLike, checkpoint, random_weights: bool) -> None:
        from deployzoo.engines.manifest import MANIFEST_NAME
        from deployzoo.specs import SPECS

        self.target = str(target)
        p = Path(target)
        self.is_engine = p.is_dir() and (p / MANIFEST_NAME).is_file()
        if not self.is_engine and self.target not in SPECS:
            if p.exists():
                raise DeployzooError(f"bench target {target}: not an engine directory (no {MANIFEST_NAME})")
            raise DeployzooError(f"bench target {target}: neither an engine directory nor a model name "
                                 f"({', '.join(sorted(SPECS))})")
        self.checkpoint, self.random_weights = checkpoint, random_weights
        self._module = None
        if self.is_engine:
            from deployzoo.engines.manifest import verify_engine

            m = verify_engine(p)
            self.model, self.backend, self.precision = m["model"], m["backend"], m["precision"]
            self.preprocess, self.alphabet = m.get("preprocess", {}), m.get("alphabet")
            self.fixed_batch = m["input"].get("fixed_batch")
            self.source = str(p)
        else:
            self.model, self.backend, self.precision = self.target, "pytorch", "force_float32"
            self.fixed_batch = None
            self.preprocess, self.alphabet = {}, None
            self.source = "random weights" if random_weights else str(checkpoint or "shipped weights")

    def open(self, threads: int | None):
        """(runner, seconds to create it)."""
        t = time.perf_counter()
        if self.is_engine:
            from deployzoo.engines import open_engine

            runner = open_engine(self.target, threads=threads)
        else:
            from deployzoo.engines import EagerRunner
            from deployzoo.export import load_model

            if self._module is None:
                self._module, meta = load_model(self.model, self.checkpoint, self.random_weights)
                self.preprocess = meta.get("preprocess", {})
                self.alphabet = meta.get("alphabet")
            runner = EagerRunner(self._module, threads)
            if threads is None:
                import torch

                runner.threads = torch.get_num_threads()
        return runner, time.perf_counter() - t

    def input(self, batch: int, width: int | None) -> np.ndarray:
        return bench_input(self.model, batch, self.preprocess, width)


def bench_input(model: str, batch: int, preprocess: dict | None = None, width: int | None = None) -> np.ndarray:
    """A seeded input batch of the model's shape (CRNN: the pre-processing's width unless ``width`` is given)."""
    c, h, w = get_spec(model).input_shape
    if get_spec(model).dynamic_width:
        w = width or int((preprocess or {}).get("width", w))
    elif width:
        w = width
    rng = np.random.default_rng(0)
    return rng.uniform(-1, 1, size=(batch, c, h, w)).astype(np.float32)


def interleaved_rounds(work: dict[str, Callable[[], object]], batch: int, duration: float, rounds: int,
                       warmup: int = 2, log: Callable[[str], None] | None = None) -> dict[str, dict]:
    """Time contenders side by side: ``rounds`` rounds, each contender ``duration`` seconds per round in turn
    (A B C A B C ...), the median kept, so load from elsewhere on the machine hits every contender alike.
    ``work[name]()`` runs one batch of ``batch`` images. Returns {name: images_per_s, images_per_s_rounds, p50_ms}."""
    import statistics

    per: dict[str, list[dict]] = {k: [] for k in work}
    for r in range(rounds):
        for k, fn in work.items():
            res = _run_config(None, lambda i, fn=fn: fn, batch, None, duration, warmup)
            per[k].append(res)
            if log:
                log(f"  round {r + 1}/{rounds} {k}: {res['throughput_images_per_s']:.1f} img/s, p50 "
                    f"{res['latency_ms']['p50']:.1f} ms")
    return {k: {"images_per_s": statistics.median(v["throughput_images_per_s"] for v in rs),
                "images_per_s_rounds": [round(v["throughput_images_per_s"], 2) for v in rs],
                "p50_ms": statistics.median(v["latency_ms"]["p50"] for v in rs)} for k, rs in per.items()}


def _e2e_samples(data: str | os.PathLike, n: int) -> list:
    """Up to ``n`` decodable samples as the Recognizer takes them: file paths (folders) or encoded bytes (LMDB).
    Unreadable ones are left out (checked once here), so every timed run does the same kind of work."""
    from deployzoo.data.words import open_word_set
    from deployzoo.process.image import load_image

    ds = open_word_set(data)
    out = []
    for i in range(len(ds)):
        s = ds[i]
        if s.error:
            continue
        item = s.path if s.data is None else s.data
        try:
            load_image(item, "L")
        except DeployzooError:
            continue
        out.append(item)
        if len(out) >= n:
            break
    if not out:
        raise DeployzooError(f"bench e2e data {data}: no readable samples")
    return out


def _run_config(runner, make_batch, batch: int, iterations: int | None, duration: float | None,
                warmup: int) -> dict:
    """Time one (runner, batch) configuration. ``make_batch(i)`` returns the work of iteration i (a callable)."""
    t = time.perf_counter()
    make_batch(0)()
    first = time.perf_counter() - t
    for i in range(warmup):
        make_batch(i + 1)()
    if iterations is None and duration is None:
        duration = DEFAULT_DURATION
    lat = []
    t_start = time.perf_counter()
    i = 0
    while True:
        work = make_batch(i)
        t = time.perf_counter()
        work()
        lat.append((time.perf_counter() - t) * 1e3)
        i += 1
        elapsed = time.perf_counter() - t_start
        if iterations is not None and i >= iterations:
            break
        if iterations is None and elapsed >= duration and i >= MIN_ITERATIONS:
            break
    total = sum(lat) / 1e3
    stats = latency_stats(lat)
    peak, cur = _rss_mb()
    return {"iterations": len(lat), "first_inference_ms": first * 1e3, "latency_ms": stats,
            "throughput_images_per_s": batch * len(lat) / total if total > 0 else 0.0,
            "peak_rss_mb": peak, "rss_mb": cur}


def benchmark(target: str | os.PathLike, batch_size: int | Sequence[int] = 1,
              threads: int | Sequence[int] | None = None, iterations: int | None = None,
              duration: float | None = None, warmup: int = 5, e2e_data: str | os.PathLike | None = None,
              checkpoint: str | os.PathLike | None = None, *, width: int | None = None, random_weights: bool = False,
              e2e_samples: int = 512, json_path: str | os.PathLike | None = None, progress: bool = True,
              print_table: bool = True) -> dict:
    """Benchmark an engine directory or a PyTorch model over batch sizes x thread counts.

    Args:
        target: engine directory, or a model name (PyTorch eager with ``checkpoint`` / ``random_weights``).
        batch_size, threads: one value or a list (a sweep); threads None = the library default.
        iterations: timed runs per configuration; ``duration``: seconds per configuration instead
            (default 5 s when neither is given; at least 5 runs).
        warmup: untimed runs after the first inference.
        e2e_data: a word set for end-to-end mode (CRNN): read + decode + pre-process + infer + CTC decode.
        width: CRNN input width in inference mode (default: the engine's pre-processing width, 100).
        json_path: also write the JSON record there.
    Returns the JSON record: target, model, backend, precision, mode, machine, libraries, settings, results.
    """
    from deployzoo.engines.manifest import library_versions, now_iso

    tgt = _Target(target, checkpoint, random_weights)
    batches = [int(b) for b in _as_list(batch_size)]
    thread_list = [None if t in (None, 0) else int(t) for t in _as_list(threads)]
    if any(b < 1 for b in batches):
        raise DeployzooError(f"batch sizes must be >= 1, got {batches}")
    if e2e_data is not None and not is_text(tgt.model):
        raise DeployzooError(f"end-to-end mode reads word images: only for crnn, not '{tgt.model}'")
    mode = "e2e" if e2e_data is not None else "infer"
    samples = _e2e_samples(e2e_data, max(e2e_samples, max(batches))) if e2e_data is not None else None
    configs = [(t, b) for t in thread_list for b in batches]
    bar = _Bar(progress and (len(configs) > 1 or (duration or DEFAULT_DURATION) >= 3), len(configs), str(target))
    rows = []
    try:
        for t in thread_list:
            gc.collect()
            runner, create_s = tgt.open(t)
            rec = None
            if mode == "e2e":
                from deployzoo.predict import Recognizer

                rec = Recognizer.from_runner(runner, {"preprocess": tgt.preprocess, "alphabet": tgt.alphabet})
            for b in batches:
                if rec is not None:
                    rec.batch_size = b

                    def make(i, b=b):
                        k = (i * b) % len(samples)
                        chunk = (samples * (b // len(samples) + 2))[k : k + b]
                        return lambda: rec.recognize(chunk)
                else:
                    x = tgt.input(b, width)

                    def make(i, x=x):
                        return lambda: runner(x)

                row = {"mode": mode, "batch_size": b, "threads": t if t is not None else getattr(runner, "threads", None),
                       "session_create_s": round(create_s, 4),
                       **_run_config(runner, make, b, iterations, duration, warmup)}
                if tgt.fixed_batch is not None and b != tgt.fixed_batch:
                    row["note"] = f"engine batch fixed at {tgt.fixed_batch}: split / tail-padded"
                rows.append(row)
                bar.advance()
            runner = rec = None  # release the session before opening the next thread count
    finally:
        bar.close()
    record = {
        "target": tgt.target, "kind": "engine" if tgt.is_engine else "pytorch", "model": tgt.model,
        "backend": tgt.backend, "precision": tgt.precision, "weights": tgt.source, "mode": mode,
        "input": ({"data": str(e2e_data), "samples": len(samples)} if samples is not None else
                  {"shape_per_batch": list(tgt.input(1, width).shape[1:]), "data": "seeded uniform [-1, 1]"}),
        "settings": {"batch_sizes": batches, "threads": thread_list, "iterations": iterations, "duration_s": duration,
                     "warmup": warmup, "default_duration_s": DEFAULT_DURATION if iterations is None and duration is None
                     else None},
        "machine": machine_info(), "libraries": library_versions(), "created": now_iso(), "results": rows,
    }
    if print_table:
        print(format_table(record))
    if json_path:
        from deployzoo.evaluation.report import write_json

        write_json(record, json_path)
    return record


def format_table(record: dict) -> str:
    m = record["machine"]
    head = (f"{record['model']} {record['backend']} {record['precision']} ({record['mode']}) - {m['cpu']}, "
            f"{m['usable_cores']} usable cores, load average {m.get('load_average', '?')}")
    lines = [head, "",
             "| batch | threads | create s | first ms | mean ms | p50 ms | p90 ms | p99 ms | max ms | img/s | "
             "peak RSS MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in record["results"]:
        lat = r["latency_ms"]
        lines.append(f"| {r['batch_size']} | {r['threads'] if r['threads'] is not None else 'default'} | "
                     f"{r['session_create_s']:.3f} | {r['first_inference_ms']:.1f} | {lat['mean']:.2f} | "
                     f"{lat['p50']:.2f} | {lat['p90']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} | "
                     f"{r['throughput_images_per_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


class _Bar:
    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.p = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("bench {task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.p.start()
            self.task = self.p.add_task(Path(label).name or label, total=total)

    def advance(self) -> None:
        if self.p:
            self.p.advance(self.task)

    def close(self) -> None:
        if self.p:
            self.p.stop()
