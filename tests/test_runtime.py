"""The runtime path needs no torch: ``recognize``, ``eval --engine``, ``bench ENGINE_DIR`` and ``models`` run in a
process where importing torch (and onnx, openvino, the renderer's libraries) fails; commands that need torch say
in one line which extra to install."""

import json
import subprocess
import sys

import pytest

from conftest import word_image
from deployzoo.cli import main

BLOCK = "import sys\nfor m in ('torch', 'onnx', 'wordfreq', 'fontTools', 'openvino', 'nncf'):\n    sys.modules[m] = None\n"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_without_torch(args: list[str]) -> subprocess.CompletedProcess:
    code = BLOCK + f"from deployzoo.cli import main\nsys.exit(main({args!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    out = tmp_path_factory.mktemp("rt") / "crnn_fp32"
    assert main(["build", "crnn", "--precision", "fp32", "--threads", "1", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    d = tmp_path_factory.mktemp("rtw")
    (d / "img").mkdir()
    names = ["museum", "coffee", "street", "hotel"]
    for i, w in enumerate(names):
        word_image(w, size=28).save(d / "img" / f"{i}.png")
    (d / "gt.txt").write_text("".join(f"img/{i}.png {w}\n" for i, w in enumerate(names)))
    return d


def test_recognize_eval_bench_models_run_without_torch(engine, words, capsys, tmp_path):
    imgs = [str(p) for p in sorted((words / "img").glob("*.png"))]
    assert main(["recognize", *imgs, "--engine", str(engine), "--json"]) == 0
    with_torch = [r["text"] for r in json.loads(capsys.readouterr().out)]
    p = run_without_torch(["recognize", *imgs, "--engine", str(engine), "--json"])
    assert p.returncode == 0, p.stderr[-2000:]
    assert [r["text"] for r in json.loads(p.stdout)] == with_torch
    p = run_without_torch(["eval", "crnn", "--engine", str(engine), "--data", str(words), "--workers", "2",
                           "--json", str(tmp_path / "e.json")])
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads((tmp_path / "e.json").read_text())
    assert rep["n"] == 4 and [x["pred"] for x in rep["predictions"]] == with_torch
    p = run_without_torch(["bench", str(engine), "--batch-size", "2", "--threads", "1", "--duration", "0.3"])
    assert p.returncode == 0 and "onnxruntime force_float32" in p.stdout, p.stderr[-2000:]
    p = run_without_torch(["models"])
    assert p.returncode == 0 and "crnn" in p.stdout


@pytest.mark.parametrize("args", [["train", "crnn", "--steps", "1"], ["build", "crnn", "--precision", "fp32",
                                  "--out", "x"], ["export", "crnn", "--out", "x.onnx"]])
def test_commands_that_need_torch_name_the_extra_in_one_line(args):
    p = run_without_torch(args)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'deployzoo[torch]'" in lines[0], p.stderr[-2000:]
