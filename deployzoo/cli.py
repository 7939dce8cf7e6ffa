"""``deployzoo`` command line: argparse -> deployzoo.api, nothing else."""

from __future__ import annotations

import argparse
import sys

from deployzoo import __version__
from deployzoo.process.ctc import DECODERS


def _word_reading_flags(p: argparse.ArgumentParser) -> None:
    """How CRNN output is read, the same for recognize, eval and serve."""
    p.add_argument("--decode", choices=DECODERS, default="words",
                   help="crnn: words = English word prior (default), greedy = best path")
    p.add_argument("--upright", action="store_true",
                   help="crnn: read every crop upright only (default: a crop more than 1.5x taller than wide is also "
                        "read turned a quarter both ways, the most confident reading wins)")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deployzoo", description="Trained vision models to fast, verified inference.")
    p.add_argument("--version", action="version", version=f"deployzoo {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    sub.add_parser("models", help="list the models in the zoo")

    r = sub.add_parser("recognize", help="read the words in images (CRNN)")
    r.add_argument("images", nargs="+", metavar="IMG", help="image files")
    _weights_args(r)
    r.add_argument("--model", default="crnn", help="model name (default crnn)")
    r.add_argument("--lexicon", help="word list: pick the word with the highest CTC probability")
    _word_reading_flags(r)
    r.add_argument("--batch-size", type=_pos_int, default=32)
    r.add_argument("--threads", type=_pos_int, help="intra-op threads (default: the library's)")
    r.add_argument("--json", dest="json_out", action="store_true", help="print JSON instead of lines")

    e = sub.add_parser("eval", help="accuracy on one or more data sets")
    e.add_argument("model", help="model name, e.g. crnn")
    e.add_argument("--data", nargs="+", required=True, action="extend", metavar="PATH",
                   help="LMDB or gt.txt folder; several give one table with a count-weighted total")
    _weights_args(e, multi=True)
    e.add_argument("--batch-size", type=_pos_int, help="default: 64 words, 32 ImageNet images, 1 Cityscapes frame")
    e.add_argument("--lexicon", help="word list for lexicon-constrained decoding (crnn)")
    _word_reading_flags(e)
    e.add_argument("--limit", type=_pos_int, help="evaluate N images spread evenly over the set")
    e.add_argument("--label-file", help="ImageNet: lines 'FILE LABEL' instead of class folders")
    e.add_argument("--flip", action="store_true", help="Cityscapes: add horizontally flipped inference")
    e.add_argument("--scales", type=float, nargs="+", help="Cityscapes: multi-scale ratios, e.g. 0.5 1.0 1.5")
    e.add_argument("--out-dir", help="Cityscapes: save predicted train-id maps here")
    e.add_argument("--workers", type=_nonneg_int, help="image-decoding worker processes (default: up to 4)")
    e.add_argument("--threads", type=_pos_int, help="intra-op threads for inference")
    e.add_argument("--json", dest="json_path", metavar="OUT", help="write metrics and per-sample predictions")
    e.add_argument("--no-progress", dest="progress", action="store_false")

    c = sub.add_parser("convert", help="convert a word data set: gt.txt folder <-> LMDB")
    c.add_argument("src", help="gt.txt folder or LMDB")
    c.add_argument("--out", required=True, help="new LMDB folder (or word folder)")
    c.add_argument("--to", choices=["lmdb", "folder"], help="target layout (default: the other one)")
    c.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="copy image bytes without decoding them")
    x = sub.add_parser("export", help="PyTorch -> ONNX (opset 17, dynamic batch/width), checked against PyTorch")
    x.add_argument("model")
    _weights_args(x, engine=False)
    x.add_argument("--out", required=True, help="output .onnx file or directory")
    x.add_argument("--opset", type=int, default=17)
    x.add_argument("--data", help="real images for the parity check (a word set for crnn)")
    x.add_argument("--shape-mutable", type=_bool, default=True, help="dynamic batch (and width for crnn)")
    x.add_argument("--batch-size", type=_pos_int, help="fixed batch when --shape-mutable false")
    x.add_argument("--input-size", type=_hw, metavar="HxW", help="segmentation: export size (default 1024x2048)")

    b = sub.add_parser("build", help="build an engine at a precision (as gen_model)")
    b.add_argument("model")
    b.add_argument("--precision", required=True,
                   help="force_float32 | force_float16 | qint8_mixed_float16 (aliases fp32, fp16, int8; bf16)")
    b.add_argument("--backend", default="onnxruntime", help="onnxruntime | openvino | aoti (NVIDIA GPU)")
    _weights_args(b, engine=False)
    b.add_argument("--calib-data", help="real images for int8 calibration (never the test split)")
    b.add_argument("--calib-count", type=_pos_int, default=256)
    b.add_argument("--probe-count", type=_pos_int,
                   help="held-out images of --calib-data that measure the int8 error (default 512 crnn, 128 others)")
    b.add_argument("--max-accuracy-drop", type=float, default=0.5, metavar="POINTS",
                   help="int8 budget on labelled data (crnn word sets): word-accuracy points the int8 engine may "
                        "lose against float on the probe images (default 0.5)")
    b.add_argument("--max-disagreement", type=float, default=1.0, metavar="PERCENT",
                   help="int8 budget on unlabelled images: %% of probe images whose top-1 class / pixel class may "
                        "differ from float (default 1)")
    b.add_argument("--int8-lstm", action="store_true",
                   help="onnxruntime int8: also quantise the LSTMs (dynamic int8, kept only within the budget)")
    b.add_argument("--compact-lstm", action="store_true",
                   help="onnxruntime int8: store the float LSTM weights as fp16 (cast to fp32 at load): about half "
                        "the file, same compute, batch-invariant (kept only within the budget)")
    b.add_argument("--portable", action="store_true",
                   help="onnxruntime int8: 7-bit weights, exact on CPUs without VNNI too (for engines you ship)")
    b.add_argument("--float-precision", default="auto", choices=["auto", "f32", "bf16", "f16"],
                   help="openvino int8: what the layers left in float (the LSTMs) run in; auto: bf16 where the CPU "
                        "computes bf16 natively (avx512_bf16 / AMX), else f32")
    b.add_argument("--shape-mutable", type=_bool, default=True)
    b.add_argument("--batch-size", type=_pos_int, help="fixed batch when --shape-mutable false")
    b.add_argument("--threads", type=_pos_int)
    b.add_argument("--input-size", type=_hw, metavar="HxW",
                   help="segmentation: the engine's fixed input size (default 1024x2048, Cityscapes frames)")
    b.add_argument("--out", required=True, help="engine directory to create")

    n = sub.add_parser("bench", help="latency/throughput of an engine dir or a PyTorch model (as mm_run/ais_bench)")
    n.add_argument("target", help="engine directory or model name")
    n.add_argument("--batch-size", type=_pos_int, nargs="+", default=[1], help="one or more (sweep)")
    n.add_argument("--threads", type=_pos_int, nargs="+", help="one or more (sweep)")
    g = n.add_mutually_exclusive_group()
    g.add_argument("--iterations", type=_pos_int)
    g.add_argument("--duration", type=float, help="seconds per configuration")
    n.add_argument("--warmup", type=_nonneg_int, default=5)
    n.add_argument("--e2e-data", help="also time decode + pre-process + infer + post-process on these images")
    n.add_argument("--checkpoint", help="weights when TARGET is a model name")
    n.add_argument("--random-weights", action="store_true")
    n.add_argument("--json", dest="json_path", metavar="OUT")

    u = sub.add_parser("run", help="one-click flow: export, build all precisions, accuracy and speed table")
    u.add_argument("model")
    _weights_args(u, engine=False)
    u.add_argument("--out", default="runs/flow")
    u.add_argument("--data", help="evaluation set (crnn: default renders held-out synthetic words)")
    u.add_argument("--calib-data", help="int8 calibration images (crnn: default renders its own)")
    u.add_argument("--precisions", nargs="+")
    u.add_argument("--backends", nargs="+")
    u.add_argument("--batch-size", type=_pos_int, default=64)
    u.add_argument("--threads", type=_pos_int, default=2)
    u.add_argument("--count", type=_pos_int, default=500, help="synthetic test words to render (crnn)")
    u.add_argument("--limit", type=_pos_int, help="evaluate N images spread evenly over the set")

    t = sub.add_parser("train", help="train CRNN (defaults from seed 003: Adam 1e-4, batch 32)")
    t.add_argument("model", choices=["crnn"])
    _dataclass_args(t, "deployzoo.train_config", "TrainConfig")

    y = sub.add_parser("synth", help="render synthetic word images into LMDB shards")
    y.add_argument("--out", required=True, help="new LMDB folder (or a folder of shards with --shard-size)")
    y.add_argument("--count", type=_pos_int, required=True)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--workers", type=_nonneg_int, help="render processes (default: all cores)")
    y.add_argument("--shard-size", type=_pos_int, help="samples per LMDB shard")

    v = sub.add_parser("serve", help="serve an engine or checkpoint over HTTP with dynamic batching (extra: serve)")
    v.add_argument("target", nargs="?", metavar="TARGET",
                   help="engine directory, or model name (with --checkpoint); default: the shipped CRNN")
    v.add_argument("--checkpoint", metavar="FILE", help="PyTorch checkpoint for a model-name TARGET")
    v.add_argument("--random-weights", action="store_true", help="seeded random weights (smoke tests only)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=_nonneg_int, default=8000)
    v.add_argument("--max-batch-size", type=_pos_int, default=64, help="images per engine call (default 64)")
    v.add_argument("--max-queue-delay-ms", type=float, default=4.0,
                   help="longest wait for a batch to fill (default 4 ms)")
    v.add_argument("--max-queue-size", type=_pos_int, default=1024,
                   help="images waiting; beyond it 503 + Retry-After (default 1024)")
    v.add_argument("--max-request-images", type=_pos_int, default=256)
    v.add_argument("--max-request-bytes", type=_pos_int, default=16 << 20, help="default 16 MiB; beyond it 413")
    v.add_argument("--max-image-pixels", type=_pos_int, default=40_000_000)
    v.add_argument("--threads", type=_pos_int,
                   help="intra-op threads per engine instance (default: the CPU cores divided among the instances)")
    v.add_argument("--instances", type=_pos_int, default=2,
                   help="engine instances sharing the queue (default 2: one runs while the other pre- and "
                        "post-processes)")
    _word_reading_flags(v)

    x = sub.add_parser("export-triton", help="write an NVIDIA Triton model repository from an ONNX Runtime engine")
    x.add_argument("engine", metavar="ENGINE_DIR")
    x.add_argument("--out", required=True, metavar="REPO")
    x.add_argument("--max-batch-size", type=_pos_int, default=64)
    x.add_argument("--max-queue-delay-ms", type=float, default=4.0)
    x.add_argument("--instances", type=_pos_int, default=1, help="instance_group count (KIND_CPU)")
    x.add_argument("--threads", type=_pos_int, default=2, help="ONNX Runtime intra-op threads per instance")
    x.add_argument("--decode", choices=DECODERS, default="words", help="crnn decode step: words (default) or greedy")

    w = sub.add_parser("slim", help="training checkpoint -> shippable fp16 weights with their metadata")
    w.add_argument("src")
    w.add_argument("--out", required=True)
    w.add_argument("--fp32", dest="half", action="store_false", help="keep float32")
    return p


def _dataclass_args(p: argparse.ArgumentParser, module: str, name: str) -> None:
    """One flag per dataclass field (--field-name), typed from its default; bools get --x/--no-x."""
    import dataclasses
    import importlib

    cls = getattr(importlib.import_module(module), name)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, list):
            p.add_argument(flag, nargs="+", default=default, metavar="FEATURE" if "ablate" in f.name else "PATH")
        else:
            typ = type(default) if default is not None else str
            p.add_argument(flag, type=typ, default=default, help=f"default: {default}")


def _pos_int(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _nonneg_int(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {v}")
    return v


def _hw(s: str) -> tuple[int, int]:
    parts = s.lower().replace(",", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 512x1024, got {s!r}") from None
    return h, w


def _bool(s: str) -> bool:
    if s.lower() in ("true", "1", "yes"):
        return True
    if s.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _weights_args(p: argparse.ArgumentParser, engine: bool = True, multi: bool = False) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", metavar="FILE", help="PyTorch checkpoint (crnn default: the shipped weights)")
    if engine:
        g.add_argument("--engine", metavar="DIR", nargs="+" if multi else None,
                       help="engine directory made by `deployzoo build`"
                       + ("; several print the seeds' table (Model | Precision | Backend | Batch | accuracy)" if multi
                          else ""))
    g.add_argument("--random-weights", action="store_true",
                   help="seeded random weights, for smoke tests only: every output says so")


#: optional packages -> the extra that installs them (the base install is the torch-free runtime)
EXTRAS = {"torch": "torch", "onnx": "torch", "fontTools": "torch", "wordfreq": "torch", "tensorboard": "torch",
          "openvino": "openvino", "nncf": "openvino", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve",
          "prometheus_client": "serve"}


def main(argv: list[str] | None = None) -> int:
    from deployzoo import api
    from deployzoo.errors import DeployzooError

    commands = {"models": api.models, "recognize": api.recognize, "eval": api.evaluate, "convert": api.convert,
                "train": api.train, "synth": api.synth, "slim": api.slim, "export": api.export,
                "build": api.build, "bench": api.bench, "run": api.run, "serve": api.serve,
                "export-triton": api.export_triton}
    args = vars(make_parser().parse_args(argv))
    cmd = args.pop("cmd")
    try:
        return commands[cmd](**args) or 0
    except DeployzooError as e:
        print(f"deployzoo {cmd}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = EXTRAS.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"deployzoo {cmd}: error: this needs {e.name}, which is not installed: pip install 'deployzoo[{extra}]'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deployzoo {cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
