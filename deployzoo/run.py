"""One-click flow, as the seeds' run.sh: weights -> export -> build engines at each precision and backend ->
accuracy of every engine next to PyTorch -> speed of every engine -> one table (markdown + JSON).

For CRNN without ``--data`` a held-out synthetic test set is rendered first (a seed training never uses), so
``deployzoo run crnn`` works right after install with the shipped weights.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deployzoo.atomic import write_text
from deployzoo.errors import DeployzooError, EngineError
from deployzoo.evaluation.report import markdown_table, write_json
from deployzoo.specs import get_spec

PRECISIONS = ("force_float32", "force_float16", "qint8_mixed_float16")
BACKENDS = ("onnxruntime", "openvino")
SYNTH_TEST_SEED = 20_261_124  # never used for training data
SYNTH_CALIB_SEED = 20_261_125  # calibration words: apart from both training and the test set
METRIC_LABEL = {"text": "word acc", "classification": "top-1", "segmentation": "mIoU"}  # report column, plot axis


@dataclass
class Row:
    model: str
    precision: str
    backend: str
    batch: int
    accuracy: float | None = None
    images_per_s: float | None = None  # pure inference at `batch`, `threads`
    p50_ms: float | None = None
    e2e_images_per_s: float | None = None  # eval: read + decode + pre-process + infer + post-process
    engine: str | None = None
    note: str = ""


@dataclass
class FlowReport:
    model: str
    weights: str
    data: str
    threads: int
    export: dict = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the whole flow so far: data, export, builds, accuracy, speed
    machine: str = field(default_factory=lambda: _machine())

    def table(self) -> str:
        metric = METRIC_LABEL[get_spec(self.model).task]
        rows = [[r.model, r.precision, r.backend, r.batch, _pct(r.accuracy), _num(r.images_per_s), _num(r.p50_ms),
                 r.note] for r in self.rows]
        return markdown_table(["Model", "Precision", "Backend", "Batch", metric, "images/s", "p50 ms", "note"], rows,
                              align="<<<>>>><")

    def wall_time(self) -> str:
        m, s = divmod(round(self.seconds), 60)
        return f"{m} min {s:02d} s" if m else f"{s} s"


def _machine() -> str:
    """The CPU's model name and usable cores, as the bench scripts name them."""
    from deployzoo.host import host_info

    info = host_info()
    return f"{info.get('cpu') or platform.machine()}, {info.get('usable_cores') or os.cpu_count()} cores"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def run_flow(model: str = "crnn", out: str | os.PathLike = "runs/flow", checkpoint: str | None = None,
             data: str | None = None, random_weights: bool = False, precisions: list[str] | None = None,
             backends: list[str] | None = None, batch_size: int = 64, threads: int = 2, count: int = 500,
             calib_data: str | None = None, calib_count: int = 200, duration: float = 5.0, limit: int | None = None,
             rounds: int = 3, log=print) -> FlowReport:
    """The flow; ``duration``: seconds of timing per runner, split over ``rounds`` interleaved rounds."""
    from deployzoo.bench import bench_input, interleaved_rounds
    from deployzoo.engines import resolve_runner
    from deployzoo.export import export_onnx

    spec = get_spec(model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if data is None:
        if spec.task != "text":
            raise DeployzooError(f"run {model}: give --data (an ImageNet val / Cityscapes folder); see README")
        data = str(out / "data" / f"synth_test_{count}_s{SYNTH_TEST_SEED}")
        if not Path(data).exists():
            from deployzoo.data.synth import synth_to_lmdb

            log(f"[1/5] rendering {count} held-out synthetic test words -> {data}")
            synth_to_lmdb(data, count, seed=SYNTH_TEST_SEED, progress=False)
    if calib_data is None:
        if spec.task != "text":
            raise DeployzooError(f"run {model}: give --calib-data (images apart from --data) for int8 calibration")
        from deployzoo.engines.calib import PROBE_COUNT

        n_calib = calib_count + PROBE_COUNT["text"]  # calibration words + the held-out words of the int8 budget
        calib_data = str(out / "data" / f"synth_calib_{n_calib}_s{SYNTH_CALIB_SEED}")
        if not Path(calib_data).exists():
            from deployzoo.data.synth import synth_to_lmdb

            synth_to_lmdb(calib_data, n_calib, seed=SYNTH_CALIB_SEED, progress=False)
    runner, meta = resolve_runner(model, checkpoint, None, random_weights, threads)
    weights = meta["source"]
    ckpt = None if random_weights else meta.get("checkpoint")
    rep = FlowReport(model, weights, str(data), threads)
    log(f"[2/5] export {model} ({weights}) -> ONNX")
    exp = export_onnx(model, out / "export", ckpt, random_weights=random_weights, data=data)
    rep.export = {"onnx": exp.onnx, "max_abs_diff": exp.max_abs_diff, "parity": exp.parity}
    log(f"      max |onnx - torch| = {exp.max_abs_diff:.3g}")

    def accuracy(r, m: dict | None = None) -> tuple[float, float]:
        return _accuracy(model, r, data, batch_size, limit, m)

    acc, e2e = accuracy(runner, meta)
    ref = Row(model, "force_float32", "pytorch", batch_size, acc, None, None, e2e, note="reference")
    rep.rows.append(ref)
    log(f"[3/5] pytorch fp32: accuracy {acc:.4f}")
    from deployzoo.engines.manifest import precision_advice

    pairs = [(b, p) for b in backends or BACKENDS for p in precisions or PRECISIONS]
    log(f"[4/5] build {len(pairs)} engines, then their accuracy")
    built = build_matrix(model, pairs, out / "engines", checkpoint=ckpt, random_weights=random_weights,
                         calib_data=calib_data, calib_count=calib_count, threads=threads, log=log)
    timed: dict[str, tuple[Row, object]] = {"pytorch force_float32": (ref, runner)}
    for (backend, precision), eng in built.items():
        row = Row(model, precision, backend, batch_size)
        rep.rows.append(row)
        advice = precision_advice(precision, backend) if precision in PRECISIONS else None
        if advice:
            log(f"      note: {advice}")
            row.note = advice.split(":")[0]
        if isinstance(eng, str):
            row.note = eng
            continue
        row.engine = str(eng.path)
        try:
            row.accuracy, row.e2e_images_per_s = accuracy(eng)
            timed[f"{backend} {precision}"] = (row, eng)
            log(f"      {backend} {precision}: accuracy {row.accuracy:.4f}")
        except Exception as e:  # one engine failing must not lose the others' rows
            row.note = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:140] if str(e) else ''}"
            log(f"      {row.note}")
        _write_report(rep, out, t0, threads)
    log(f"[5/5] speed: {len(timed)} runners side by side, {rounds} interleaved rounds")
    x = bench_input(model, batch_size, meta.get("preprocess"))
    tput = interleaved_rounds({k: (lambda r=r: r(x)) for k, (_, r) in timed.items()}, batch_size,
                              max(duration / rounds, 0.5), rounds, log=log)
    for k, (row, _) in timed.items():
        row.images_per_s, row.p50_ms = tput[k]["images_per_s"], tput[k]["p50_ms"]
    _write_report(rep, out, t0, threads, final=True)
    return rep


def build_matrix(model: str, pairs: Sequence[tuple[str, str]], out: str | os.PathLike, *,
                 checkpoint: str | os.PathLike | None = None, random_weights: bool = False,
                 calib_data: str | os.PathLike | None = None, threads: int | None = 2, reuse: bool = False,
                 log: Callable[[str], None] = print, **build_kw) -> dict[tuple[str, str], object]:
    """The engine matrix: one engine per (backend, precision) under ``out/{backend}_{short precision}``, built (or,
    with ``reuse``, opened there when its manifest names the same weights' SHA-256) and opened with ``threads``.
    Used by ``deployzoo run``, bench/crnn_engines.py and bench/vision_engines.py.

    Keys: (backend, precision as ``normalize_precision`` names it). Values: the opened ``Engine``, or one line
    saying why it is missing (a precision the backend cannot build here, a build failure): one engine failing
    never loses the others. ``calib_data`` goes to int8 builds only; ``build_kw`` to ``build_engine``."""
    from deployzoo.engines import SHORT, open_engine
    from deployzoo.engines.build import build_engine, normalize_backend, normalize_precision

    out = Path(out)
    built: dict[tuple[str, str], object] = {}
    for backend, precision in pairs:
        try:
            backend = normalize_backend(backend)
            precision = normalize_precision(precision, backend)
        except EngineError as e:
            built[(backend, precision)] = f"not built: {str(e).splitlines()[0]}"
            continue
        path = out / f"{backend}_{SHORT[precision]}"
        try:
            if reuse and _same_source(path, checkpoint):
                log(f"      reusing {path}")
            else:
                t = time.perf_counter()
                path = build_engine(model, precision, backend, checkpoint=checkpoint, random_weights=random_weights,
                                    calib_data=calib_data if precision == "qint8_mixed_float16" else None,
                                    out=path, threads=threads, progress=False, **build_kw)
                log(f"      built {backend} {precision} in {time.perf_counter() - t:.0f} s")
            built[(backend, precision)] = open_engine(path, expect_model=model, threads=threads)
        except (EngineError, DeployzooError, ImportError) as e:
            built[(backend, precision)] = f"not built: {str(e).splitlines()[0][:200]}"
        except Exception as e:  # a runtime's own failure: recorded, the other engines still build
            built[(backend, precision)] = (f"build failed: {type(e).__name__}: "
                                           f"{str(e).splitlines()[0][:160] if str(e) else ''}")
        if isinstance(built[(backend, precision)], str):
            log(f"      {backend} {precision}: {built[(backend, precision)]}")
    return built


def _same_source(engine_dir: Path, checkpoint) -> bool:
    """An engine dir built earlier from these very weights (the checkpoint's SHA-256 in its manifest)."""
    import json

    from deployzoo.engines.manifest import sha256_file

    if checkpoint is None:
        return False
    try:
        m = json.loads((engine_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return m.get("source", {}).get("checkpoint_sha256") == sha256_file(checkpoint)


def _write_report(rep: FlowReport, out: Path, t0: float, threads: int, final: bool = False) -> None:
    """report.json and report.md, rewritten (atomically) after every engine so an interrupted run keeps its rows;
    at the end report.png (accuracy vs images/s, extra ``plot``), embedded in report.md."""
    from deployzoo.evaluation.plot import PLOT_HINT, accuracy_speed_png

    rep.seconds = time.perf_counter() - t0
    write_json(asdict(rep), out / "report.json")
    text = (f"# deployzoo run {rep.model}\n\nweights: {rep.weights}  \ndata: {rep.data}  \nmachine: {rep.machine}, "
            f"{threads} threads  \nwall time: {rep.wall_time()}\n\n{rep.table()}\n")
    if final:
        metric = METRIC_LABEL[get_spec(rep.model).task]
        png = accuracy_speed_png(rep.rows, out / "report.png", metric,
                                 f"deployzoo run {rep.model}: {metric} vs images/s ({rep.machine}, {threads} threads)")
        text += ("\n![accuracy vs images/s, one marker per engine](report.png)\n" if png else
                 f"\nNo plot: {PLOT_HINT}.\n")
    write_text(out / "report.md", text)


def _accuracy(model: str, runner, data: str, batch_size: int, limit: int | None,
              meta: dict | None = None) -> tuple[float, float]:
    """(metric as a fraction, end-to-end images/s) of one runner on one data set (``deployzoo.evaluation``)."""
    from deployzoo.evaluation import evaluate

    task = get_spec(model).task
    batch = {"text": batch_size, "classification": min(batch_size, 32), "segmentation": 1}[task]
    ev = evaluate(model, runner, data, meta, batch_size=batch, limit=limit)
    return ev.accuracy, ev.images_per_s
