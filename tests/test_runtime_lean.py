"""The shipped ONNX Runtime engine (weights/crnn_ort_int8): made from the shipped weights, reads as they do, and
serves `recognize` / `deployzoo.load("crnn")` where torch is not installed. Marked ``runtime``: CI also runs these
in a venv with the base install only (scripts/runtime_check.sh), where importing torch must fail."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import png_bytes, word_image
from deployzoo.cli import main
from deployzoo.specs import get_spec, shipped_engine

pytestmark = pytest.mark.runtime
WORDS = ["museum", "coffee", "street", "hotel", "garden", "north", "pizza", "restaurant"]

try:
    import torch  # noqa: F401
    HAS_TORCH = True
except ImportError:
    HAS_TORCH = False


@pytest.fixture(scope="module")
def word_files(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("lean")
    out = []
    for i, w in enumerate(WORDS):
        p = d / f"{i}.png"
        p.write_bytes(png_bytes(word_image(w if i % 2 else w.upper(), size=26)))
        out.append(str(p))
    return out


def test_shipped_engine_is_made_from_the_shipped_weights_and_small():
    eng = shipped_engine()
    assert eng is not None, "weights/crnn_ort_int8 is missing: bash scripts/build_shipped_engine.sh"
    manifest = json.loads((eng / "manifest.json").read_text())
    weights = get_spec("crnn").resolve_checkpoint(None)
    assert manifest["source"]["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest(), \
        "the shipped engine was built from other weights: bash scripts/build_shipped_engine.sh"
    assert sum(p.stat().st_size for p in eng.iterdir()) <= 12 * 2 ** 20
    assert manifest["precision"] == "qint8_mixed_float16" and manifest["backend"] == "onnxruntime"


def test_without_torch_recognize_and_load_use_the_shipped_engine(word_files, capsys):
    assert main(["recognize", *word_files, "--engine", str(shipped_engine()), "--json"]) == 0
    texts = [r["text"] for r in json.loads(capsys.readouterr().out)]
    assert sum(t == w for t, w in zip(texts, WORDS)) >= 6, texts
    code = ("import sys, json\n"
            "sys.modules['torch'] = None\n"
            "import deployzoo\n"
            "from deployzoo.cli import main\n"
            f"rec = deployzoo.load('crnn')\n"
            f"print(json.dumps([r.text for r in rec({word_files!r})]))\n"
            "print(rec.source)\n"
            f"sys.exit(main(['recognize', *{word_files!r}, '--json']))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.splitlines()
    assert json.loads(lines[0]) == texts
    assert "crnn_ort_int8" in lines[1]
    assert [r["text"] for r in json.loads("\n".join(lines[2:]))] == texts


@pytest.mark.skipif(not HAS_TORCH, reason="compares with PyTorch: the full install runs it")
def test_shipped_engine_reads_as_the_shipped_weights(word_files):
    import deployzoo

    ref = [r.text for r in deployzoo.load("crnn")(word_files)]
    eng = [r.text for r in deployzoo.load("crnn", engine=shipped_engine())(word_files)]
    assert eng == ref


def test_lean_install_has_no_torch_on_the_runtime_path(word_files, tmp_path):
    """In the base install torch is absent; in the full one, the runtime path must still not import it."""
    code = ("import sys, json\n"
            "import deployzoo\n"
            "from deployzoo.cli import main\n"
            f"rc = main(['recognize', {word_files[0]!r}, '--engine', {str(shipped_engine())!r}])\n"
            f"rc |= main(['eval', 'crnn', '--engine', {str(shipped_engine())!r}, '--data', {str(tmp_path)!r},"
            " '--workers', '0'])\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')\n"
            "sys.exit(rc)\n")
    (tmp_path / "gt.txt").write_text("".join(f"{Path(f).name} {w}\n" for f, w in zip(word_files, WORDS)))
    for f in word_files:
        (tmp_path / Path(f).name).write_bytes(Path(f).read_bytes())
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "NO-TORCH", "the runtime path imported torch"
