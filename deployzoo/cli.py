"""``deployzoo`` command line: argparse -> deployzoo.api, nothing else."""

from __future__ import annotations

import argparse
import sys

from deployzoo import __version__


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
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--threads", type=int, help="intra-op threads (default: the library's)")
    r.add_argument("--json", dest="json_out", action="store_true", help="print JSON instead of lines")

    e = sub.add_parser("eval", help="accuracy on one or more data sets")
    e.add_argument("model", help="model name, e.g. crnn")
    e.add_argument("--data", nargs="+", required=True, action="extend", metavar="PATH",
                   help="LMDB or gt.txt folder; several give one table with a count-weighted total")
    _weights_args(e)
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--lexicon", help="word list for lexicon-constrained decoding")
    e.add_argument("--workers", type=int, help="image-decoding worker processes (default: up to 4)")
    e.add_argument("--threads", type=int, help="intra-op threads for inference")
    e.add_argument("--json", dest="json_path", metavar="OUT", help="write metrics and per-sample predictions")
    e.add_argument("--no-progress", dest="progress", action="store_false")

    c = sub.add_parser("convert", help="convert a word data set: gt.txt folder <-> LMDB")
    c.add_argument("src", help="gt.txt folder or LMDB")
    c.add_argument("--out", required=True, help="new LMDB folder (or word folder)")
    c.add_argument("--to", choices=["lmdb", "folder"], help="target layout (default: the other one)")
    c.add_argument("--no-check-images", dest="check_images", action="store_false",
                   help="copy image bytes without decoding them")
    return p


def _weights_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--checkpoint", metavar="FILE", help="PyTorch checkpoint (default: the shipped weights)")
    g.add_argument("--engine", metavar="DIR", help="engine directory made by `deployzoo build`")


def main(argv: list[str] | None = None) -> int:
    from deployzoo import api
    from deployzoo.errors import DeployzooError

    commands = {"models": api.models, "recognize": api.recognize, "eval": api.evaluate, "convert": api.convert}
    args = vars(make_parser().parse_args(argv))
    cmd = args.pop("cmd")
    try:
        return commands[cmd](**args) or 0
    except DeployzooError as e:
        print(f"deployzoo {cmd}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deployzoo {cmd}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
