"""Renderer ablation for the model card: which synthetic-data features move real-photo accuracy, and by how much.

    python bench/renderer_ablation.py --val ../shared/data/real_val/svt_647 ../shared/data/real_val/ic03_860 \\
        --steps 20000 --batch-size 256 --lr 1e-3 --amp bf16 --workers 15 --out runs/ablation      # on a GPU

    python bench/renderer_ablation.py --val SVT IC03 --steps 3 --batch-size 4 --quick                  # smoke

    # the CPU proxy (2 cores): fine-tune the synthetic-only v1 weights with the shipped recipe's real/synthetic mix,
    # one variant per core, two at a time
    git show 6c89926:weights/crnn.pt > v1.pt
    python bench/renderer_ablation.py --init v1.pt --real $R/{ic15,iiit5k,svt,ic03,ic13bd}_train --real-ratio 0.5 \
        --val $V/svt_647 $V/ic03_860 --steps 800 --val-every 400 --batch-size 64 --lr 3e-4 --amp bf16 --threads 1 \
        --workers 1 --parallel 2 --repeats 2 --val-synth 0 --out runs/ablation_ft --variants "full renderer" \
        "- geometry (rotation, perspective, shear, curves, stretch)" \
        "- degradations (blur, noise, low resolution, JPEG)"

    (the trainer also validates on the held-out part of each --real set, pooled as "heldout")

Trains one CRNN per variant with identical settings and seeds (same words, same schedule): the full renderer,
then the renderer with one group of features switched off (``deployzoo train --synth-ablate``). Each run
validates on the real sets (model selection data, never trained on) and on held-out words of the *full*
renderer; the table reports each run's final accuracy and its difference from the full renderer, which is what
the model card's ablation table needs. Variants already finished in ``--out`` are read back, not retrained.

A difference is meaningful only beyond the run-to-run noise: ``--repeats 2`` trains the full renderer twice
with another training seed and reports their gap as the noise floor.

``--init`` / ``--real`` make it a fine-tuning proxy that fits a CPU: every variant starts from the same weights
and mixes the same real words with its synthetic half (``--real-ratio``), so it measures what the renderer
features still add to the shipped recipe over a short schedule, not what they give a model trained from scratch.
``--parallel N`` runs N variants at once (one per core with ``--threads 1``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

#: variant name -> SynthConfig switches turned off
VARIANTS: dict[str, list[str]] = {
    "full renderer": [],
    "- natural-photo backgrounds and blending": ["natural_bg", "natural_blend"],
    "- colour clusters (random grays)": ["color_clusters"],
    "- procedural textures (flat backgrounds)": ["procedural_bg"],
    "- geometry (rotation, perspective, shear, curves, stretch)": ["rotation", "perspective", "shear", "curve",
                                                                   "stretch"],
    "- degradations (blur, noise, low resolution, JPEG)": ["blur", "noise", "lowres", "jpeg"],
    "- neighbouring-text fragments": ["fragments"],
    "- outlines, shadows, lighting": ["outline", "shadow", "lighting"],
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--val", nargs="+", required=True, help="real validation sets (model selection only)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), help="subset of: " + "; ".join(VARIANTS))
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--schedule", default="cosine")
    ap.add_argument("--amp", default="auto")
    ap.add_argument("--workers", type=int, default=-1)
    ap.add_argument("--val-synth", type=int, default=1000)
    ap.add_argument("--init", default=None, help="start every variant from these weights (fine-tuning proxy)")
    ap.add_argument("--real", nargs="+", default=None, help="real word sets mixed into every variant's batches")
    ap.add_argument("--real-ratio", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    ap.add_argument("--parallel", type=int, default=1, help="variants trained at the same time")
    ap.add_argument("--val-every", type=int, default=0, help="validation interval (default: a quarter of --steps)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of the full renderer (seeds 0, 1, ...)")
    ap.add_argument("--launcher", default=f"{shlex.quote(sys.executable)} -m deployzoo.cli",
                    help="how to start training, e.g. 'torchrun --nproc_per_node 8 -m deployzoo.cli'")
    ap.add_argument("--json", default=None, help="default OUT/ablation.json")
    ap.add_argument("--quick", action="store_true", help="smoke settings (tiny runs; numbers meaningless)")
    a = ap.parse_args(argv)
    unknown = [v for v in a.variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    if a.quick:
        a.val_synth = min(a.val_synth, 8)
    return a


def run_dir(out: Path, name: str, seed: int) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_")
    return out / (f"{slug}_seed{seed}" if seed else slug)


def command(a, name: str, seed: int) -> list[str]:
    d = run_dir(Path(a.out), name, seed)
    cmd = [*shlex.split(a.launcher), "train", "crnn", "--out", str(d), "--steps", str(a.steps),
           "--batch-size", str(a.batch_size), "--lr", str(a.lr), "--schedule", a.schedule, "--amp", a.amp,
           "--workers", str(a.workers), "--seed", str(seed), "--val", *a.val, "--val-synth", str(a.val_synth),
           "--val-every", str(a.val_every or max(1, a.steps // 4)), "--ckpt-every", str(max(1, a.steps // 10)),
           "--resume", "--no-progress", "--threads", str(a.threads)]
    if a.init:
        cmd += ["--init", a.init]
    if a.real:
        cmd += ["--real", *a.real, "--real-ratio", str(a.real_ratio)]
    if VARIANTS[name]:
        cmd += ["--synth-ablate", *VARIANTS[name]]
    return cmd


def train_all(a, jobs: list[tuple[str, int]]) -> list[dict]:
    """Train every (variant, seed) not finished yet, ``a.parallel`` at a time, then read each one's last
    validation row."""
    todo = [(n, s) for n, s in jobs if not (run_dir(Path(a.out), n, s) / "DONE").exists()]
    running: list[tuple[str, int, subprocess.Popen, float]] = []
    while todo or running:
        while todo and len(running) < max(1, a.parallel):
            name, seed = todo.pop(0)
            cmd = command(a, name, seed)
            d = run_dir(Path(a.out), name, seed)
            d.mkdir(parents=True, exist_ok=True)
            print(f"[{name}, seed {seed}] {' '.join(shlex.quote(c) for c in cmd)}", file=sys.stderr, flush=True)
            with open(d / "stdout.log", "ab") as log:
                running.append((name, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                                time.perf_counter()))
        time.sleep(2)
        for job in list(running):
            name, seed, proc, t = job
            if proc.poll() is None:
                continue
            running.remove(job)
            d = run_dir(Path(a.out), name, seed)
            if proc.returncode:
                for p in running:
                    p[2].terminate()
                raise SystemExit(f"[{name}, seed {seed}] training failed (exit {proc.returncode}); see {d}/stdout.log")
            (d / "DONE").write_text(f"{time.perf_counter() - t:.1f}\n")
    return [result(a, n, s) for n, s in jobs]


def result(a, name: str, seed: int) -> dict:
    d = run_dir(Path(a.out), name, seed)
    with open(d / "val.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{d}/val.csv has no validation rows")
    last = {k: float(v) for k, v in rows[-1].items()}
    return {"variant": name, "off": VARIANTS[name], "seed": seed, "dir": str(d), "step": int(last.pop("step")),
            "accuracy": last, "seconds": float((d / "DONE").read_text())}


def table(rec: dict) -> str:
    runs = rec["runs"]
    base = [r for r in runs if r["variant"] == "full renderer"]
    sets = list(runs[0]["accuracy"])
    ref = {s: sum(r["accuracy"][s] for r in base) / len(base) for s in sets} if base else None
    lines = [f"`{rec['command']}`", "", "| variant | features off | " + " | ".join(sets) + " | "
             + " | ".join(f"delta {s}" for s in sets) + " |", "|---|---|" + "---:|" * (2 * len(sets))]
    for r in runs:
        acc = " | ".join(f"{100 * r['accuracy'][s]:.2f}" for s in sets)
        dl = " | ".join(f"{100 * (r['accuracy'][s] - ref[s]):+.2f}" if ref else "-" for s in sets)
        lines.append(f"| {r['variant']} (seed {r['seed']}) | {', '.join(r['off']) or '-'} | {acc} | {dl} |")
    if len(base) > 1:
        gap = {s: 100 * (max(r["accuracy"][s] for r in base) - min(r["accuracy"][s] for r in base)) for s in sets}
        lines.append("")
        lines.append("Noise floor (full renderer, different training seeds): "
                     + ", ".join(f"{s} {g:.2f} points" for s, g in gap.items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = [("full renderer", s) for s in range(a.repeats)] if "full renderer" in a.variants else []
    jobs += [(v, 0) for v in a.variants if v != "full renderer"]
    runs = train_all(a, jobs)
    rec = {"command": "python bench/renderer_ablation.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:])),
           "settings": {k: v for k, v in vars(a).items() if k != "json"}, "runs": runs}
    js = Path(a.json or out / "ablation.json")
    tmp = js.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=1))
    tmp.replace(js)
    print(table(rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
