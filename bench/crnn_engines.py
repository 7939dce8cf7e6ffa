"""CRNN engine table for the README: accuracy and throughput of every backend x precision, and Tesseract 5.

    python bench/crnn_engines.py --checkpoint weights/crnn.pt \\
        --data /work/shared/data/real_val/svt_647 /work/shared/data/real_val/ic03_860 \\
        --calib-data PATH_TO_TRAINING_LIKE_WORDS [--batch-size 64] [--threads 2] [--json runs/crnn_engines.json]

    python bench/crnn_engines.py --random-weights --data DIR --quick      # smoke run, numbers meaningless

For each engine (onnxruntime fp32/int8/fp16, openvino fp32/fp16/bf16/int8, plus PyTorch eager as the reference)
it builds the engine (int8 calibrated on --calib-data; without it, on freshly rendered synthetic words, never on
the evaluation sets), evaluates word accuracy on every --data set (case-insensitive alphanumeric protocol), and
measures inference throughput at one batch size and thread count, all engines side by side in the same run:
``--rounds`` rounds, each engine timed once per round in turn, the median kept (other load on the machine then
hits every engine alike). Precisions a backend cannot really run here (ORT fp16 on CPU, f16/bf16 without CPU
support) appear as rows with the reason instead of numbers.

Tesseract 5 (``apt-get install tesseract-ocr``) reads the same image files with ``--psm 8`` (one word per image):
one persistent ``tesseract FILELIST stdout`` process per core (model loaded once per process,
``OMP_THREAD_LIMIT=1``), the files split evenly across processes; throughput = images / wall time.

Prints a markdown table naming the command and the machine, and writes the JSON record.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from deployzoo.bench import _run_config, machine_info, machine_line
from deployzoo.engines import SHORT
from deployzoo.run import build_matrix
from deployzoo.engines.manifest import library_versions, now_iso
from deployzoo.errors import DeployzooError

DEFAULT_ENGINES = ["onnxruntime:fp32", "onnxruntime:int8", "onnxruntime:fp16",
                   "openvino:fp32", "openvino:fp16", "openvino:bf16", "openvino:int8"]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    w = ap.add_mutually_exclusive_group(required=True)
    w.add_argument("--checkpoint", help="trained CRNN weights")
    w.add_argument("--random-weights", action="store_true", help="smoke run with random weights")
    ap.add_argument("--data", nargs="+", required=True, help="word sets to evaluate (gt.txt folders or LMDB)")
    ap.add_argument("--calib-data", help="int8 calibration words (default: render --calib-count synthetic words)")
    ap.add_argument("--calib-count", type=int, default=512)
    ap.add_argument("--probe-count", type=int, default=512, help="held-out labelled words measuring int8 accuracy loss")
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="backend:precision list")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per engine per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out-dir", default="runs/crnn_engines", help="engines and the synthetic calibration set")
    ap.add_argument("--json", default=None, help="JSON output (default OUT_DIR/crnn_engines.json)")
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument("--tesseract-whitelist", action="store_true",
                    help="also run Tesseract restricted to 0-9a-zA-Z (tessedit_char_whitelist)")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.calib_count, a.probe_count, a.duration, a.rounds = min(a.calib_count, 32), min(a.probe_count, 16), 0.5, 1
    return a


# ------------------------------------------------------------------------------------------ calibration

def synthetic_calibration(out_dir: Path, count: int) -> Path:
    """Render ``count`` synthetic words (the training distribution) as calibration data."""
    from deployzoo.data.synth import synth_to_lmdb

    path = out_dir / f"calib_synth_{count}"
    if not path.exists():
        print(f"rendering {count} synthetic calibration words into {path} ...", file=sys.stderr)
        synth_to_lmdb(path, count, seed=12345, progress=False)
    return path


# ----------------------------------------------------------------------------------------------- eval

def recognizer(runner, preprocess: dict, alphabet: str | None):
    """Greedy decoding: this bench measures what each engine does to the network's own reading."""
    from deployzoo.predict import Recognizer

    return Recognizer.from_runner(runner, {"preprocess": preprocess, "alphabet": alphabet}, decode="greedy")


def evaluate(runner, preprocess: dict, alphabet: str | None, data: list[str], batch: int) -> dict:
    """Word accuracy per set through ``deployzoo.evaluation.evaluate`` (the entry point of ``deployzoo eval``),
    with greedy decoding: this table measures what each engine does to the network's own reading."""
    from deployzoo.evaluation import evaluate as run_eval

    ev = run_eval("crnn", runner, data, {"preprocess": preprocess, "alphabet": alphabet, "source": ""},
                  batch_size=batch, decode="greedy")
    return {Path(r.data).name: {"n": r.n, "correct": r.correct, "accuracy": r.accuracy, "errors": r.errors,
                                "dropped": r.dropped, "predictions": [p["pred"] for p in r.predictions]}
            for r in ev.results}


def throughput_rounds(runners: dict, batch: int, duration: float, rounds: int, width: int,
                      files: list[Path]) -> dict:
    """Median images/s per runner over ``rounds`` interleaved rounds: inference on the same seeded batch, and end
    to end (read + decode + pre-process + infer + CTC decode) over ``files`` through a Recognizer."""
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 1, 32, width)).astype(np.float32)
    per: dict[str, list[tuple[dict, float]]] = {k: [] for k in runners}
    for r in range(rounds):
        for k, (run, rec) in runners.items():
            res = _run_config(run, lambda i, run=run: (lambda: run(x)), batch, None, duration, 2)
            rec.batch_size = batch
            rec.recognize(files[:batch])  # warm-up
            t = time.perf_counter()
            rec.recognize(files)
            e2e = len(files) / (time.perf_counter() - t)
            per[k].append((res, e2e))
            print(f"  round {r + 1}/{rounds} {k}: {res['throughput_images_per_s']:.1f} img/s inference, "
                  f"{e2e:.1f} img/s end to end", file=sys.stderr)
    return {k: {"images_per_s": statistics.median(v["throughput_images_per_s"] for v, _ in rs),
                "images_per_s_rounds": [round(v["throughput_images_per_s"], 1) for v, _ in rs],
                "p50_ms": statistics.median(v["latency_ms"]["p50"] for v, _ in rs),
                "e2e_images_per_s": statistics.median(e for _, e in rs)} for k, rs in per.items()}


# ------------------------------------------------------------------------------------------- tesseract

def word_files(data: str, tmp: Path) -> list[tuple[Path, str]]:
    """(image file, raw label) of every sample; LMDB images are written to ``tmp`` first."""
    from deployzoo.data.words import open_word_set

    ds = open_word_set(data)
    out = []
    for i in range(len(ds)):
        s = ds[i]
        if s.error:
            continue
        if s.path is not None:
            out.append((s.path, s.label))
        else:
            f = tmp / f"{Path(data).name}_{i:06d}.img"
            f.write_bytes(s.data)
            out.append((f, s.label))
    return out


def tesseract(data: list[str], procs: int, whitelist: bool) -> dict | None:
    from deployzoo.process.text import normalize_label

    exe = shutil.which("tesseract")
    if exe is None:
        return None
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    res: dict = {"version": version, "processes": procs, "psm": 8, "whitelist": whitelist, "sets": {}}
    total_n = total_t = 0.0
    with tempfile.TemporaryDirectory(prefix="tess-") as td:
        td = Path(td)
        for d in data:
            files = word_files(d, td)
            chunks = [files[i::procs] for i in range(procs)]
            cmd_extra = ["-c", "tessedit_char_whitelist=0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] if whitelist else []
            lists = []
            for k, ch in enumerate(chunks):
                fl = td / f"{Path(d).name}_{k}.txt"
                fl.write_text("\n".join(str(f) for f, _ in ch) + "\n")
                lists.append(fl)
            env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
            t = time.perf_counter()
            ps = [subprocess.Popen([exe, str(fl), "stdout", "--psm", "8", "-l", "eng", *cmd_extra],
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env) for fl in lists]
            outs = [p.communicate()[0].decode("utf-8", "replace") for p in ps]
            wall = time.perf_counter() - t
            n = correct = 0
            for ch, text in zip(chunks, outs):
                pages = text.split("\f")
                if pages and not pages[-1].strip():
                    pages = pages[:-1] if len(pages) > len(ch) else pages
                if len(pages) != len(ch):
                    raise DeployzooError(f"tesseract returned {len(pages)} results for {len(ch)} images of {d}")
                for (f, label), pred in zip(ch, pages):
                    gt = normalize_label(label)
                    if not gt:
                        continue
                    n += 1
                    correct += normalize_label(pred) == gt
            res["sets"][Path(d).name] = {"n": n, "correct": correct, "accuracy": correct / max(n, 1),
                                         "seconds": wall, "images_per_s": len(files) / wall}
            total_n += len(files)
            total_t += wall
    res["images_per_s"] = total_n / total_t if total_t else 0.0
    return res


# ------------------------------------------------------------------------------------------------ main

def computes(m: dict) -> str:
    c = m.get("computes")
    if isinstance(c, dict):
        short = {"Convolution": "conv", "FullyConnected": "fc", "RNNSeq": "lstm", "MatMul": "matmul"}
        return ", ".join(f"{short.get(k, k)} {'/'.join(sorted(v))}" for k, v in c.items())
    if m["precision"] == "qint8_mixed_float16":
        q = m["quantization"]
        return f"conv/matmul int8 ({len(q['int8_nodes'])}/{len(q['candidates'])}), lstm + rest fp32"
    return "fp32"


def main(argv=None) -> int:
    a = parse_args(argv)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = Path(a.json) if a.json else out_dir / "crnn_engines.json"
    command = "python bench/crnn_engines.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    calib = a.calib_data
    if calib is None:
        try:
            calib = str(synthetic_calibration(out_dir, a.calib_count + a.probe_count))
        except DeployzooError as e:
            raise SystemExit(f"int8 needs calibration words: pass --calib-data PATH ({e})")
    ck = None if a.random_weights else a.checkpoint

    from deployzoo.engines import EagerRunner
    from deployzoo.export import load_model

    import torch

    module, meta = load_model("crnn", ck, a.random_weights)
    torch.set_num_threads(a.threads)
    rows: list[dict] = []
    runners = {}
    ref = {"engine": "pytorch eager", "backend": "pytorch", "precision": "fp32", "computes": "fp32", "build_s": None,
           "size_mb": None}
    print("evaluating PyTorch eager (reference) ...", file=sys.stderr)
    ref["accuracy"] = evaluate(EagerRunner(module, a.threads), meta.get("preprocess", {}), meta.get("alphabet"),
                               a.data, a.batch_size)
    rows.append(ref)
    runners["pytorch eager"] = EagerRunner(module, a.threads)
    recs = {"pytorch eager": recognizer(runners["pytorch eager"], meta.get("preprocess", {}), meta.get("alphabet"))}
    width = int(meta.get("preprocess", {}).get("width", 100))

    pairs = [tuple(s.strip().split(":")) for s in a.engines.split(",") if s.strip()]
    print(f"building {len(pairs)} engines (deployzoo.run.build_matrix, the engine matrix of deployzoo run) ...",
          file=sys.stderr)
    built = build_matrix("crnn", pairs, out_dir / "engines", checkpoint=ck, random_weights=a.random_weights,
                         calib_data=calib, calib_count=a.calib_count, probe_count=a.probe_count, threads=a.threads,
                         log=lambda m: print(m, file=sys.stderr))
    for (backend, prec), eng in built.items():
        name = f"{backend} {SHORT.get(prec, prec)}"
        row = {"engine": name, "backend": backend, "precision": SHORT.get(prec, prec)}
        rows.append(row)
        if isinstance(eng, str):
            row["not_built"] = eng.removeprefix("not built: ")
            continue
        m = eng.manifest
        row["build_s"] = m.get("build_seconds")
        row["dir"] = str(eng.path)
        row["size_mb"] = round(sum(f["bytes"] for f in m["files"].values()) / 2**20, 2)
        row["computes"] = computes(m)
        if m.get("quantization"):
            q = m["quantization"]
            row["int8"] = {"float_nodes": q["float_nodes"], "calibration": q["calibration"].get("method") or q.get("preset"),
                           "probe_disagreement": q["final"]["disagreement"], "probe_rel_l2": q["final"]["rel_l2"],
                           "probe_accuracy_drop": q["final"].get("accuracy_drop"),
                           "budget": q["budget"], "int8_layers": len(q["quantized_nodes"]),
                           "layers": len(q["candidates"])}
        print(f"  evaluating {name} ...", file=sys.stderr)
        row["accuracy"] = evaluate(eng, m["preprocess"], m["alphabet"], a.data, a.batch_size)
        runners[name] = eng
        recs[name] = recognizer(eng, m["preprocess"], m["alphabet"])

    print(f"throughput: batch {a.batch_size}, {a.threads} threads, {a.rounds} rounds x {a.duration} s ...",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="e2e-") as td:
        files = [f for f, _ in word_files(a.data[0], Path(td))]
        tput = throughput_rounds({k: (runners[k], recs[k]) for k in runners}, a.batch_size, a.duration, a.rounds,
                                 width, files)
    base = tput.get("onnxruntime fp32", {}).get("images_per_s")
    for row in rows:
        if row["engine"] in tput:
            row.update(tput[row["engine"]])
            row["vs_ort_fp32"] = row["images_per_s"] / base if base else None
        if "accuracy" in row and row is not ref:  # agreement with the PyTorch reference predictions
            for k, v in row["accuracy"].items():
                refp = ref["accuracy"][k]["predictions"]
                v["same_as_pytorch"] = float(np.mean([x == y for x, y in zip(v["predictions"], refp)])) if refp else 0
    tess = None
    if not a.no_tesseract:
        print("running Tesseract ...", file=sys.stderr)
        tess = {"default": tesseract(a.data, a.threads, False)}
        if a.tesseract_whitelist:
            tess["whitelist"] = tesseract(a.data, a.threads, True)

    record = {"command": command, "created": now_iso(), "machine": machine_info(), "libraries": library_versions(),
              "weights": "random weights (smoke run)" if a.random_weights else str(ck), "calibration_data": calib,
              "settings": {"batch_size": a.batch_size, "threads": a.threads, "duration_s": a.duration,
                           "rounds": a.rounds, "width": width},
              "rows": [{k: v for k, v in r.items() if k != "accuracy"} |
                       {"accuracy": {d: {k2: v2 for k2, v2 in acc.items() if k2 != "predictions"}
                                     for d, acc in r.get("accuracy", {}).items()}} for r in rows],
              "tesseract": tess}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print(table(record, [Path(d).name for d in a.data]))
    print(f"\nwrote {json_path}")
    return 0


def table(rec: dict, sets: list[str]) -> str:
    m = rec["machine"]
    s = rec["settings"]
    lines = [f"`{rec['command']}`", "",
             f"{machine_line(m, rec['libraries'])}. Weights: {rec['weights']}. "
             f"Throughput: batch {s['batch_size']}, {s['threads']} threads, width {s['width']}, median of "
             f"{s['rounds']} interleaved rounds.", "",
             "| engine | computes | " + " | ".join(f"{d} acc" for d in sets) + " | same text as PyTorch | "
             "infer img/s | vs ORT fp32 | e2e img/s | size MB | build s |",
             "|---|---|" + "---:|" * len(sets) + "---:|---:|---:|---:|---:|---:|"]
    for r in rec["rows"]:
        if "not_built" in r:
            reason = r["not_built"].split(" (measured")[0].split("; ")[0]
            lines.append(f"| {r['engine']} | not built: {reason[:200]} |" + " |" * (len(sets) + 6))
            continue
        acc = " | ".join(f"{r['accuracy'][d]['accuracy'] * 100:.2f}" if d in r["accuracy"] else "-" for d in sets)
        same = [r["accuracy"][d].get("same_as_pytorch") for d in sets if d in r["accuracy"]]
        same_s = f"{np.mean(same) * 100:.2f}%" if same and same[0] is not None else "(reference)"
        vs = f"{r['vs_ort_fp32']:.2f}x" if r.get("vs_ort_fp32") else "-"
        lines.append(f"| {r['engine']} | {r.get('computes', '')} | {acc} | {same_s} | {r.get('images_per_s', 0):.1f} | "
                     f"{vs} | {r.get('e2e_images_per_s', 0):.1f} | {r.get('size_mb') or '-'} | "
                     f"{r.get('build_s') or '-'} |")
    for kind, t in (rec.get("tesseract") or {}).items():
        if t is None:
            lines.append("| tesseract | not installed (apt-get install tesseract-ocr) |" + " |" * (len(sets) + 6))
            continue
        acc = " | ".join(f"{t['sets'][d]['accuracy'] * 100:.2f}" if d in t["sets"] else "-" for d in sets)
        first = t["sets"].get(sets[0], {}).get("images_per_s", 0)
        lines.append(f"| {t['version']} --psm 8{' whitelist' if kind == 'whitelist' else ''} | "
                     f"{t['processes']} processes, 1 thread each | {acc} | - | - | - | {first:.1f} | - | - |")
    lines.append("")
    lines.append(f"infer img/s: the engine alone on a pre-processed batch. e2e img/s: on the files of {sets[0]}, "
                 "read + decode + pre-process + infer + CTC decode in one process (engines) or the Tesseract processes "
                 "(wall time, model loading included).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
