"""OCRNet / VOLO-D2 through the engine builder: engines at a chosen segmentation size, int8 calibrated at that
size with the unlabelled (disagreement) budget, and clear errors for sizes a model cannot take.

OCRNet is built at 64x128 with seeded random weights so the whole path (export, parity, ORT, calibration) runs in
seconds; the agreement and speed numbers at real sizes come from bench/vision_engines.py.
"""

from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from deployzoo.engines import open_engine
from deployzoo.engines.build import build_engine
from deployzoo.errors import DeployzooError, EngineError
from deployzoo.export import input_spec, load_model, run_torch
from deployzoo.predict import Segmenter

pytestmark = pytest.mark.usefixtures("one_torch_thread")
HW = (64, 128)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """12 small RGB images of varied sizes (none 64x128): the builder must resize them to the engine's size."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(12):
        h, w = 48 + 8 * i, 96 + 12 * i
        base = rng.integers(0, 255, (1, 1, 3)) + np.linspace(0, 60, w)[None, :, None]
        img = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:02d}.jpg")
    return d


@pytest.fixture(scope="module")
def ocr_fp32(tmp_path_factory) -> Path:
    return build_engine("ocrnet_hr18", "fp32", random_weights=True, input_size=HW, threads=1, progress=False,
                        out=tmp_path_factory.mktemp("e") / "ocr32")


def test_ocrnet_engine_at_a_chosen_size_matches_pytorch(ocr_fp32):
    eng = open_engine(ocr_fp32, expect_model="ocrnet_hr18", threads=1)
    assert eng.input_spec["shape"] == ["batch", 3, *HW] and eng.manifest["random_weights"]
    assert eng.input_spec["output"]["shape"] == ["batch", "classes", HW[0] // 4, HW[1] // 4]
    module, _ = load_model("ocrnet_hr18", random_weights=True)
    x = np.random.default_rng(1).normal(size=(2, 3, *HW)).astype(np.float32)
    np.testing.assert_allclose(eng(x), run_torch(module, x), rtol=0, atol=1e-4)
    with pytest.raises(EngineError, match=r"input dim 2 must be 64"):
        eng(np.zeros((1, 3, 128, 128), np.float32))
    # the test Resize box follows the engine: a 2:1 frame of any size is resized (keeping its ratio) to 64x128
    assert eng.manifest["preprocess"]["scale_wh"] == [HW[1], HW[0]]
    seg = Segmenter(eng)
    assert seg.test_scale == (HW[1], HW[0])
    labels = seg(np.zeros((256, 512, 3), np.uint8))
    assert labels.shape == (256, 512) and labels.dtype == np.uint8
    with pytest.raises(DeployzooError, match="fixed at 128x64"):
        seg(np.zeros((100, 100, 3), np.uint8))
    assert Segmenter(eng, test_scale=None)(np.zeros((*HW, 3), np.uint8)).shape == HW


def test_ocrnet_int8_calibrates_at_the_engine_size_with_the_unlabelled_budget(photos, tmp_path):
    path = build_engine("ocrnet_hr18", "int8", random_weights=True, input_size=HW, calib_data=photos,
                        calib_count=8, probe_count=4, threads=1, progress=False, out=tmp_path / "ocr8",
                        calib_method="minmax", max_disagreement=1.0)
    eng = open_engine(path, threads=1)
    q = eng.manifest["quantization"]
    assert q["calibration"]["images"] == 8 and q["probe_images"] == 4
    assert not q["calibration"]["probe_labelled"] and q["budget"]["criterion"] == "disagreement"
    assert "accuracy_drop" not in q["final"] and q["budget_met"] and q["int8_nodes"]
    # probe disagreement counts pixels of the 1/4-resolution class map: 4 images x 16 x 32
    assert q["final"]["count"] == 4 * (HW[0] // 4) * (HW[1] // 4)
    g = onnx.load(path / "model.onnx").graph
    assert any(n.op_type == "QuantizeLinear" for n in g.node)
    assert eng(np.zeros((1, 3, *HW), np.float32)).shape == (1, 19, HW[0] // 4, HW[1] // 4)


@pytest.mark.parametrize("model,size,match", [
    ("volo_d2", (256, 256), "fixed at 224x224"),
    ("crnn", (32, 128), "height is fixed at 32"),
    ("ocrnet_hr18", (100, 128), "multiples of 32"),
    ("ocrnet_hr18", (32, 64), "at least 64"),
])
def test_input_size_a_model_cannot_take_is_refused(model, size, match):
    with pytest.raises(EngineError, match=match):
        input_spec(model, input_size=size)


def test_volo_accepts_its_own_size():
    assert input_spec("volo_d2", input_size=(224, 224))["shape"] == ["batch", 3, 224, 224]


def test_calibration_batches_shrink_for_large_inputs():
    from deployzoo.engines.calib import calib_batch

    assert calib_batch(input_spec("volo_d2")) == 8
    assert calib_batch(input_spec("ocrnet_hr18", input_size=(256, 512))) == 8
    assert calib_batch(input_spec("ocrnet_hr18", input_size=(512, 1024))) == 2
    assert calib_batch(input_spec("ocrnet_hr18")) == 1  # a 1024x2048 frame: one per batch
    assert calib_batch(input_spec("ocrnet_hr18", shape_mutable=False, batch_size=3)) == 3
