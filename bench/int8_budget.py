"""int8 budget table for the README: what the paired accuracy budget decides, per calibration set and engine recipe.

    python bench/int8_budget.py --checkpoint weights/crnn.pt --real-calib ../shared/data/real_train/ic03_train \\
        [--calib-count 256] [--probe-count 512] [--threads 2] [--out-dir runs/int8_budget] [--rows ...]

    python bench/int8_budget.py --random-weights --real-calib DIR --quick      # smoke run, numbers meaningless

Each row is one ``deployzoo build crnn --precision int8`` (through ``deployzoo.engines.build.build_engine``, the
code behind the CLI) with a calibration set and a recipe; the table is read from each engine's ``manifest.json``:
``quantization.all_int8`` (every candidate layer int8 against the float model on the held-out probe words: drop in
points, its 95 % paired interval, words lost / gained), ``.float_nodes`` (layers the budget kept float),
``.verdict``, ``.probe_check`` (probe words needed to certify the budget), and for the LSTM recipes ``.lstm.probe``
(the same measurement with the LSTM variant) and ``.lstm.kept``. The rendered calibration set is
``deployzoo synth --count 1024 --seed 31337`` (rendered once into OUT_DIR); the real one is whatever
``--real-calib`` names (a training split: never a benchmark test set). Builds run one after another, on
``--threads`` threads.

Then every engine, with an ONNX Runtime fp32 engine of the same weights as the reference, is timed side by side:
``--rounds`` interleaved rounds of ``--duration`` seconds each at ``--batch-size`` (one seeded 100x32 batch, as
bench/crnn_engines.py), median kept; the table gives images/s, the ratio to ORT fp32, and whether a word's text
can depend on its batch neighbours (dynamic int8 LSTMs). Prints a markdown table naming the command and the
machine, and writes the JSON record.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from deployzoo.bench import _run_config, machine_info, machine_line
from deployzoo.engines.manifest import library_versions, now_iso, read_manifest

# name: (calibration, backend, options, what the README calls the recipe[, "fixed": batch fixed to --batch-size,
# so the engine has one static input shape, which OpenVINO compiles for that shape])
ROWS = {
    "ort_static": ("rendered", "onnxruntime", {}, "ORT, static convs"),
    "ort_lstm": ("rendered", "onnxruntime", {"int8_lstm": True}, "ORT `--int8-lstm`"),
    "ort_compact": ("rendered", "onnxruntime", {"compact_lstm": True, "portable": True},
                    "ORT `--compact-lstm --portable` (the shipped recipe)"),
    "ort_lstm_real": ("real", "onnxruntime", {"int8_lstm": True}, "ORT `--int8-lstm`"),
    "ov_real": ("real", "openvino", {}, "OpenVINO (float parts auto)"),
    "ov_real_f32": ("real", "openvino", {"float_precision": "f32"}, "OpenVINO `--float-precision f32`"),
    "ov_real_fixed": ("real", "openvino", {}, "OpenVINO, fixed batch (`--shape-mutable false --batch-size B`)",
                      "fixed"),
    "ov_real_fixed_f32": ("real", "openvino", {"float_precision": "f32"},
                          "OpenVINO, fixed batch, `--float-precision f32`", "fixed"),
}
RENDERED_SEED = 31337


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    w = ap.add_mutually_exclusive_group(required=True)
    w.add_argument("--checkpoint", help="trained CRNN weights")
    w.add_argument("--random-weights", action="store_true", help="smoke run with random weights")
    ap.add_argument("--real-calib", required=True, help="real labelled training words (gt.txt folder or LMDB)")
    ap.add_argument("--rendered-count", type=int, default=1024, help="rendered calibration + probe words")
    ap.add_argument("--calib-count", type=int, default=256)
    ap.add_argument("--probe-count", type=int, default=512)
    ap.add_argument("--max-accuracy-drop", type=float, default=0.5, help="budget in points (as deployzoo build)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per engine per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--out-dir", default="runs/int8_budget", help="engines and the rendered calibration set")
    ap.add_argument("--json", default=None, help="JSON output (default OUT_DIR/int8_budget.json)")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    ap.add_argument("--retable", action="store_true",
                    help="build and time nothing: re-read the rows from OUT_DIR's engine manifests and the speeds "
                         "from the JSON record of an earlier run, and print its table again")
    a = ap.parse_args(argv)
    if a.quick:
        a.rendered_count, a.calib_count, a.probe_count, a.duration, a.rounds = 48, 16, 24, 0.3, 1
    return a


def rendered_set(out_dir: Path, count: int) -> Path:
    from deployzoo.data.synth import synth_to_lmdb

    path = out_dir / f"rendered_{RENDERED_SEED}_{count}"
    if not path.exists():
        print(f"rendering {count} calibration words into {path} ...", file=sys.stderr)
        synth_to_lmdb(path, count, seed=RENDERED_SEED, progress=False)
    return path


def row_record(name: str, manifest: dict, calib_name: str, seconds: float) -> dict:
    """The table's fields from one engine manifest (points, not fractions)."""
    q = manifest["quantization"]
    pts = lambda v: round(v * 100, 2)  # noqa: E731

    def effect(m: dict) -> dict:
        return {"drop": pts(m["accuracy_drop"]), "interval": [pts(v) for v in m["drop_interval"]],
                "lost": m["lost"], "gained": m["gained"], "labelled": m["labelled"]}

    lstm = q.get("lstm") or {}
    return {"row": name, "calibration": calib_name, "recipe": ROWS[name][3], "backend": manifest["backend"],
            "calibration_images": q["calibration"]["images"],
            "all_int8": effect(q["all_int8"]), "float_nodes": q["float_nodes"], "verdict": q["verdict"],
            "words_needed": (q.get("probe_check") or {}).get("words_needed"),
            "enough": (q.get("probe_check") or {}).get("enough"),
            "float_parts": q.get("float_parts_dtype"), "computes": manifest.get("computes"),
            "lstm": ({"scheme": lstm["scheme"], "kept": lstm.get("kept"), **effect(lstm["probe"])}
                     if lstm.get("probe") else None),
            "batch_invariant": bool(lstm.get("batch_invariant", True)) if lstm.get("kept") else True,
            "build_s": round(seconds, 1)}


def time_engines(paths: dict[str, Path], batch: int, threads: int, duration: float, rounds: int) -> dict:
    """Median images/s per engine over interleaved rounds on one seeded batch."""
    from deployzoo.engines import open_engine

    x = np.random.default_rng(0).uniform(-1, 1, (batch, 1, 32, 100)).astype(np.float32)
    runners = {k: open_engine(p, threads=threads) for k, p in paths.items()}
    per: dict[str, list[float]] = {k: [] for k in runners}
    for r in range(rounds):
        for k, run in runners.items():
            res = _run_config(run, lambda i, run=run: (lambda: run(x)), batch, None, duration, 2)
            per[k].append(round(res["throughput_images_per_s"], 1))
            print(f"  round {r + 1}/{rounds} {k}: {per[k][-1]:.1f} images/s", file=sys.stderr)
    return {k: {"images_per_s": float(np.median(v)), "rounds": v} for k, v in per.items()}


def fmt_effect(e: dict) -> str:
    lo, hi = e["interval"]
    return f"{e['drop']:+.2f} [{lo:+.2f}, {hi:+.2f}], {e['lost']} / {e['gained']}"


def table(rec: dict) -> str:
    lines = [f"`{rec['command']}`", "",
             f"{machine_line(rec['machine'], rec['libraries'], ('onnxruntime', 'openvino', 'nncf'))}. Weights: "
             f"{rec['weights']}. Budget {rec['settings']['budget']} points; {rec['settings']['calib_count']} "
             f"calibration + up to {rec['settings']['probe_count']} probe words per build. Drops are float minus "
             "int8 in points with the 95 % paired interval. Throughput: batch "
             f"{rec['settings']['batch_size']}, {rec['settings']['threads']} threads, 100x32, median of "
             f"{rec['settings']['rounds']} interleaved rounds.", "",
             "| calibration / probe words | engine | all layers int8: drop [95 % interval], lost / gained | "
             "LSTM variant: drop [interval], lost / gained | layers kept float | verdict | words to certify | "
             "images/s | vs ORT fp32 | batch-invariant |",
             "|---|---|---|---|---|---|---:|---:|---:|---|"]
    ref = rec["speed"].get("ort_fp32", {}).get("images_per_s")
    for r in rec["rows"]:
        if "error" in r:
            lines.append(f"| {r['calibration']} | {r['recipe']} | failed: {r['error'][:160]} | | | | | | | |")
            continue
        e = r["all_int8"]
        lstm = (f"{fmt_effect(r['lstm'])} ({'kept' if r['lstm']['kept'] else 'not kept'})" if r["lstm"] else "-")
        parts = f"; float parts {r['float_parts']}" if r["backend"] == "openvino" else ""
        needed = "-" if r["words_needed"] is None else f"{r['words_needed']:,}" + (" (enough)" if r["enough"] else "")
        ips = rec["speed"].get(r["row"], {}).get("images_per_s")
        speed = f"{ips:.1f} | {ips / ref:.2f}x" if ips and ref else "- | -"
        calib = f"{r['calibration']}: {r['calibration_images']} calibration, {e['labelled']} probe"
        lines.append(f"| {calib} | {r['recipe']}{parts} | {fmt_effect(e)} | {lstm} | "
                     f"{', '.join(r['float_nodes']) or 'none'} | {r['verdict']} | {needed} | {speed} | "
                     f"{'yes' if r['batch_invariant'] else 'no'} |")
    for k in ("ort_fp32", "ov_fp32"):
        if k in rec["speed"]:
            ips = rec["speed"][k]["images_per_s"]
            lines.append(f"| (reference) | {'ONNX Runtime' if k == 'ort_fp32' else 'OpenVINO'} fp32 | | | | | | "
                         f"{ips:.1f} | {ips / ref:.2f}x | yes |")
    return "\n".join(lines)


def retable(out: Path, json_path: Path) -> int:
    """Print an earlier run's table again from its JSON record, each row re-read from its engine's manifest (so a
    field added to the table later is filled from what that run built); the record is rewritten with the rows."""
    rec = json.loads(json_path.read_text())
    rows = [r if "error" in r else {**row_record(r["row"], read_manifest(out / r["row"]), r["calibration"],
                                                 r["build_s"]), "build_s": r["build_s"]}
            for r in rec["rows"]]
    rec["rows"] = rows
    json_path.write_text(json.dumps(rec, indent=2) + "\n")
    print(table(rec))
    return 1 if any("error" in r for r in rows) else 0


def main(argv=None) -> int:
    a = parse_args(argv)
    from deployzoo.engines.build import build_engine
    from deployzoo.errors import DeployzooError

    out = Path(a.out_dir)
    if a.retable:
        return retable(out, Path(a.json or out / "int8_budget.json"))
    out.mkdir(parents=True, exist_ok=True)
    sets = {"rendered": None, "real": Path(a.real_calib)}
    if any(ROWS[r][0] == "rendered" for r in a.rows):
        sets["rendered"] = rendered_set(out, a.rendered_count)
    names = {"rendered": f"rendered (seed {RENDERED_SEED}, {a.rendered_count})", "real": Path(a.real_calib).name}
    rows = []
    for i, name in enumerate(a.rows, 1):
        calib, backend, options, _, *shape = ROWS[name]
        print(f"[{i}/{len(a.rows)}] building {name} ({backend}, {names[calib]}) ...", file=sys.stderr)
        t = time.perf_counter()
        try:
            path = build_engine("crnn", "qint8_mixed_float16", backend, checkpoint=a.checkpoint,
                                random_weights=a.random_weights, calib_data=sets[calib], calib_count=a.calib_count,
                                probe_count=a.probe_count, max_accuracy_drop=a.max_accuracy_drop / 100,
                                threads=a.threads, out=out / name, progress=False, options=options,
                                shape_mutable=not shape, batch_size=a.batch_size if shape else None)
        except DeployzooError as e:  # one failed build is a row with its reason, not a lost table
            rows.append({"row": name, "calibration": names[calib], "recipe": ROWS[name][3], "error": str(e)})
            continue
        rows.append(row_record(name, read_manifest(path), names[calib], time.perf_counter() - t))
        print(f"      {fmt_effect(rows[-1]['all_int8'])}, verdict {rows[-1]['verdict']}", file=sys.stderr)
    paths = {r["row"]: out / r["row"] for r in rows if "error" not in r}
    for key, backend in (("ort_fp32", "onnxruntime"), ("ov_fp32", "openvino")):
        if key == "ort_fp32" or any(r.get("backend") == backend for r in rows):
            paths[key] = build_engine("crnn", "force_float32", backend, checkpoint=a.checkpoint,
                                      random_weights=a.random_weights, threads=a.threads, out=out / key,
                                      progress=False)
    print(f"throughput: batch {a.batch_size}, {a.threads} threads, {a.rounds} rounds x {a.duration} s ...",
          file=sys.stderr)
    speed = time_engines(paths, a.batch_size, a.threads, a.duration, a.rounds)
    rec = {"command": "python bench/int8_budget.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
           "created": now_iso(), "machine": machine_info(), "libraries": library_versions(),
           "weights": "random weights (smoke run)" if a.random_weights else a.checkpoint,
           "settings": {"budget": a.max_accuracy_drop, "calib_count": a.calib_count, "probe_count": a.probe_count,
                        "threads": a.threads, "rendered_count": a.rendered_count, "rendered_seed": RENDERED_SEED,
                        "batch_size": a.batch_size, "duration_s": a.duration, "rounds": a.rounds},
           "rows": rows, "speed": speed}
    json_path = Path(a.json or out / "int8_budget.json")
    json_path.write_text(json.dumps(rec, indent=2) + "\n")
    print(table(rec))
    print(f"\nwrote {json_path}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
