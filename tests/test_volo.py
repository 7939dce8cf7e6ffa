"""VOLO-D2: parity with the official code (seeded-weight fixture), ONNX export, checkpoint loading."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deployzoo.errors import CheckpointError
from deployzoo.models import volo as volo_mod
from deployzoo.models.volo import VOLO, fold2d, load_volo_checkpoint, unfold2d, volo_d2

FIXTURES = Path(__file__).parent / "fixtures"
VOLO_FIX = FIXTURES / "volo_d2"
sys.path.insert(0, str(FIXTURES))
from seeded_weights import load_keys_tsv, seeded_input, seeded_state_dict  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def official_keys() -> dict:
    return load_keys_tsv(VOLO_FIX / "keys.tsv")


@pytest.fixture(scope="module")
def seeded_sd(official_keys) -> dict[str, torch.Tensor]:
    return seeded_state_dict(official_keys)


@pytest.fixture(scope="module")
def seeded_model(seeded_sd) -> VOLO:
    model = volo_d2()
    model.load_state_dict(seeded_sd, strict=True)
    return model.eval()


def tiny_volo(embed: int = 16) -> VOLO:
    """A small VOLO with the same module structure (for fast checkpoint-file tests)."""
    return VOLO(
        layers=[1, 1, 1, 1],
        embed_dims=[embed, 2 * embed, 2 * embed, 2 * embed],
        num_heads=[2, 4, 4, 4],
        mlp_ratios=[2, 2, 2, 2],
        downsamples=[True, False, False, False],
        outlook_attention=[True, False, False, False],
        img_size=32,
        num_classes=10,
        stem_hidden_dim=8,
        name="volo_tiny",
    ).eval()


# ------------------------------------------------------------------ structure and parity


def test_keys_shapes_and_params_match_official(official_keys):
    model = volo_d2()
    own = model.state_dict()
    assert list(own) == list(official_keys)  # same names, same order as the official state_dict
    for k, (shape, dtype) in official_keys.items():
        assert tuple(own[k].shape) == shape, k
        assert own[k].dtype == dtype, k
    assert sum(p.numel() for p in model.parameters()) == 58_678_336
    assert model.pos_embed.shape == (1, 14, 14, 512)
    assert model.cls_token.shape == (1, 1, 512)
    assert [type(m).__name__ for m in model.network] == ["Sequential", "Downsample"] + ["Sequential"] * 3
    assert [len(model.network[i]) for i in (0, 2, 3, 4)] == [6, 4, 10, 4]
    assert len(model.post_network) == 2


def test_parity_with_official_fixture(seeded_model):
    x = seeded_input((2, 3, 224, 224))
    assert x.flatten()[:3].tolist() == pytest.approx([-0.820135, 0.395631, 0.898908], abs=1e-6)
    with torch.no_grad():
        logits = seeded_model(x)
        cls_logits, aux_max = seeded_model.forward_terms(x)
    ref = {n: np.load(VOLO_FIX / f"{n}.npy") for n in ("logits", "cls_logits", "aux_max")}
    for name, got in (("logits", logits), ("cls_logits", cls_logits), ("aux_max", aux_max)):
        assert got.shape == (2, 1000)
        np.testing.assert_allclose(got.numpy(), ref[name], rtol=0, atol=1e-4, err_msg=name)
    # the eval output is exactly the documented combination of the two terms
    torch.testing.assert_close(logits, cls_logits + 0.5 * aux_max, rtol=0, atol=1e-6)
    assert logits.argmax(1).tolist() == ref["logits"].argmax(1).tolist() == [372, 372]


def test_output_shapes_and_terms():
    model = tiny_volo()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        cls_logits, aux = model.forward_dense(x)
        terms = model.forward_terms(x)
        logits = model(x)
    assert feats.shape == (2, 1 + 2 * 2, 32)  # class token + (32 / 8 / 2)^2 tokens
    assert cls_logits.shape == (2, 10) and aux.shape == (2, 4, 10)
    torch.testing.assert_close(terms[0], cls_logits, rtol=0, atol=0)
    torch.testing.assert_close(terms[1], aux.max(dim=1).values, rtol=0, atol=0)
    torch.testing.assert_close(logits, cls_logits + 0.5 * aux.max(dim=1).values, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "shape,k,p,s",
    [
        ((2, 8, 28, 28), 3, 1, 2),  # VOLO-D2 outlook attention
        ((1, 4, 27, 13), 3, 1, 2),  # odd sizes (ceil-mode windows)
        ((2, 3, 9, 10), 3, 1, 1),
        ((1, 2, 8, 8), 2, 0, 2),
        ((1, 2, 11, 7), 5, 2, 3),
    ],
)
def test_unfold_fold_match_torch(shape, k, p, s):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    cols = unfold2d(x, k, p, s)
    ref_cols = F.unfold(x, k, padding=p, stride=s)
    assert cols.shape == ref_cols.shape
    assert torch.equal(cols, ref_cols)  # slicing only: bit-exact

    y = torch.randn(ref_cols.shape, generator=g)
    out = fold2d(y, shape[2:], k, p, s)
    ref_out = F.fold(y, shape[2:], k, padding=p, stride=s)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)


def test_onnx_export_dynamic_batch(seeded_model, tmp_path):
    import onnx
    import onnxruntime as ort

    path = tmp_path / "volo_d2.onnx"
    torch.onnx.export(
        seeded_model,
        seeded_input((1, 3, 224, 224)),
        str(path),
        opset_version=17,
        dynamo=False,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    assert "ConvTranspose" in ops and "Col2Im" not in ops  # fold as a one-hot transposed conv
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = seeded_input((batch, 3, 224, 224), seed=11 + batch)
        (got,) = sess.run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = seeded_model(x).numpy()
        assert got.shape == (batch, 1000)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-4, err_msg=f"batch {batch}")


# ------------------------------------------------------------------ checkpoints


def _assert_same_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    assert set(own) == set(sd)
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def test_load_full_checkpoint_file(seeded_sd, tmp_path):
    path = tmp_path / "d2_224_85.2.pth.tar"
    torch.save({"state_dict_ema": {f"module.{k}": v for k, v in seeded_sd.items()}, "epoch": 3}, path)
    model = load_volo_checkpoint(volo_d2(), path).eval()
    _assert_same_weights(model, seeded_sd)  # same weights as the parity-tested model


@pytest.mark.parametrize("layout", ["plain", "state_dict", "state_dict_ema", "model", "module_prefix", "wrapped_module"])
def test_load_wrapper_layouts(layout, tmp_path):
    src = tiny_volo()
    for p in src.parameters():  # distinct values, so a silent non-load would be caught
        torch.nn.init.normal_(p)
    sd = src.state_dict()
    obj = {
        "plain": sd,
        "state_dict": {"state_dict": sd, "epoch": 5},
        "state_dict_ema": {"state_dict_ema": sd, "optimizer": {"lr": 0.1}},
        "model": {"model": sd},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "wrapped_module": {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    }[layout]
    path = tmp_path / f"{layout}.pth"
    torch.save(obj, path)
    dst = tiny_volo()
    assert load_volo_checkpoint(dst, path) is dst
    _assert_same_weights(dst, sd)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_wrong_model_checkpoint_raises(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"backbone.conv1.weight": torch.randn(8, 3, 3, 3), "fc.bias": torch.randn(10)}, path)
    with pytest.raises(CheckpointError, match="not a checkpoint of this model"):
        load_volo_checkpoint(tiny_volo(), path)


def test_missing_key_and_shape_mismatch_raise(tmp_path):
    sd = tiny_volo().state_dict()
    del sd["aux_head.weight"]
    path = tmp_path / "missing.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="aux_head.weight"):
        load_volo_checkpoint(tiny_volo(), path)

    path = tmp_path / "wider.pth"
    torch.save(tiny_volo(embed=24).state_dict(), path)  # same keys, other shapes
    with pytest.raises(CheckpointError, match="shapes do not fit model 'volo_tiny'"):
        load_volo_checkpoint(tiny_volo(), path)


def test_truncated_empty_and_missing_files_raise(tmp_path):
    path = tmp_path / "full.pth"
    torch.save(tiny_volo().state_dict(), path)
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_volo_checkpoint(tiny_volo(), truncated)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_volo_checkpoint(tiny_volo(), empty)
    with pytest.raises(CheckpointError, match="not found"):
        load_volo_checkpoint(tiny_volo(), tmp_path / "nope.pth")


def test_preprocessing_constants():
    assert volo_mod.INPUT_SIZE == 224
    assert volo_mod.CROP_PCT == 0.96
    assert volo_mod.RESIZE_SHORT_SIDE == 233
    assert volo_mod.INTERPOLATION == "bicubic"
    assert volo_mod.IMAGENET_MEAN == (0.485, 0.456, 0.406)
    assert volo_mod.IMAGENET_STD == (0.229, 0.224, 0.225)
    assert volo_mod.NUM_CLASSES == 1000
