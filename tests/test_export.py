"""PyTorch -> ONNX export of CRNN: dynamic batch and width (the BiLSTM pitfall), metadata, parity."""

from pathlib import Path

import numpy as np
import onnx
import pytest

from deployzoo.engines.manifest import sha256_file
from deployzoo.errors import EngineError
from deployzoo.export import export_onnx, load_model, ort_runner, read_onnx_metadata, run_torch
from deployzoo.process.crnn import CrnnPreprocess
from deployzoo.process.text import ALPHABET


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(crnn_seeded_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    return export_onnx("crnn", out, crnn_seeded_ckpt)


def test_every_batch_and_width_matches_torch(exported, crnn_seeded_ckpt):
    """Exported once (batch 2, width 100); batches 1, 3, 7 and widths 64/100/160 (and odd widths) still match."""
    model, _ = load_model("crnn", crnn_seeded_ckpt)
    run = ort_runner(exported.onnx)
    rng = np.random.default_rng(1)
    for b in (1, 3, 7):
        for w in (64, 100, 160, 101):
            x = rng.uniform(-1, 1, (b, 1, 32, w)).astype(np.float32)
            out, ref = run(x), run_torch(model, x)
            assert out.shape == ref.shape == (w // 4 + 1, b, 37)
            np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)


def test_parity_report_covers_the_shape_matrix_and_real_images(exported):
    labels = [r["input"] for r in exported.parity]
    for b in (1, 3, 7):
        for w in (64, 100, 160):
            assert f"seeded b{b} w{w}" in labels
    assert any(lab.startswith("real") for lab in labels)
    assert all(r["ok"] and r["max_abs_diff"] < 1e-4 for r in exported.parity)
    assert exported.max_abs_diff == max(r["max_abs_diff"] for r in exported.parity)
    assert (Path(exported.onnx).parent / "export.json").is_file()
    assert "| seeded b7 w160 |" in exported.table()


def test_graph_has_symbolic_batch_and_width_and_no_batch_shaped_lstm_state(exported):
    g = onnx.load(exported.onnx).graph
    dims = g.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, 32, "width"]
    assert onnx.load(exported.onnx).opset_import[0].version >= 17
    lstms = [n for n in g.node if n.op_type == "LSTM"]
    assert len(lstms) == 2
    for n in lstms:  # initial_h / initial_c removed: ONNX defaults them to zeros of the run-time batch
        assert len(n.input) <= 5 or not any(n.input[5:])
    assert not any(n.op_type == "ConstantOfShape" for n in g.node)


def test_metadata_props_carry_model_and_preprocessing(exported, crnn_seeded_ckpt):
    meta = read_onnx_metadata(exported.onnx)
    assert meta["model"] == "crnn"
    assert CrnnPreprocess.from_dict(meta["preprocess"]) == CrnnPreprocess()
    assert meta["alphabet"] == ALPHABET
    assert meta["input"]["dynamic_axes"] == {"0": "batch", "3": "width"}
    assert meta["checkpoint_sha256"] == sha256_file(crnn_seeded_ckpt) == exported.checkpoint_sha256


def test_real_word_images_join_the_parity_inputs(crnn_seeded_ckpt, word_folder, tmp_path):
    rep = export_onnx("crnn", tmp_path / "m.onnx", crnn_seeded_ckpt, data=word_folder)
    real = [r for r in rep.parity if r["input"].startswith("real")]
    assert real and real[0]["input"] == "real words" and real[0]["ok"]
    assert rep.onnx == str(tmp_path / "m.onnx")


def test_fixed_batch_export(crnn_seeded_ckpt, tmp_path):
    rep = export_onnx("crnn", tmp_path / "fixed.onnx", crnn_seeded_ckpt, shape_mutable=False, batch_size=3)
    dims = onnx.load(rep.onnx).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 3 and dims[3].dim_param == "width"
    assert all(r["shape"][0] == 3 for r in rep.parity)


def test_random_weights_and_bad_opset(tmp_path):
    rep = export_onnx("crnn", tmp_path / "r.onnx", random_weights=True, check=False)
    assert read_onnx_metadata(rep.onnx)["random_weights"] == "True" and rep.checkpoint is None
    with pytest.raises(EngineError, match="opset"):
        export_onnx("crnn", tmp_path / "o.onnx", random_weights=True, opset=13, check=False)
