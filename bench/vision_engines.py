"""VOLO-D2 and OCRNet-HRNetW18 engines: precision agreement with fp32 and a CPU speed table, for the README.

    python bench/vision_engines.py                                   # seeded fixture weights (no download)
    python bench/vision_engines.py --volo-checkpoint d2_224_85.2.pth.tar \\
        --ocrnet-checkpoint ocrnet_hr18_512x1024_160k_cityscapes_20200602_191001-b9172d0c.pth
    python bench/vision_engines.py --quick --models volo_d2          # smoke run

Agreement (issue 6, item 4). For each model, every engine (onnxruntime fp32 / int8 / fp16, openvino f32 / f16 /
bf16 / int8) is built from the same weights and run on

- the fixture input of ``tests/fixtures/<model>`` (``torch.randn`` with seed 7: VOLO 2x3x224x224, OCRNet
  1x3x256x512, the engine built at that size), and
- the natural photographs shipped in ``deployzoo/data/natural`` through the model's own pre-processing,

and compared with PyTorch fp32 on the same inputs: max |logit difference|, relative L2 error, and top-1 agreement
(VOLO, per image) or pixel agreement (OCRNet, argmax of the 1/4-resolution logits). Without checkpoints the
weights are the fixtures' seeded weights (``tests/fixtures/seeded_weights.py``), checked first against the
reference logits; with the published checkpoints the same table shows what the engines do to the real models.

int8 engines calibrate on crops of the natural photographs (never the evaluation inputs). Their budget: with
seeded weights the top-1 margins are tiny (VOLO's fixture: 0.09) and top-1 disagreement measures noise, so the
bench bounds the relative L2 error of the logits instead (``--int8-rel-l2``, default 0.10) unless
``--int8-disagreement`` is given.

Speed: the engines above, images/s at ``--batch-size`` and ``--threads`` (median of ``--rounds`` interleaved
rounds, all engines side by side in one run) beside PyTorch eager. OCRNet is also timed at the Cityscapes
frame size 1024x2048 (``--ocrnet-speed-size``), where a user pays seconds per image on a laptop-class CPU.

Prints markdown tables naming the command and the machine, and writes a JSON record.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from deployzoo.bench import interleaved_rounds, machine_info, machine_line
from deployzoo.engines import SHORT
from deployzoo.engines.manifest import library_versions, now_iso

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DEFAULT_ENGINES = ["onnxruntime:fp32", "onnxruntime:int8", "onnxruntime:fp16",
                   "openvino:fp32", "openvino:fp16", "openvino:bf16", "openvino:int8"]
SPEED_ENGINES = ["onnxruntime:fp32", "onnxruntime:int8", "openvino:fp32", "openvino:fp16", "openvino:bf16",
                 "openvino:int8"]
FIXTURE = {"volo_d2": {"shape": (2, 3, 224, 224), "reference": "logits.npy", "tol": 1e-4},
           "ocrnet_hr18": {"shape": (1, 3, 256, 512), "reference": "ocr_logits_64x128.npy", "tol": 1e-4}}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["volo_d2", "ocrnet_hr18"])
    ap.add_argument("--volo-checkpoint", help="published VOLO-D2 weights (default: seeded fixture weights)")
    ap.add_argument("--ocrnet-checkpoint", help="published OCRNet-HRNetW18 weights (default: seeded fixture weights)")
    ap.add_argument("--engines", default=",".join(DEFAULT_ENGINES), help="backend:precision list")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="speed batch (default VOLO 8, OCRNet 1)")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per engine per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calib-count", type=int, default=32, help="int8 calibration images (crops of the photos)")
    ap.add_argument("--probe-count", type=int, default=16, help="held-out crops that measure the int8 error")
    ap.add_argument("--calib-method", default="minmax",
                    help="int8 calibration: minmax (NNCF preset performance), entropy, percentile, or auto (try each)")
    ap.add_argument("--int8-rel-l2", type=float, default=0.10, help="int8 budget: relative L2 error of the logits")
    ap.add_argument("--int8-disagreement", type=float, default=None,
                    help="int8 budget: fraction of probe images (pixels) decoded differently (instead of rel L2)")
    ap.add_argument("--ocrnet-speed-size", default="1024x2048", help="HxW of the OCRNet speed engines ('' skips)")
    ap.add_argument("--speed-engines", default=",".join(SPEED_ENGINES), help="engines timed at the speed size")
    ap.add_argument("--speed-calib-count", type=int, default=8, help="int8 calibration images at the speed size")
    ap.add_argument("--speed-rounds", type=int, default=2, help="interleaved rounds at the speed size")
    ap.add_argument("--reuse", action="store_true", help="open engines already built in OUT_DIR instead of building")
    ap.add_argument("--out-dir", default="runs/vision_engines")
    ap.add_argument("--json", default=None, help="JSON output (default OUT_DIR/vision_engines.json)")
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.calib_count, a.probe_count, a.duration, a.rounds, a.speed_rounds = 8, 4, 0.5, 1, 1
    return a


# ---------------------------------------------------------------------------------------------- weights

def _seeded_weights_module():
    spec = importlib.util.spec_from_file_location("_bench_seeded_weights", FIXTURES / "seeded_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def weights(model: str, checkpoint: str | None, out_dir: Path) -> tuple[str, str]:
    """(checkpoint path, description): the given file, or the fixture's seeded weights written once."""
    if checkpoint:
        return checkpoint, f"checkpoint {checkpoint}"
    import torch

    sw = _seeded_weights_module()
    path = out_dir / f"seeded_{model}.pt"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save(sw.seeded_state_dict(sw.load_keys_tsv(FIXTURES / model / "keys.tsv")), tmp)
        tmp.replace(path)
    return str(path), "seeded fixture weights (tests/fixtures/seeded_weights.py)"


def fixture_input(model: str) -> np.ndarray:
    return _seeded_weights_module().seeded_input(FIXTURE[model]["shape"]).numpy()


# ------------------------------------------------------------------------------------------ calibration

def calibration_folder(out_dir: Path, count: int) -> Path:
    """``count`` crops (random box, 40-100 % of each side, optional flip) of the bundled natural photos."""
    from PIL import Image

    from deployzoo.export import natural_images

    d = out_dir / f"calib_natural_{count}"
    if d.exists():
        return d
    tmp = d.with_name(d.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    photos = natural_images()
    for i in range(count):
        im = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.4, 1.0)), int(h * rng.uniform(0.4, 1.0))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        crop = im.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        crop.save(tmp / f"{i:04d}.jpg", quality=92)
    tmp.replace(d)
    return d


# -------------------------------------------------------------------------------------------- compare

def photo_inputs(model: str, hw: tuple[int, int]) -> np.ndarray:
    """The bundled natural photos through the model's pre-processing (OCRNet: resized to the engine's H x W),
    the same inputs the engine builder's parity check uses."""
    from deployzoo.export import _real_vision_batch, natural_images

    return _real_vision_batch(model, len(natural_images()), hw).astype(np.float32)


def agreement(out: np.ndarray, ref: np.ndarray) -> dict:
    """max |diff|, relative L2 and top-1 (VOLO: per image; OCRNet: per pixel of the 1/4-res logits) agreement."""
    d = np.abs(out.astype(np.float64) - ref)
    return {"max_abs_diff": float(d.max()), "rel_l2": float(np.linalg.norm(out - ref) / np.linalg.norm(ref)),
            "ref_abs_max": float(np.abs(ref).max()),
            "top1_agreement": float((out.argmax(1) == ref.argmax(1)).mean()), "count": int(ref.argmax(1).size)}


def run_batched(run, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch]) for i in range(0, len(x), batch)])


# ---------------------------------------------------------------------------------------------- engines

def parse_engines(spec: str) -> list[tuple[str, str]]:
    out = []
    for item in spec.split(","):
        backend, _, precision = item.strip().partition(":")
        out.append((backend, precision))
    return out


def build_all(model: str, ckpt: str, engines: list[tuple[str, str]], out_dir: Path, a, calib: Path,
              input_size: tuple[int, int] | None, tag: str, calib_count: int | None = None) -> dict:
    """{"backend/precision": engine, or {"not_built": reason}} through ``deployzoo.run.build_matrix`` (the engine
    matrix of ``deployzoo run``), with this bench's int8 budget, calibration method and input size."""
    from deployzoo.run import build_matrix

    budget = ({"max_disagreement": a.int8_disagreement, "max_rel_l2": None} if a.int8_disagreement is not None
              else {"max_disagreement": None, "max_rel_l2": a.int8_rel_l2})
    n = calib_count or a.calib_count
    built = build_matrix(model, engines, out_dir / "engines" / f"{model}_{tag}", checkpoint=ckpt, calib_data=calib,
                         threads=a.threads, reuse=a.reuse, log=lambda m: print(f"[{model} {tag}] {m.strip()}",
                                                                              file=sys.stderr, flush=True),
                         calib_count=n, probe_count=max(2, min(a.probe_count, n // 2)), input_size=input_size,
                         calib_method=a.calib_method, **budget)
    return {f"{backend}/{SHORT.get(prec, prec)}":
            ({"not_built": eng.removeprefix("not built: ")} if isinstance(eng, str) else eng)
            for (backend, prec), eng in built.items()}


def describe(eng) -> dict:
    m = eng.manifest
    q = m.get("quantization") or {}
    size = sum(info.get("bytes", 0) for info in m.get("files", {}).values())
    row = {"engine": str(eng.path), "build_seconds": m.get("build_seconds"), "size_mb": round(size / 2**20, 1),
           "computes": m.get("computes") or m.get("inference_precision") or SHORT.get(m["precision"])}
    if q:
        row["int8_layers"] = f"{len(q.get('quantized_nodes', []))}/{len(q.get('candidates', []))}"
        row["int8_budget"] = q.get("budget")
        row["int8_budget_met"] = q.get("budget_met")
    return row


def speed_rounds(runners: dict, x: np.ndarray, duration: float, rounds: int) -> dict:
    return interleaved_rounds({k: (lambda run=run: run(x)) for k, run in runners.items()}, len(x), duration, rounds,
                              warmup=1, log=lambda m: print(m, file=sys.stderr, flush=True))


# ------------------------------------------------------------------------------------------------- main

def bench_model(model: str, a, out_dir: Path, save=lambda rec: None) -> dict:
    import torch

    from deployzoo.engines import EagerRunner
    from deployzoo.export import load_model, run_torch, torch_threads

    torch.set_num_threads(a.threads)
    ck = a.volo_checkpoint if model == "volo_d2" else a.ocrnet_checkpoint
    ckpt, weights_desc = weights(model, ck, out_dir)
    module, meta = load_model(model, ckpt)
    calib = calibration_folder(out_dir, a.calib_count + a.probe_count)
    fx = fixture_input(model)
    hw = tuple(fx.shape[2:])
    photos = photo_inputs(model, hw)
    batch = a.batch_size or (8 if model == "volo_d2" else 1)
    with torch_threads(a.threads):
        ref_fx = run_torch(module, fx)
        ref_ph = run_batched(lambda x: run_torch(module, x), photos, batch)
    rec: dict = {"model": model, "weights": weights_desc, "fixture_shape": list(fx.shape),
                 "photos": int(len(photos)), "rows": {}}
    if ck is None:  # the seeded weights reproduce the reference logits (the parity the tests check)
        ref = np.load(FIXTURES / model / FIXTURE[model]["reference"])
        got = ref_fx if model == "volo_d2" else _ocr_logits(module, fx)
        rec["pytorch_vs_reference_max_abs_diff"] = float(np.abs(got - ref).max())
    engines = build_all(model, ckpt, parse_engines(a.engines), out_dir, a, calib,
                        hw if model == "ocrnet_hr18" else None, f"{hw[0]}x{hw[1]}")
    runners = {"pytorch/fp32": EagerRunner(module, threads=a.threads)}
    for name, eng in engines.items():
        if isinstance(eng, dict):
            rec["rows"][name] = eng
            continue
        runners[name] = eng
        rec["rows"][name] = {**describe(eng), "fixture": agreement(eng(fx), ref_fx),
                             "photos": agreement(run_batched(eng, photos, batch), ref_ph)}
    x = np.ascontiguousarray(np.resize(photos, (batch, *photos.shape[1:])))
    print(f"[{model}] speed at {hw[0]}x{hw[1]}, batch {batch}, {a.threads} threads", file=sys.stderr)
    rec["speed"] = {"size": list(hw), "batch": batch, "results": speed_rounds(runners, x, a.duration, a.rounds)}
    if model == "ocrnet_hr18" and a.ocrnet_speed_size:
        save(rec)  # the heavy full-size part comes last: keep what is measured so far
        rec["speed_full"] = ocrnet_full_speed(module, ckpt, a, out_dir, calib)
    return rec


def _ocr_logits(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        ocr, _ = module.forward_both(torch.from_numpy(x))
    return ocr.numpy()


def ocrnet_full_speed(module, ckpt: str, a, out_dir: Path, calib: Path) -> dict:
    """OCRNet engines at the Cityscapes frame size, timed on one natural photo (batch 1)."""
    from deployzoo.engines import EagerRunner

    h, w = (int(v) for v in a.ocrnet_speed_size.lower().split("x"))
    engines = build_all("ocrnet_hr18", ckpt, parse_engines(a.speed_engines), out_dir, a, calib, (h, w),
                        f"{h}x{w}", calib_count=a.speed_calib_count)
    runners = {"pytorch/fp32": EagerRunner(module, threads=a.threads)}
    notes = {}
    for name, eng in engines.items():
        if isinstance(eng, dict):
            notes[name] = eng
        else:
            runners[name] = eng
            notes[name] = describe(eng)
    x = photo_inputs("ocrnet_hr18", (h, w))[:1]
    print(f"[ocrnet_hr18] speed at {h}x{w}, batch 1, {a.threads} threads", file=sys.stderr)
    return {"size": [h, w], "batch": 1, "engines": notes,
            "results": speed_rounds(runners, x, max(a.duration, 1.0), a.speed_rounds)}


def table(rec: dict) -> str:
    m = rec["machine"]
    lines = [f"`{rec['command']}`", "",
             f"{machine_line(m, rec['libraries'])}; {rec['threads']} "
             "threads, median of interleaved rounds.", ""]
    for r in rec["models"]:
        sp = r["speed"]
        agree = "top-1 agreement" if r["model"] == "volo_d2" else "pixel agreement (1/4-res argmax)"
        lines += [f"**{r['model']}** ({r['weights']}; PyTorch vs reference logits: "
                  f"{r.get('pytorch_vs_reference_max_abs_diff', float('nan')):.2g}). Fixture input "
                  f"{'x'.join(map(str, r['fixture_shape']))}, {r['photos']} natural photos; speed at "
                  f"{'x'.join(map(str, sp['size']))}, batch {sp['batch']}.", "",
                  f"| engine | fixture: max abs diff | fixture: {agree} | photos: max abs diff | photos: rel L2 | "
                  f"photos: {agree} | int8 layers | img/s | vs PyTorch | vs same-backend fp32 |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        res = sp["results"]
        base = res["pytorch/fp32"]["images_per_s"]
        lines.append(f"| pytorch/fp32 (reference) | 0 | 100 % | 0 | 0 | 100 % | - | {res['pytorch/fp32']['images_per_s']:.2f} "
                     "| 1.00x | - |")
        for name, row in r["rows"].items():
            if "not_built" in row:
                lines.append(f"| {name} | not built: {row['not_built'][:150]} |" + " - |" * 8)
                continue
            f, p = row["fixture"], row["photos"]
            fp32 = res.get(f"{name.split('/')[0]}/fp32", {}).get("images_per_s")
            ips = res[name]["images_per_s"]
            lines.append(f"| {name} | {f['max_abs_diff']:.2g} | {f['top1_agreement']:.2%} | {p['max_abs_diff']:.2g} | "
                         f"{p['rel_l2']:.2g} | {p['top1_agreement']:.2%} | {row.get('int8_layers', '-')} | "
                         f"{ips:.2f} | {ips / base:.2f}x | {f'{ips / fp32:.2f}x' if fp32 else '-'} |")
        lines.append("")
        if "speed_full" in r:
            sf = r["speed_full"]
            lines += [f"OCRNet at {sf['size'][0]}x{sf['size'][1]} (a Cityscapes frame), batch 1, one natural photo:", "",
                      "| engine | s / image | img/s | vs PyTorch | int8 layers |", "|---|---:|---:|---:|---:|"]
            base = sf["results"]["pytorch/fp32"]["images_per_s"]
            for name, res_ in sf["results"].items():
                note = sf["engines"].get(name, {})
                lines.append(f"| {name} | {1 / res_['images_per_s']:.2f} | {res_['images_per_s']:.3f} | "
                             f"{res_['images_per_s'] / base:.2f}x | {note.get('int8_layers', '-')} |")
            for name, note in sf["engines"].items():
                if "not_built" in note:
                    lines.append(f"| {name} | not built: {note['not_built'][:150]} |" + " - |" * 3)
            lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rec = {"command": "python bench/vision_engines.py " + " ".join(shlex.quote(s) for s in (argv or sys.argv[1:])),
           "created": now_iso(), "machine": machine_info(), "libraries": library_versions(), "threads": a.threads,
           "settings": {k: v for k, v in vars(a).items() if k not in ("json",)}, "models": []}
    js = Path(a.json or out_dir / "vision_engines.json")

    def save(partial: dict | None = None) -> None:
        out = {**rec, "models": rec["models"] + ([partial] if partial else []),
               "seconds": round(time.perf_counter() - t0, 1), "complete": partial is None}
        tmp = js.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=1, default=str))
        tmp.replace(js)

    for model in a.models:
        rec["models"].append(bench_model(model, a, out_dir, save))
        save()
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    print(table(rec))
    print(f"\nwrote {js} ({rec['seconds']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
