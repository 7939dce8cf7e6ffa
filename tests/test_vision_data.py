"""ImageNet / Cityscapes readers, VOLO / OCRNet pre- and post-processing, and the metrics on hand-worked cases."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from deployzoo.data.cityscapes import open_cityscapes
from deployzoo.data.imagenet import IMAGENET_WNIDS, WNID_TO_INDEX, open_imagenet, read_label_file
from deployzoo.errors import DatasetError, ImageError
from deployzoo.metrics import confusion_matrix, iou_from_confusion, mean_iou, topk_correct
from deployzoo.models.ocrnet import CITYSCAPES_LABEL_ID_TO_TRAIN_ID, CITYSCAPES_PALETTE
from deployzoo.process.vision import (
    center_crop_box,
    colorize,
    mmcv_rescale_size,
    ocrnet_input_size,
    ocrnet_preprocess,
    resize_bilinear,
    resize_short_side,
    seg_labels,
    seg_probs_add,
    volo_crop,
    volo_preprocess,
)

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def solid(colour, w=60, h=40) -> Image.Image:
    return Image.new("RGB", (w, h), colour)


def make_imagenet(root: Path) -> Path:
    """val/<wnid>/*.JPEG: 6 images, one truncated. Classes 0, 1, 2 and 999."""
    val = root / "val"
    files = {
        ("n01440764", "a_red.JPEG"): RED,  # class 0
        ("n01440764", "b_green.JPEG"): GREEN,  # class 0
        ("n01443537", "green.JPEG"): GREEN,  # class 1
        ("n01484850", "blue.JPEG"): BLUE,  # class 2
        ("n15075141", "blue.JPEG"): BLUE,  # class 999
    }
    for (d, name), colour in files.items():
        (val / d).mkdir(parents=True, exist_ok=True)
        solid(colour).save(val / d / name, quality=95)
    good = (val / "n01440764" / "a_red.JPEG").read_bytes()
    (val / "n01440764" / "c_bad.JPEG").write_bytes(good[: len(good) // 3])
    (val / "n01440764" / "notes.txt").write_text("not an image")
    return root


# Cityscapes stripes (64x128): the image colour depends on the column only, the ground truth also on the row.
#   image: cols 0-47 road, 48-63 sidewalk, 64-95 car, 96-127 building (palette colours)
#   gt:    rows 0-15 sky; rows 16-63: cols 0-31 road, 32-63 sidewalk, 64-95 car, 96-127 ignored (255)
TRAIN_TO_LABEL_ID = {t: i for i, t in CITYSCAPES_LABEL_ID_TO_TRAIN_ID.items() if t != 255}


def stripes_image() -> np.ndarray:
    ids = np.zeros((64, 128), np.uint8)
    ids[:, 0:48], ids[:, 48:64], ids[:, 64:96], ids[:, 96:128] = 0, 1, 13, 2
    return colorize(ids)


def stripes_gt() -> np.ndarray:
    gt = np.full((64, 128), 255, np.uint8)
    gt[:16] = 10
    gt[16:, 0:32], gt[16:, 32:64], gt[16:, 64:96] = 0, 1, 13
    return gt


def make_cityscapes(root: Path) -> Path:
    """Two cities: aachen with labelTrainIds (+ labelIds), bremen with labelIds only (ignored pixels = id 4)."""
    img, gt = stripes_image(), stripes_gt()
    label_ids = np.vectorize(lambda t: TRAIN_TO_LABEL_ID.get(int(t), 4), otypes=[np.uint8])(gt)
    for city, with_train_ids in (("aachen", True), ("bremen", False)):
        stem = f"{city}_000000_000019"
        (root / "leftImg8bit" / "val" / city).mkdir(parents=True)
        (root / "gtFine" / "val" / city).mkdir(parents=True)
        Image.fromarray(img).save(root / "leftImg8bit" / "val" / city / f"{stem}_leftImg8bit.png")
        g = root / "gtFine" / "val" / city
        Image.fromarray(label_ids).save(g / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(colorize(gt)).save(g / f"{stem}_gtFine_color.png")
        if with_train_ids:
            Image.fromarray(gt).save(g / f"{stem}_gtFine_labelTrainIds.png")
    return root


# ------------------------------------------------------------------------------------------------ ImageNet reader


def test_wnid_table_is_the_standard_order():
    assert len(IMAGENET_WNIDS) == 1000 == len(set(IMAGENET_WNIDS))
    assert list(IMAGENET_WNIDS) == sorted(IMAGENET_WNIDS)
    # landmarks: val_00000001 is a sea snake (65); 409 analog clock, 530 digital clock, 999 toilet tissue
    assert (IMAGENET_WNIDS[0], IMAGENET_WNIDS[65], IMAGENET_WNIDS[409], IMAGENET_WNIDS[530], IMAGENET_WNIDS[999]) == (
        "n01440764", "n01751748", "n02708093", "n03196217", "n15075141")


def test_imagenet_folders(tmp_path):
    ds = open_imagenet(make_imagenet(tmp_path))  # root holding val/
    assert ds.layout == "folders" and ds.root == tmp_path / "val"
    assert [(s.key, s.label) for s in ds.samples] == [
        ("n01440764/a_red.JPEG", 0), ("n01440764/b_green.JPEG", 0), ("n01440764/c_bad.JPEG", 0),
        ("n01443537/green.JPEG", 1), ("n01484850/blue.JPEG", 2), ("n15075141/blue.JPEG", 999)]
    assert ds.summary == "6 images, 4 classes (4 class folders)"
    rgb = ds.load(0)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8 and rgb[20, 30, 0] > 240 and rgb[20, 30, 1] < 15
    with pytest.raises(ImageError, match="c_bad.JPEG: cannot be decoded"):
        ds.load(2)
    assert len(open_imagenet(tmp_path / "val")) == 6  # the val folder itself works too


def test_imagenet_index_named_and_sorted_folders(tmp_path):
    for name in ("7", "12"):
        (tmp_path / "val" / name).mkdir(parents=True)
        solid(RED).save(tmp_path / "val" / name / "x.jpg")
    assert [s.label for s in open_imagenet(tmp_path)] == [12, 7]  # '12' < '7' as text; labels are the numbers


def test_imagenet_layout_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_imagenet(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="empty"):
        open_imagenet(tmp_path / "empty")
    flat = tmp_path / "flat"
    flat.mkdir()
    solid(RED).save(flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="no class folders.*label file"):
        open_imagenet(flat)
    named = tmp_path / "named"
    for c in ("cat", "dog"):
        (named / c).mkdir(parents=True)
        solid(RED).save(named / c / "x.jpg")
    with pytest.raises(DatasetError, match="cannot tell the ImageNet class of 2 class folders"):
        open_imagenet(named)
    (tmp_path / "odd" / "n99999999").mkdir(parents=True)
    with pytest.raises(DatasetError, match="wnids outside ImageNet-1k: n99999999"):
        open_imagenet(tmp_path / "odd")
    (tmp_path / "nofiles" / "n01440764").mkdir(parents=True)
    with pytest.raises(DatasetError, match="1 class folders but no images"):
        open_imagenet(tmp_path / "nofiles")


def test_imagenet_label_file(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, c in enumerate((RED, GREEN, BLUE), 1):
        solid(c).save(d / f"ILSVRC2012_val_{i:08d}.JPEG")
    # caffe val.txt: index labels; one line names a wnid; an absent image is fine (subset of the set)
    (tmp_path / "val.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\nILSVRC2012_val_00000002.JPEG n01440764\n"
                                      "ILSVRC2012_val_00000003.JPEG 970\nILSVRC2012_val_00000004.JPEG 1\n")
    ds = open_imagenet(d, tmp_path / "val.txt")
    assert ds.layout == "label_file" and [s.label for s in ds] == [65, 0, 970] and ds.unlisted == 1
    # Kaggle LOC_val_solution.csv: header, no extension, wnid first in the prediction string
    (tmp_path / "loc.csv").write_text("ImageId,PredictionString\nILSVRC2012_val_00000001,n01751748 1 2 3 4\n"
                                      "ILSVRC2012_val_00000002,n01440764 1 2 3 4\n"
                                      "ILSVRC2012_val_00000003,n09193705 1 2 3 4\n")
    assert [s.label for s in open_imagenet(d, tmp_path / "loc.csv")] == [65, 0, 970]
    (tmp_path / "short.txt").write_text("ILSVRC2012_val_00000001.JPEG 65\n")
    with pytest.raises(DatasetError, match="no \\(unambiguous\\) label for 2 of 3 images"):
        open_imagenet(d, tmp_path / "short.txt")
    (tmp_path / "devkit.txt").write_text("490\n361\n171\n")
    with pytest.raises(DatasetError, match="line 1: .*devkit"):
        read_label_file(tmp_path / "devkit.txt")
    (tmp_path / "big.txt").write_text("a.JPEG 1000\n")
    with pytest.raises(DatasetError, match="outside 0..999"):
        read_label_file(tmp_path / "big.txt")
    assert WNID_TO_INDEX["n09193705"] == 970


# ------------------------------------------------------------------------------------------------ Cityscapes reader


def test_cityscapes_pairs_and_label_ids(tmp_path):
    ds = open_cityscapes(make_cityscapes(tmp_path))
    assert [(s.key, s.label_kind) for s in ds] == [("aachen/aachen_000000_000019", "trainIds"),
                                                    ("bremen/bremen_000000_000019", "labelIds")]
    assert ds.summary == "2 images, 2 cities, 1 labelTrainIds + 1 labelIds mapped to train ids"
    (rgb_a, gt_a), (_, gt_b) = ds.load(0), ds.load(1)
    assert rgb_a.shape == (64, 128, 3) and tuple(rgb_a[0, 70]) == CITYSCAPES_PALETTE[13]
    np.testing.assert_array_equal(gt_a, stripes_gt())
    np.testing.assert_array_equal(gt_b, stripes_gt())  # labelIds 7/8/26/23/4 -> train ids 0/1/13/10/255


def test_cityscapes_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        open_cityscapes(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no leftImg8bit/val/"):
        open_cityscapes(tmp_path)
    root = make_cityscapes(tmp_path / "cs")
    extra = root / "leftImg8bit" / "val" / "bremen" / "bremen_000001_000019_leftImg8bit.png"
    Image.fromarray(stripes_image()).save(extra)
    with pytest.raises(DatasetError, match="1 of 3 images have no ground truth, e.g. bremen/bremen_000001_000019"):
        open_cityscapes(root)
    extra.unlink()
    (root / "leftImg8bit" / "val" / "aachen" / "aachen_000000_000019_leftImg8bit.png").unlink()
    with pytest.raises(DatasetError, match="1 ground-truth maps have no image, e.g. aachen/aachen_000000_000019"):
        open_cityscapes(root)
    with pytest.raises(DatasetError, match="no leftImg8bit/test/"):
        open_cityscapes(root, split="test")


def test_cityscapes_bad_label_maps_fail_per_image(tmp_path):
    root = make_cityscapes(tmp_path)
    g = root / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    Image.fromarray(np.full((64, 128), 26, np.uint8)).save(g)  # label ids saved under the trainIds name
    ds = open_cityscapes(root)
    with pytest.raises(ImageError, match="values 26 are not train ids"):
        ds.load(0)
    Image.fromarray(np.zeros((32, 128), np.uint8)).save(g)
    with pytest.raises(ImageError, match="ground truth is 128x32 but the image is 128x64"):
        ds.load(0)
    assert ds.load(1)[1].shape == (64, 128)  # the other image still reads


# ------------------------------------------------------------------------------------------------ VOLO preprocessing


def test_preprocessing_constants_match_the_models():
    import subprocess
    import sys

    from deployzoo.models import ocrnet, volo
    from deployzoo.process import vision as pv

    assert (pv.IMAGENET_MEAN, pv.IMAGENET_STD) == (volo.IMAGENET_MEAN, volo.IMAGENET_STD)
    assert (pv.VOLO_INPUT_SIZE, pv.VOLO_RESIZE_SHORT_SIDE) == (volo.INPUT_SIZE, volo.RESIZE_SHORT_SIDE) == (224, 233)
    assert (pv.OCRNET_MEAN_RGB, pv.OCRNET_STD_RGB) == (ocrnet.PIXEL_MEAN_RGB, ocrnet.PIXEL_STD_RGB)
    assert pv.OCRNET_TEST_SCALE_WH == ocrnet.TEST_SCALE_WH and pv.CITYSCAPES_PALETTE == ocrnet.CITYSCAPES_PALETTE
    code = "import sys, deployzoo.process.vision, deployzoo.predict; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_volo_resize_short_side_and_crop_offsets():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    r = resize_short_side(img)
    assert r.shape == (233, 310, 3)  # 233 = floor(224 / 0.96); int(233 * 400 / 300) = 310
    assert resize_short_side(img.transpose(1, 0, 2).copy()).shape == (310, 233, 3)
    np.testing.assert_array_equal(r, np.asarray(Image.fromarray(img).resize((310, 233), Image.Resampling.BICUBIC)))
    # torchvision center_crop: int(round((233 - 224) / 2)) = round(4.5) = 4 (half to even), (310 - 224) / 2 = 43
    assert center_crop_box(233, 310) == (4, 43) and center_crop_box(235, 235) == (6, 6)
    np.testing.assert_array_equal(volo_crop(img), r[4:228, 43:267])
    x = volo_preprocess(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    mean, std = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])
    ref = (r[4:228, 43:267].astype(np.float32) / np.float32(255) - mean) / std  # ToTensor + Normalize, float32
    np.testing.assert_array_equal(x, ref.transpose(2, 0, 1))


def test_volo_preprocess_constant_colour():
    x = volo_preprocess(np.full((300, 400, 3), (124, 116, 104), np.uint8))
    # (124/255 - 0.485)/0.229 = 0.0012745/0.229 = 0.0055656; (116/255 - 0.456)/0.224 = -0.0049020;
    # (104/255 - 0.406)/0.225 = 0.0018431/0.225 = 0.0081918
    expect = (np.float32([124, 116, 104]) / np.float32(255) - np.float32([0.485, 0.456, 0.406])) / np.float32(
        [0.229, 0.224, 0.225])
    np.testing.assert_allclose(expect, [0.0055656, -0.0049020, 0.0081918], atol=1e-6)
    for c in range(3):
        assert np.all(x[c] == expect[c])
    with pytest.raises(ValueError, match="uint8 \\(H, W, 3\\)"):
        volo_preprocess(np.zeros((10, 10), np.uint8))


# ------------------------------------------------------------------------------------------------ OCRNet preprocessing


def test_mmcv_rescale_rule():
    assert mmcv_rescale_size((2048, 1024), (2048, 1024)) == (2048, 1024)  # Cityscapes: identity
    assert mmcv_rescale_size((1024, 512), (2048, 1024)) == (2048, 1024)  # factor min(2048/1024, 1024/512) = 2
    # factor min(2048/1000, 1024/600) = 1.70667: int(1000 * f + 0.5) = 1707, int(600 * f + 0.5) = 1024
    assert mmcv_rescale_size((1000, 600), (2048, 1024)) == (1707, 1024)
    assert mmcv_rescale_size((600, 1000), (2048, 1024)) == (1024, 1707)  # box edges are (long, short)
    assert mmcv_rescale_size((2048, 1024), 0.75) == (1536, 768)
    assert ocrnet_input_size((1024, 2048)) == (1024, 2048)
    assert ocrnet_input_size((1024, 2048), ratio=0.75) == (768, 1536)  # box (int(2048*.75), int(1024*.75))
    assert ocrnet_input_size((1024, 2048), ratio=1.75) == (1792, 3584)
    assert ocrnet_input_size((64, 128), None) == (64, 128)


def test_ocrnet_preprocess():
    x = ocrnet_preprocess(np.full((64, 128, 3), (124, 116, 104), np.uint8), (128, 64))
    # (124 - 123.675)/58.395 = 0.0055655, (116 - 116.28)/57.12 = -0.0049020, (104 - 103.53)/57.375 = 0.0081917
    assert x.shape == (3, 64, 128) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0], [0.0055655, -0.0049020, 0.0081917], atol=1e-6)
    assert all(np.all(x[c] == x[c, 0, 0]) for c in range(3))
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (600, 1000, 3), dtype=np.uint8)
    y = ocrnet_preprocess(img)  # 1000x600 -> 1707x1024, cv2 bilinear on uint8 as mmcv.imrescale
    assert y.shape == (3, 1024, 1707)
    import cv2

    r = cv2.resize(img, (1707, 1024), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    np.testing.assert_allclose(y[0], (r[..., 0] - 123.675) / 58.395, atol=1e-5)


# ------------------------------------------------------------------------------------------------ segmentation post


@pytest.mark.parametrize("src,dst", [((16, 32), (64, 128)), ((5, 7), (13, 29)), ((13, 29), (5, 7)),
                                     ((8, 8), (8, 8)), ((1, 3), (4, 9)), ((20, 30), (21, 31))])
def test_resize_bilinear_matches_torch(src, dst):
    x = np.random.default_rng(0).standard_normal((3, *src)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
    out = resize_bilinear(x, dst)
    assert out.shape == (3, *dst)
    np.testing.assert_allclose(out, ref, atol=2e-6, rtol=0)
    np.testing.assert_allclose(resize_bilinear(x[None], dst)[0], out)


def test_seg_labels_and_probs_match_torch_two_step():
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((19, 48, 96)).astype(np.float32)
    t = torch.from_numpy(logits)[None]
    mid = F.interpolate(t, size=(192, 384), mode="bilinear", align_corners=False)  # to the input size
    full = F.interpolate(mid, size=(150, 260), mode="bilinear", align_corners=False)[0]  # to the original size
    lab = seg_labels(logits, (192, 384), (150, 260), block=17)
    assert lab.dtype == np.uint8 and lab.shape == (150, 260)
    np.testing.assert_array_equal(lab, full.argmax(0).numpy())
    np.testing.assert_array_equal(seg_labels(logits, (192, 384)), mid[0].argmax(0).numpy())
    acc = np.zeros((19, 150, 260), np.float32)
    seg_probs_add(acc, logits, (192, 384), block=23)
    seg_probs_add(acc, logits[:, :, ::-1], (192, 384), flipped=True)
    np.testing.assert_allclose(acc, 2 * torch.softmax(full, 0).numpy(), atol=2e-6)


# ------------------------------------------------------------------------------------------------ metrics


def test_confusion_iou_hand_worked():
    gt = np.array([0, 0, 0, 1, 1, 2, 2, 2, 255, 255])
    pred = np.array([0, 0, 1, 1, 1, 2, 0, 2, 2, 0])
    cm = confusion_matrix(pred, gt, 3)
    # rows = gt: gt0 -> pred 0,0,1; gt1 -> 1,1; gt2 -> 2,0,2; two 255 pixels ignored
    np.testing.assert_array_equal(cm, [[2, 1, 0], [0, 2, 0], [1, 0, 2]])
    # IoU0 = 2 / (3 + 3 - 2) = 0.5; IoU1 = 2 / (2 + 3 - 2) = 2/3; IoU2 = 2 / (3 + 2 - 2) = 2/3
    np.testing.assert_allclose(iou_from_confusion(cm), [0.5, 2 / 3, 2 / 3])
    assert mean_iou(cm) == pytest.approx((0.5 + 2 / 3 + 2 / 3) / 3) == pytest.approx(0.611111, abs=1e-6)
    # a 4th class that never occurs is NaN and left out of the mean; one only predicted has IoU 0 and counts
    cm4 = confusion_matrix(pred, gt, 4)
    assert np.isnan(iou_from_confusion(cm4)[3]) and mean_iou(cm4) == pytest.approx(0.611111, abs=1e-6)
    cm5 = confusion_matrix(np.array([3, 0]), np.array([0, 0]), 4)  # gt0 -> pred3 once, pred0 once
    np.testing.assert_allclose(iou_from_confusion(cm5)[[0, 3]], [0.5, 0.0])  # IoU0 = 1/(2+1-1), IoU3 = 0/(0+1-0)


def test_topk_hand_worked():
    logits = np.array([[0.1, 0.5, 0.2, 0.9, 0.0, 0.3],  # label 1: order 3,1,5,2,0,4 -> top-1 no, top-2 yes
                       [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: top-1 yes
                       [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])  # label 4: order 5 then ties 0,1,2,3 (stable) -> top-5 no
    assert topk_correct(logits, np.array([1, 0, 4]), ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 2}
