"""Benchmark tool: JSON fields, sane statistics, sweeps, end-to-end mode, PyTorch targets."""

import json
from pathlib import Path

import pytest

from deployzoo.bench import benchmark, format_table, latency_stats
from deployzoo.engines.build import build_engine
from deployzoo.errors import DeployzooError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(crnn_seeded_ckpt, tmp_path_factory) -> Path:
    return build_engine("crnn", "fp32", checkpoint=crnn_seeded_ckpt, out=tmp_path_factory.mktemp("b") / "e",
                        threads=1, progress=False)


def sane(row: dict, batch: int) -> None:
    lat = row["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    assert row["throughput_images_per_s"] > 0 and row["batch_size"] == batch
    # throughput is consistent with the mean latency
    assert row["throughput_images_per_s"] == pytest.approx(batch / (lat["mean"] / 1e3), rel=1e-6)
    assert row["first_inference_ms"] > 0 and row["session_create_s"] > 0 and row["peak_rss_mb"] > 10


def test_engine_sweep_json(engine, tmp_path, capsys):
    out = tmp_path / "bench.json"
    rec = benchmark(engine, batch_size=[1, 4], threads=[1, 2], iterations=6, warmup=1, json_path=out, progress=False)
    assert json.loads(out.read_text()) == rec
    assert (rec["kind"], rec["model"], rec["backend"], rec["precision"], rec["mode"]) == (
        "engine", "crnn", "onnxruntime", "force_float32", "infer")
    assert [(r["threads"], r["batch_size"]) for r in rec["results"]] == [(1, 1), (1, 4), (2, 1), (2, 4)]
    for r in rec["results"]:
        sane(r, r["batch_size"])
        assert r["iterations"] == 6
    assert rec["machine"]["cpu"] and rec["machine"]["logical_cores"] >= 1 and "load_average" in rec["machine"]
    assert {"onnxruntime", "numpy", "python"} <= set(rec["libraries"])
    assert rec["settings"]["batch_sizes"] == [1, 4] and rec["settings"]["warmup"] == 1
    assert rec["input"]["shape_per_batch"] == [1, 32, 100]
    table = capsys.readouterr().out
    assert table.count("\n| ") == 5 and "| 4 | 2 |" in table  # header + 4 rows


def test_end_to_end_mode_reads_real_files(engine, word_folder):
    rec = benchmark(engine, batch_size=3, threads=1, iterations=4, warmup=0, e2e_data=word_folder,
                    progress=False, print_table=False)
    assert rec["mode"] == "e2e" and rec["input"]["samples"] == 7  # 9 listed, a truncated and an empty file left out
    sane(rec["results"][0], 3)


def test_duration_mode_and_pytorch_target(crnn_seeded_ckpt):
    rec = benchmark("crnn", batch_size=2, threads=1, duration=0.2, warmup=0, checkpoint=crnn_seeded_ckpt,
                    progress=False, print_table=False)
    assert (rec["kind"], rec["backend"]) == ("pytorch", "pytorch") and rec["weights"] == str(crnn_seeded_ckpt)
    row = rec["results"][0]
    sane(row, 2)
    assert row["iterations"] >= 5
    assert "| 2 | 1 |" in format_table(rec)


def test_bad_targets():
    with pytest.raises(DeployzooError, match="neither an engine directory nor a model name"):
        benchmark("resnet50", iterations=1, progress=False)
    with pytest.raises(DeployzooError, match="only for crnn"):
        benchmark("volo_d2", e2e_data=".", iterations=1, random_weights=True, progress=False)


def test_latency_stats_order():
    s = latency_stats([5.0, 1.0, 3.0, 2.0, 100.0])
    assert s["min"] == 1.0 and s["max"] == 100.0 and s["p50"] == 3.0 and s["p50"] <= s["p90"] <= s["p99"] <= 100.0
