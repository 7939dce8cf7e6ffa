"""Synthetic renderer speed: images/s per CPU core, and what each feature group costs.

    python bench/renderer_speed.py [--images 1000] [--rounds 3] [--workers N] [--json runs/renderer_speed.json]

1. One process (one core): render + JPEG-encode ``--images`` words with the full renderer and with each feature
   group of ``bench/renderer_ablation.py`` switched off, after one untimed warm-up pass of as many words (font
   cache), interleaved over ``--rounds`` rounds (each variant timed in turn, so shared load hits all alike);
   median images/s, and the share of the full renderer's time each group takes.
2. All cores: ``deployzoo.data.synth.synth_to_lmdb`` with ``--workers`` processes (default: every usable core)
   writing a real LMDB, as ``deployzoo synth`` does: aggregate and per-core images/s.

The per-core rate says how many CPU cores keep a GPU fed: seed 002 trained at 11,733 images/s on one card.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
from renderer_ablation import VARIANTS

from deployzoo.bench import machine_info, machine_line
from deployzoo.data.synth import SynthConfig, WordRenderer, encode_image, font_index, synth_to_lmdb
from deployzoo.evaluation.report import markdown_table, write_json

SEED = 7  # any seed: the speed does not depend on it beyond noise; fixed so runs compare


def time_variant(r: WordRenderer, start: int, n: int) -> float:
    """Seconds to render and JPEG-encode samples ``start .. start+n-1`` in this process."""
    t = time.perf_counter()
    for i in range(start, start + n):
        img, _ = r.render(i)
        encode_image(img, "jpeg")
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=1000, help="images per variant and round (one process)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=None, help="processes for the all-cores run (default: all)")
    ap.add_argument("--lmdb-images", type=int, default=4000, help="images in the all-cores run")
    ap.add_argument("--json", default="runs/renderer_speed.json")
    a = ap.parse_args(argv)
    if a.images < 1 or a.rounds < 1:
        ap.error("--images and --rounds must be >= 1")
    cv2.setNumThreads(1)  # one process = one core, as in the synth workers
    faces = font_index()
    renderers = {name: WordRenderer(SynthConfig().ablate(*off), SEED, faces) for name, off in VARIANTS.items()}
    for r in renderers.values():  # warm-up, untimed: natural-photo clusters, the font LRU filling up
        time_variant(r, 10 ** 6, a.images)
    secs: dict[str, list[float]] = {name: [] for name in renderers}
    for k in range(a.rounds):
        for name, r in renderers.items():
            # the same sample indices for every variant within a round; new ones each round
            secs[name].append(time_variant(r, k * a.images, a.images))
            print(f"round {k + 1}/{a.rounds}  {name:<60s} {a.images / secs[name][-1]:7.1f} img/s", file=sys.stderr)
    full = statistics.median(secs["full renderer"])
    one_core = {name: {"images_per_s": a.images / statistics.median(s),
                       "share_of_full_time": 1.0 - statistics.median(s) / full} for name, s in secs.items()}

    with tempfile.TemporaryDirectory() as td:
        st = synth_to_lmdb(Path(td) / "speed", a.lmdb_images, seed=SEED, workers=a.workers, progress=False)
    rec = {"command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
           "machine": machine_info(), "font_faces": len(faces), "images_per_variant": a.images, "rounds": a.rounds,
           "one_process": one_core,
           "all_cores": {k: st[k] for k in ("count", "workers", "seconds", "images_per_s", "images_per_s_per_core")}}
    write_json(rec, a.json)
    print(table(rec))
    return 0


def table(rec: dict) -> str:
    m, ac = rec["machine"], rec["all_cores"]
    rows = [[name, f"{v['images_per_s']:.0f}", "-" if name == "full renderer" else f"{v['share_of_full_time'] * 100:+.0f} %"]
            for name, v in rec["one_process"].items()]
    head = (f"`{rec['command']}`\n\n{machine_line(m)}; {rec['font_faces']} font faces; render + JPEG encode, median of "
            f"{rec['rounds']} interleaved rounds of {rec['images_per_variant']} images.\n")
    body = markdown_table(["renderer (one process = one core)", "images/s", "time saved without it"], rows,
                          align="<>>")
    tail = (f"\nAll cores (`synth_to_lmdb`, {ac['workers']} processes, {ac['count']} images into an LMDB): "
            f"{ac['images_per_s']:.0f} images/s, **{ac['images_per_s_per_core']:.0f} images/s per core**. "
            f"Feeding seed 002's 11,733 images/s would take about "
            f"{11733 / max(ac['images_per_s_per_core'], 1e-9):.0f} such cores.")
    return "\n".join([head, body, tail])


if __name__ == "__main__":
    raise SystemExit(main())
