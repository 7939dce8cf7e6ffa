"""The CLI and Python API accept engines exactly as they accept checkpoints."""

import json

import pytest
import torch

import deployzoo
from deployzoo.cli import main


@pytest.fixture(scope="module")
def ort_engine(tmp_path_factory, crnn_seeded_ckpt):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("eng") / "crnn_fp32"
    assert main(["build", "crnn", "--precision", "fp32", "--checkpoint", str(crnn_seeded_ckpt), "--out", str(out)]) == 0
    return out


def test_eval_engine_matches_checkpoint(ort_engine, word_folder, crnn_seeded_ckpt, tmp_path):
    preds = {}
    for name, weights in (("ckpt", ["--checkpoint", str(crnn_seeded_ckpt)]), ("engine", ["--engine", str(ort_engine)])):
        p = tmp_path / f"{name}.json"
        assert main(["eval", "crnn", "--data", str(word_folder), *weights, "--workers", "0", "--json", str(p)]) == 0
        rep = json.loads(p.read_text())
        preds[name] = [(x["key"], x["pred"], x["correct"]) for x in rep["predictions"]]
        assert rep["n"] == 8 and rep["errors"] == 2
    assert preds["ckpt"] == preds["engine"]
    assert "engine" in json.loads((tmp_path / "engine.json").read_text())["weights"]


def test_one_evaluation_entry_point_behind_eval_and_run(ort_engine, word_folder, tmp_path):
    from deployzoo.engines import EagerRunner, open_engine
    from deployzoo.errors import DeployzooError
    from deployzoo.evaluation import evaluate
    from deployzoo.run import _accuracy

    p = tmp_path / "cli.json"
    assert main(["eval", "crnn", "--data", str(word_folder), "--engine", str(ort_engine), "--workers", "0",
                 "--json", str(p)]) == 0
    cli = json.loads(p.read_text())
    eng = open_engine(ort_engine)
    ev = evaluate("crnn", eng, [word_folder], workers=0)  # an engine carries its own metadata
    assert [(x["key"], x["pred"]) for x in ev.to_json()["predictions"]] == \
        [(x["key"], x["pred"]) for x in cli["predictions"]]
    assert (ev.n, ev.accuracy, ev.decoding) == (cli["n"], cli["accuracy"], "words") and "engine" in ev.source
    acc, ips = _accuracy("crnn", eng, str(word_folder), 64, None)  # deployzoo run's accuracy column
    assert acc == ev.accuracy and ips > 0
    with pytest.raises(DeployzooError, match="metadata"):
        evaluate("crnn", EagerRunner(torch.nn.Identity()), [word_folder])
    with pytest.raises(DeployzooError, match="one --data folder"):
        evaluate("volo_d2", eng, [word_folder, word_folder])


def test_engine_matrix_builds_notes_and_reuses(tmp_path, crnn_seeded_ckpt):
    from deployzoo.engines import Engine
    from deployzoo.run import build_matrix

    logs: list[str] = []
    pairs = [("onnxruntime", "fp32"), ("onnxruntime", "bf16"), ("tensorrt", "fp32")]
    built = build_matrix("crnn", pairs, tmp_path, checkpoint=crnn_seeded_ckpt, threads=1, log=logs.append)
    assert isinstance(built[("onnxruntime", "force_float32")], Engine)
    assert built[("onnxruntime", "force_float32")].path == tmp_path / "onnxruntime_fp32"
    assert built[("onnxruntime", "bf16")].startswith("not built: backend onnxruntime does not build force_bfloat16")
    assert built[("tensorrt", "fp32")].startswith("not built: unknown backend 'tensorrt'")
    manifest = tmp_path / "onnxruntime_fp32" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    again = build_matrix("crnn", pairs[:1], tmp_path, checkpoint=crnn_seeded_ckpt, threads=1, reuse=True,
                         log=logs.append)
    assert isinstance(again[("onnxruntime", "force_float32")], Engine) and manifest.stat().st_mtime_ns == stamp
    assert any("reusing" in m for m in logs)


def test_recognize_and_python_api_with_engine(ort_engine, word_folder, crnn_seeded_ckpt, capsys):
    img = word_folder / "img" / "0.png"
    assert main(["recognize", str(img), "--engine", str(ort_engine), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    ref = deployzoo.load("crnn", checkpoint=crnn_seeded_ckpt)(img)
    assert row["text"] == ref.text and row["confidence"] == pytest.approx(ref.confidence, abs=1e-4)
    assert deployzoo.load("crnn", engine=ort_engine)(img).text == ref.text


def test_engine_of_another_model_or_altered_is_refused(ort_engine, tmp_path, capsys):
    assert main(["eval", "volo_d2", "--data", str(tmp_path), "--engine", str(ort_engine)]) == 2
    assert "crnn" in capsys.readouterr().err
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ort_engine, bad)
    onnx = next(p for p in bad.iterdir() if p.suffix == ".onnx")
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    assert main(["recognize", "x.png", "--engine", str(bad)]) == 2
    err = capsys.readouterr().err
    assert onnx.name in err and "checksum" in err


def test_one_click_run_smoke(tmp_path, crnn_seeded_ckpt, capsys):
    out = tmp_path / "flow"
    assert main(["run", "crnn", "--checkpoint", str(crnn_seeded_ckpt), "--out", str(out), "--count", "24",
                 "--precisions", "fp32", "int8", "--backends", "onnxruntime", "--batch-size", "8",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "| crnn" in text and "pytorch" in text and "onnxruntime" in text
    rep = json.loads((out / "report.json").read_text())
    rows = {(r["backend"], r["precision"]): r for r in rep["rows"]}
    assert set(rows) == {("pytorch", "force_float32"), ("onnxruntime", "force_float32"),
                         ("onnxruntime", "qint8_mixed_float16")}
    for r in rows.values():
        assert 0.0 <= r["accuracy"] <= 1.0 and r["images_per_s"] > 0
    assert (out / "report.md").exists() and rep["export"]["max_abs_diff"] < 1e-4
    assert rep["seconds"] > 0 and "wall time: " in (out / "report.md").read_text() and "wall time: " in text
    # the picture: one marker per engine, embedded in report.md
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG") and "![accuracy vs images/s" in (out / "report.md").read_text()
    from PIL import Image

    assert Image.open(out / "report.png").size[0] >= 600
    # the fp32 engine the flow built reads exactly what PyTorch reads, image by image
    data = next((out / "data").glob("synth_test_24_*"))
    preds = []
    for weights in (["--checkpoint", str(crnn_seeded_ckpt)], ["--engine", rows[("onnxruntime", "force_float32")]["engine"]]):
        main(["eval", "crnn", "--data", str(data), *weights, "--workers", "0", "--json", str(tmp_path / "p.json")])
        preds.append([p["pred"] for p in json.loads((tmp_path / "p.json").read_text())["predictions"]])
    assert preds[0] == preds[1] and len(preds[0]) == 24


def test_eval_several_engines_prints_the_seeds_table(ort_engine, word_folder, crnn_seeded_ckpt, tmp_path, capsys):
    int8 = tmp_path / "int8"
    assert main(["build", "crnn", "--precision", "int8", "--checkpoint", str(crnn_seeded_ckpt), "--calib-data",
                 str(word_folder), "--out", str(int8)]) == 0
    capsys.readouterr()
    assert main(["eval", "crnn", "--data", str(word_folder), "--engine", str(ort_engine), str(int8), "--workers", "0",
                 "--json", str(tmp_path / "t.json")]) == 0
    out = capsys.readouterr().out
    assert "| Model | Precision" in out and "force_float32" in out and "qint8_mixed_float16" in out
    rec = json.loads((tmp_path / "t.json").read_text())
    assert [e["precision"] for e in rec["engines"]] == ["force_float32", "qint8_mixed_float16"]
    assert all(e["n"] == 8 and 0 <= e["accuracy"] <= 1 for e in rec["engines"])


def test_report_without_matplotlib_says_how_to_get_the_plot(tmp_path, monkeypatch):
    import sys

    from deployzoo.run import FlowReport, Row, _write_report

    rep = FlowReport("crnn", "w.pt", "data", 1, rows=[Row("crnn", "force_float32", "onnxruntime", 8, 0.9, 100.0)])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the 'plot' extra were not installed
    _write_report(rep, tmp_path, 0.0, 1, final=True)
    assert "pip install 'deployzoo[plot]'" in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "report.png").exists()
