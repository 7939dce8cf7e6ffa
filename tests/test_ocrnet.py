"""OCRNet + HRNetV2-W18: parity with mmsegmentation 1.2.2 (seeded-weight fixture), checkpoint loading, ONNX export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployzoo.errors import CheckpointError
from deployzoo.models import ocrnet
from deployzoo.models.ocrnet import load_ocrnet_checkpoint, ocrnet_hr18, upsample_logits

FIXTURES = Path(__file__).parent / "fixtures"
FIX = FIXTURES / "ocrnet_hr18"


def _seeded_module():
    spec = importlib.util.spec_from_file_location("_seeded_weights_ocrnet", FIXTURES / "seeded_weights.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


sw = _seeded_module()


@pytest.fixture(scope="module")
def official_keys():
    return sw.load_keys_tsv(FIX / "keys.tsv")


@pytest.fixture(scope="module")
def seeded_sd(official_keys):
    return sw.seeded_state_dict(official_keys)


@pytest.fixture(scope="module")
def seeded_model(seeded_sd):
    model = ocrnet_hr18()
    model.load_state_dict(seeded_sd, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def outputs(seeded_model):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = sw.seeded_input((1, 3, 256, 512))
        with torch.no_grad():
            ocr, aux = seeded_model.forward_both(x)
            full = seeded_model.predict_logits(x)
            plain = seeded_model(x)
    finally:
        torch.set_num_threads(threads)
    return {"x": x, "ocr": ocr, "aux": aux, "full": full, "plain": plain}


def test_state_dict_keys_match_official_order(official_keys):
    own = ocrnet_hr18().state_dict()
    assert len(official_keys) == 1888
    assert list(own) == list(official_keys)  # same names, same registration order as mmseg
    for k, (shape, dtype) in official_keys.items():
        assert tuple(own[k].shape) == tuple(shape), k
        assert own[k].dtype == dtype, k
    n_params = sum(p.numel() for p in ocrnet_hr18().parameters())
    assert n_params == 12_080_036


def test_seeded_input_matches_fixture_recipe(outputs):
    x = outputs["x"]
    first8 = [-0.8201345205307007, 0.39563116431236267, 0.8989084959030151, -1.3884038925170898]
    np.testing.assert_allclose(x.flatten()[:4].numpy(), first8, rtol=0, atol=1e-7)


def test_aux_fcn_logits_match_mmseg(outputs):
    ref = np.load(FIX / "aux_fcn_logits_64x128.npy")
    aux = outputs["aux"].numpy()
    assert aux.shape == ref.shape == (1, 19, 64, 128)
    np.testing.assert_allclose(aux, ref, rtol=0, atol=2e-4)


def test_ocr_logits_quarter_match_mmseg(outputs):
    ref = np.load(FIX / "ocr_logits_64x128.npy")
    ocr = outputs["ocr"].numpy()
    assert ocr.shape == ref.shape == (1, 19, 64, 128)
    np.testing.assert_allclose(ocr, ref, rtol=0, atol=1e-4)
    assert torch.equal(outputs["plain"], outputs["ocr"])  # forward() is the OCR output
    agree = (ocr.argmax(1) == np.load(FIX / "ocr_argmax_64x128.npy")).mean()
    assert agree >= 0.999


def test_full_resolution_prediction_matches_mmseg(outputs):
    full = outputs["full"]
    assert tuple(full.shape) == (1, 19, 256, 512)
    # predict_logits is exactly bilinear/align_corners=False upsampling of the 1/4 OCR logits
    expected = F.interpolate(outputs["ocr"], size=(256, 512), mode="bilinear", align_corners=False)
    assert torch.equal(full, expected)
    pred = full[0].argmax(0).numpy().astype(np.uint8)
    ref = np.load(FIX / "pred_argmax_256x512.npy")
    assert pred.shape == ref.shape
    assert (pred == ref).mean() >= 0.999
    # a second resize to an (equal) original size changes nothing; to another size it is bilinear
    small = upsample_logits(full, (128, 256))
    assert tuple(small.shape) == (1, 19, 128, 256)


def test_checkpoint_mmseg_wrapper_and_plain(tmp_path, seeded_sd, outputs):
    x = outputs["x"][:, :, :64, :128]
    ref_model = ocrnet_hr18()
    ref_model.load_state_dict(seeded_sd)
    # mmseg-style file: {'meta': ..., 'state_dict': ...}, num_batches_tracked included
    wrapped = tmp_path / "ocrnet_mmseg.pth"
    torch.save({"meta": {"mmseg_version": "0.5.0", "CLASSES": list(ocrnet.CITYSCAPES_CLASSES)},
                "state_dict": seeded_sd}, wrapped)  # fmt: skip
    # plain state dict without num_batches_tracked (filled with 0 by load_strict)
    plain = tmp_path / "ocrnet_plain.pth"
    torch.save({k: v for k, v in seeded_sd.items() if not k.endswith("num_batches_tracked")}, plain)
    with torch.no_grad():
        want = ref_model(x)
        for path in (wrapped, plain):
            m = load_ocrnet_checkpoint(ocrnet_hr18(), path)
            assert not m.training
            assert torch.equal(m(x), want)


def test_checkpoint_errors(tmp_path, seeded_sd):
    other = tmp_path / "resnet.pth"
    wrong = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    torch.save({"state_dict": wrong.state_dict()}, other)
    with pytest.raises(CheckpointError, match="not a checkpoint of this model"):
        load_ocrnet_checkpoint(ocrnet_hr18(), other)
    # right keys, wrong number of classes
    sd = dict(seeded_sd)
    sd["decode_head.1.conv_seg.weight"] = torch.zeros(21, 512, 1, 1)
    bad_shape = tmp_path / "ocrnet_21cls.pth"
    torch.save(sd, bad_shape)
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        load_ocrnet_checkpoint(ocrnet_hr18(), bad_shape)
    # a missing head key
    sd = {k: v for k, v in seeded_sd.items() if not k.startswith("decode_head.0.")}
    missing = tmp_path / "ocrnet_noaux.pth"
    torch.save(sd, missing)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_ocrnet_checkpoint(ocrnet_hr18(), missing)
    truncated = tmp_path / "trunc.pth"
    truncated.write_bytes(other.read_bytes()[:100])
    with pytest.raises(CheckpointError):
        load_ocrnet_checkpoint(ocrnet_hr18(), truncated)


def test_constants():
    assert ocrnet.PIXEL_MEAN_RGB == (123.675, 116.28, 103.53)
    assert ocrnet.PIXEL_STD_RGB == (58.395, 57.12, 57.375)
    assert ocrnet.TO_RGB is True and ocrnet.TEST_SIZE_HW == (1024, 2048) and ocrnet.TEST_MODE == "whole"
    assert len(ocrnet.CITYSCAPES_CLASSES) == 19 == len(ocrnet.CITYSCAPES_PALETTE)
    lut = ocrnet.CITYSCAPES_LABEL_ID_TO_TRAIN_ID_LUT
    assert len(lut) == 256
    train_ids = sorted(v for v in lut if v != 255)
    assert train_ids == list(range(19))  # each train id exactly once
    assert [lut[i] for i in (7, 8, 11, 26, 31, 32, 33)] == [0, 1, 2, 13, 16, 17, 18]
    assert lut[0] == lut[9] == lut[29] == lut[34] == 255


def test_input_size_not_divisible_by_32(seeded_model):
    # mmseg upsamples fuse edges by 2**k and then resizes to the branch size; odd sizes must still work.
    x = sw.seeded_input((1, 3, 72, 136))
    with torch.no_grad():
        ocr, aux = seeded_model.forward_both(x)
        full = seeded_model.predict_logits(x, ori_size=(144, 272))
    assert tuple(ocr.shape) == tuple(aux.shape) == (1, 19, 18, 34)
    assert tuple(full.shape) == (1, 19, 144, 272)
    assert torch.isfinite(full).all()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_onnx_export_matches_torch(tmp_path, seeded_model):
    import onnx
    import onnxruntime as ort

    x = sw.seeded_input((1, 3, 128, 256))
    path = tmp_path / "ocrnet.onnx"
    torch.onnx.export(seeded_model, (x,), str(path), opset_version=17, input_names=["image"],
                      output_names=["logits"], dynamo=False)  # fmt: skip
    onnx.checker.check_model(str(path))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"image": x.numpy()})
    with torch.no_grad():
        want = seeded_model(x).numpy()
    assert got.shape == want.shape == (1, 19, 32, 64)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
