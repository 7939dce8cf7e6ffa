from pathlib import Path

import numpy as np
import pytest
import torch
from seeded_weights import load_keys_tsv, seeded_input, seeded_state_dict

from deployzoo.errors import CheckpointError
from deployzoo.models.crnn import crnn, output_length
from deployzoo.models.crnn import load_crnn_checkpoint
from deployzoo.specs import get_spec

FIX = Path(__file__).parent / "fixtures" / "crnn_meijieru"


def _seeded():
    return seeded_state_dict(load_keys_tsv(FIX / "keys.tsv"))


def test_parity_with_meijieru_fixture():
    m = crnn().eval()
    assert list(m.state_dict()) == list(load_keys_tsv(FIX / "keys.tsv")), "parameter names/order differ from meijieru"
    m.load_state_dict(_seeded(), strict=True)
    with torch.no_grad():
        y = m(seeded_input((2, 1, 32, 100)))
    ref = np.load(FIX / "logits_T26_B2_C37.npy")
    assert y.shape == (26, 2, 37)
    np.testing.assert_allclose(y.numpy(), ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("width", [16, 64, 100, 101, 256])
def test_output_length(width):
    with torch.no_grad():
        y = crnn().eval()(torch.zeros(1, 1, 32, width))
    assert y.shape[0] == output_length(width) == width // 4 + 1


@pytest.mark.parametrize("variant", ["plain", "module_prefix", "no_num_batches", "fp16", "wrapped"])
def test_checkpoint_layouts_load_strictly(tmp_path, variant):
    sd = _seeded()
    if variant == "module_prefix":
        sd = {f"module.{k}": v for k, v in sd.items()}
    elif variant == "no_num_batches":
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    elif variant == "fp16":
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    obj = {"state_dict": sd, "deployzoo": {"model": "crnn", "preprocess": {"keep_ratio": True}}} \
        if variant == "wrapped" else sd
    p = tmp_path / "c.pth"
    torch.save(obj, p)
    m = crnn()
    meta = load_crnn_checkpoint(m, p)
    ref = _seeded()
    tol = 1e-2 if variant == "fp16" else 0
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v.float(), ref[k].float(), atol=tol, rtol=tol)
    assert (meta.get("preprocess") == {"keep_ratio": True}) == (variant == "wrapped")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    p = tmp_path / "volo.pth"
    torch.save({"state_dict": {"patch_embed.conv.0.weight": torch.zeros(64, 3, 7, 7), "head.weight": torch.zeros(2, 2)}}, p)
    with pytest.raises(CheckpointError, match=r"volo\.pth.*not a checkpoint of this model"):
        get_spec("crnn").load(p)


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path):
    sd = _seeded()
    sd["rnn.1.embedding.weight"] = torch.zeros(63, 512)  # a 62-class model
    sd["rnn.1.embedding.bias"] = torch.zeros(63)
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        get_spec("crnn").load(tmp_path / "c.pth")


def test_metadata_of_another_model_is_refused(tmp_path):
    torch.save({"state_dict": _seeded(), "deployzoo": {"model": "volo_d2"}}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match="volo_d2"):
        get_spec("crnn").load(tmp_path / "c.pth")


def test_truncated_empty_and_missing_checkpoints(tmp_path, crnn_seeded_ckpt):
    data = crnn_seeded_ckpt.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="trunc.pth.*truncated or corrupt"):
        get_spec("crnn").load(tmp_path / "trunc.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        get_spec("crnn").load(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="not found"):
        get_spec("crnn").load(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="directory"):
        get_spec("crnn").load(tmp_path)
