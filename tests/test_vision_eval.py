"""End-to-end ImageNet / Cityscapes evaluation and the vision API, with runners whose answers are known exactly,
then once with the real VOLO-D2 and OCRNet-HRNetW18 architectures on random weights."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_vision_data import BLUE, GREEN, RED, make_cityscapes, make_imagenet, solid, stripes_gt, stripes_image

from deployzoo.data.imagenet import open_imagenet
from deployzoo.engines import EagerRunner
from deployzoo.errors import CheckpointError, DeployzooError, ImageError
from deployzoo.evaluation import classification, segmentation
from deployzoo.evaluation.classification import evaluate_imagenet, subset_indices
from deployzoo.evaluation.report import write_json
from deployzoo.evaluation.segmentation import evaluate_cityscapes
from deployzoo.models.ocrnet import CITYSCAPES_PALETTE, PIXEL_MEAN_RGB, PIXEL_STD_RGB
from deployzoo.process.vision import ocrnet_preprocess, volo_preprocess
from deployzoo.predict import Classifier, Segmenter, from_checkpoint, load_runner


@pytest.fixture
def one_thread():
    """The real architectures run single-threaded: on shared CPUs OpenMP barriers spin (HRNet at 64x128 takes 0.05 s
    on one thread and seconds on two busy ones)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class ColourRunner:
    """(B, 3, 224, 224) -> (B, 1000): logits 0, 1, 2 = mean of the normalised R, G, B planes, the rest -10.

    A red image gives top-1 class 0, green 1, blue 2; every top-5 is the three colours then classes 3, 4."""

    name = "colour"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = np.full((x.shape[0], 1000), -10.0, np.float32)
        out[:, :3] = x.mean(axis=(2, 3))
        return out


class PaletteRunner:
    """(B, 3, H, W) OCRNet input -> (B, 19, H/4, W/4): one-hot (x10) of the Cityscapes colour nearest to each 4x4
    block's mean colour. On images of 4-pixel-aligned vertical stripes the full-size argmax is the stripe colour."""

    name = "palette"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean, std = np.float32(PIXEL_MEAN_RGB).reshape(1, 3, 1, 1), np.float32(PIXEL_STD_RGB).reshape(1, 3, 1, 1)
        rgb = x * std + mean
        B, _, H, W = rgb.shape
        pooled = rgb.reshape(B, 3, H // 4, 4, W // 4, 4).mean(axis=(3, 5))  # (B, 3, H/4, W/4)
        pal = np.float32(CITYSCAPES_PALETTE)  # (19, 3)
        d = ((pooled[:, None] - pal[None, :, :, None, None]) ** 2).sum(2)  # (B, 19, H/4, W/4)
        return (10.0 * (d == d.min(1, keepdims=True))).astype(np.float32)


# ------------------------------------------------------------------------------------------------ ImageNet


def test_evaluate_imagenet_known_answers(tmp_path):
    data = make_imagenet(tmp_path)
    res = evaluate_imagenet(ColourRunner(), data, batch_size=2, progress=False, workers=0)
    # a_red (0) -> 0 top-1 ok; b_green (0) -> 1 wrong, 0 in top-5; c_bad unreadable: wrong; green (1) ok;
    # blue (2) ok; blue (999) -> 2, 999 not in top-5 (0, 1, 2, 3, 4 lead). top-1 3/6, top-5 4/6.
    assert (res.n, res.correct, res.top5_correct, res.errors) == (6, 3, 4, 1)
    assert res.accuracy == res.top1 == 0.5 and res.top5 == pytest.approx(4 / 6)
    p = {q["key"]: q for q in res.predictions}
    assert [q["key"] for q in res.predictions][0] == "n01440764/a_red.JPEG"
    assert p["n01440764/b_green.JPEG"]["pred"] == 1 and p["n01440764/b_green.JPEG"]["top5_correct"]
    assert [c for c, _ in p["n01440764/a_red.JPEG"]["topk"]] == [0, 2, 1, 3, 4]
    assert "cannot be decoded" in p["n01440764/c_bad.JPEG"]["error"] and not p["n01440764/c_bad.JPEG"]["correct"]
    assert p["n15075141/blue.JPEG"] | {"topk": None} == {"key": "n15075141/blue.JPEG", "label": 999, "pred": 2,
                                                         "correct": False, "top5_correct": False, "topk": None}
    assert res.random_weights is False and res.runner == "colour"
    out = write_json(res.to_json(), tmp_path / "r.json")
    j = json.loads(out.read_text())
    assert {j[k] for k in ("model", "n", "correct", "accuracy")} >= {"volo_d2", 6, 3, 0.5}
    text = classification.format_report(res)
    assert "top1: 0.500000" in text and "top5: 0.666667" in text
    assert "unreadable: image n01440764/c_bad.JPEG: cannot be decoded" in text
    assert "| 6 |             3 |   50.00 |   66.67 |      1 |" in text
    assert "WARNING" not in text


def test_evaluate_imagenet_workers_limit_and_label_file(tmp_path):
    data = make_imagenet(tmp_path)
    res = evaluate_imagenet(ColourRunner(), data, batch_size=4, progress=False, workers=2, limit=3)
    assert subset_indices(6, 3) == [0, 2, 5]  # linspace(0, 5, 3) = 0, 2.5, 5 -> round half to even
    assert [q["key"] for q in res.predictions] == ["n01440764/a_red.JPEG", "n01440764/c_bad.JPEG",
                                                   "n15075141/blue.JPEG"]
    assert (res.n, res.correct, res.errors) == (3, 1, 1)
    d = tmp_path / "flat"
    d.mkdir()
    for i, c in enumerate((RED, GREEN, BLUE)):
        solid(c).save(d / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
    (tmp_path / "val.txt").write_text("".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG {i}\n" for i in range(3)))
    res = evaluate_imagenet(ColourRunner(), d, label_file=tmp_path / "val.txt", progress=False)
    assert (res.n, res.correct, res.layout) == (3, 3, "label_file")


def test_classifier_api(tmp_path):
    clf = Classifier(ColourRunner(), topk=3)
    r = clf(np.full((50, 70, 3), GREEN, np.uint8))
    assert r.index == 1 and r.wnid == "n01443537" and r.error is None and len(r.topk) == 3
    # logits G = (1 - 0.456)/0.224 = 2.4286, B = -0.406/0.225 = -1.8044, R = -0.485/0.229 = -2.1179, 997 x -10:
    # softmax = e^2.4286 / (11.343 + 0.1646 + 0.1203 + 997 e^-10) = 11.343 / 11.673 = 0.9717; top-3 sum 0.99612
    assert [c for c, _ in r.topk] == [1, 2, 0] and r.topk[0][1] == pytest.approx(0.97172, abs=1e-4)
    assert sum(p for _, p in r.topk) == pytest.approx(0.996122, abs=1e-5)
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    out = clf([np.full((50, 70, 3), RED, np.uint8), tmp_path / "bad.jpg", tmp_path / "missing.jpg"])
    assert out[0].index == 0 and "not a recognised image format" in out[1].error and "not found" in out[2].error
    assert out[1].index == -1 and out[1].topk == []
    with pytest.raises(ImageError):
        clf(tmp_path / "bad.jpg")
    with pytest.raises(DeployzooError, match="not \\(B=1, classes\\) logits"):
        Classifier(lambda x: np.zeros((1, 19, 4, 4), np.float32))(np.zeros((8, 8, 3), np.uint8))


def test_checkpoint_required_and_random_weights_flagged():
    with pytest.raises(CheckpointError, match="d2_224_85.2.pth.tar"):
        from_checkpoint("volo_d2")
    with pytest.raises(CheckpointError, match="download.openmmlab.com"):
        Segmenter.from_checkpoint()
    with pytest.raises(DeployzooError, match="not both"):
        load_runner("volo_d2", "x.pth", random_weights=True)
    with pytest.raises(DeployzooError, match="segmentation model"):
        Classifier.from_checkpoint(model="ocrnet_hr18", random_weights=True)


def test_volo_d2_random_weights_end_to_end(tmp_path, one_thread):
    data = make_imagenet(tmp_path)
    with pytest.warns(UserWarning, match="random weights"):
        clf = from_checkpoint("volo_d2", random_weights=True)
    assert isinstance(clf, Classifier) and clf.random_weights and clf.source == "random weights (seed 0)"
    ds = open_imagenet(data)
    res = evaluate_imagenet(clf.runner, ds, batch_size=2, progress=False, random_weights=True, source=clf.source,
                            limit=3)  # samples 0, 2 (unreadable), 5
    assert (res.n, res.errors) == (3, 1) and res.random_weights
    # the eval path gives exactly the top-5 of the model run directly on the same pre-processed images
    x = torch.from_numpy(np.stack([volo_preprocess(ds.load(i)) for i in (0, 5)]))
    with torch.inference_mode():
        logits = clf.runner.model(x)
    assert logits.shape == (2, 1000)
    ref = torch.sort(logits, dim=1, descending=True, stable=True).indices[:, :5].tolist()
    assert [[c for c, _ in res.predictions[j]["topk"]] for j in (0, 2)] == ref
    assert res.correct == (ref[0][0] == 0) + (ref[1][0] == 999)
    assert classification.format_report(res).splitlines()[-3] == classification.RANDOM_WEIGHTS_LINE


# ------------------------------------------------------------------------------------------------ Cityscapes


def test_evaluate_cityscapes_known_answers(tmp_path, capsys):
    data = make_cityscapes(tmp_path)
    res = evaluate_cityscapes(PaletteRunner(), data, test_scale=(128, 64), batch_size=2, workers=0,
                              out_dir=tmp_path / "pred")
    # Per image (see test_vision_data stripes): confusion rows gt, columns pred
    #   road:     road 1536                                (cols 0-31, rows 16-63)
    #   sidewalk: road 768, sidewalk 768                    (cols 32-47 are painted road)
    #   car:      car 1536
    #   sky:      road 768, sidewalk 256, car 512, building 512   (rows 0-15, painted by column)
    # IoU road = 1536 / (1536 + 3072 - 1536) = 0.5; sidewalk = 768 / (1536 + 1024 - 768) = 3/7;
    # car = 1536 / (1536 + 2048 - 1536) = 0.75; sky = 0 / 2048 = 0; building = 0 / 512 = 0 (predicted only);
    # the 14 other classes never occur -> NaN, not averaged. mIoU = (0.5 + 3/7 + 0.75) / 5 = 0.335714
    # aAcc = (1536 + 768 + 1536) / 6656 = 15/26. Both images are identical, so the ratios hold for the set.
    assert (res.n, res.evaluated, res.errors) == (2, 2, 0)
    iou = dict(zip(res.class_names, res.iou))
    assert iou["road"] == 0.5 and iou["sidewalk"] == pytest.approx(3 / 7, abs=1e-6) and iou["car"] == 0.75
    assert iou["sky"] == 0.0 and iou["building"] == 0.0 and iou["person"] is None
    assert res.miou == pytest.approx((0.5 + 3 / 7 + 0.75) / 5) == pytest.approx(0.335714, abs=1e-6)
    assert res.accuracy == res.miou
    assert res.aacc == pytest.approx(15 / 26) and (res.correct, res.pixels) == (7680, 13312)
    # mAcc: road 1, sidewalk 0.5, car 1, sky 0 -> 0.625
    assert res.macc == pytest.approx(0.625)
    cm = np.array(res.confusion)
    assert cm[10, [0, 1, 13, 2]].tolist() == [1536, 512, 1024, 1024] and cm.sum() == 13312
    err = capsys.readouterr().err
    assert "[1/2] aachen/aachen_000000_000019  64x128  infer" in err and "pixel acc 0.5769" in err
    from PIL import Image

    pred = np.asarray(Image.open(tmp_path / "pred" / "bremen" / "bremen_000000_000019_pred_labelTrainIds.png"))
    assert pred[0, :48].tolist() == [0] * 48 and pred[63, 100] == 2
    text = segmentation.format_report(res)
    assert "mIoU: 33.57  aAcc: 57.69  mAcc: 62.50" in text and "| sidewalk      | 42.86 |  50.00 |" in text
    json.dumps(res.to_json(), allow_nan=False)  # NaN-free JSON


def test_evaluate_cityscapes_flip_errors_and_limit(tmp_path):
    data = make_cityscapes(tmp_path)
    res = evaluate_cityscapes(PaletteRunner(), data, flip=True, test_scale=None, progress=False, workers=2)
    assert res.miou == pytest.approx(0.335714, abs=1e-6) and res.flip  # the runner is flip-equivariant
    g = data / "gtFine" / "val" / "aachen" / "aachen_000000_000019_gtFine_labelTrainIds.png"
    g.write_bytes(g.read_bytes()[:40])
    res = evaluate_cityscapes(PaletteRunner(), data, test_scale=None, progress=False)
    assert (res.n, res.evaluated, res.errors) == (2, 1, 1)
    assert "not a recognised image format" in res.error_list[0]["error"]
    assert res.miou == pytest.approx(0.335714, abs=1e-6) and res.pixels == 6656
    assert "1 of 2 images could not be read and are not in the metrics" in segmentation.format_report(res)
    res = evaluate_cityscapes(PaletteRunner(), data, test_scale=None, progress=False, limit=1)
    assert [p["key"] for p in res.predictions] == ["aachen/aachen_000000_000019"] and res.errors == 1


def test_segmenter_api():
    img = stripes_image()
    seg = Segmenter(PaletteRunner(), test_scale=None)
    out = seg(img)
    assert out.dtype == np.uint8 and out.shape == (64, 128)
    assert out[0, 0] == 0 and out[0, 50] == 1 and out[10, 70] == 13 and out[40, 120] == 2
    batch = seg([img, b"junk"])
    assert np.array_equal(batch[0].labels, out) and batch[1].labels is None and "not a recognised" in batch[1].error
    with pytest.raises(DeployzooError, match="scales must be positive"):
        Segmenter(PaletteRunner(), scales=())
    with pytest.raises(DeployzooError, match="not \\(B=1, classes, h, w\\) logits"):
        Segmenter(lambda x: np.zeros((1, 1000), np.float32), test_scale=None)(img)


def test_ocrnet_random_weights_end_to_end(tmp_path, one_thread):
    from deployzoo.models.ocrnet import ocrnet_hr18

    data = make_cityscapes(tmp_path)
    torch.manual_seed(0)
    model = ocrnet_hr18()
    runner = EagerRunner(model)
    res = evaluate_cityscapes(runner, data, test_scale=(128, 64), progress=False, random_weights=True)
    # reference: mmseg-style predict in torch on the same input
    x = torch.from_numpy(ocrnet_preprocess(stripes_image(), (128, 64)))[None]
    with torch.inference_mode():
        pred = model.predict_logits(x, (64, 128))[0].argmax(0).numpy()
    gt = stripes_gt()
    m = gt != 255
    cm = np.bincount(gt[m].astype(int) * 19 + pred[m], minlength=361).reshape(19, 19) * 2  # two identical frames
    np.testing.assert_array_equal(np.array(res.confusion), cm)
    assert res.aacc == pytest.approx(np.trace(cm) / cm.sum()) and res.random_weights
    assert segmentation.RANDOM_WEIGHTS_LINE in segmentation.format_report(res)
    # flip + two scales: summed softmax of both flips at 0.5 and 1.0, each resized to the input then to 64x128
    seg = Segmenter(runner, flip=True, scales=(0.5, 1.0), test_scale=(128, 64))
    got = seg(stripes_image())
    acc = torch.zeros(19, 64, 128)
    with torch.inference_mode():
        for r in (0.5, 1.0):
            xi = torch.from_numpy(ocrnet_preprocess(stripes_image(), (128, 64), r))[None]
            for flip in (False, True):
                lg = model(xi.flip(3) if flip else xi)
                lg = F.interpolate(lg, size=xi.shape[2:], mode="bilinear", align_corners=False)
                lg = lg.flip(3) if flip else lg
                acc += F.interpolate(lg, size=(64, 128), mode="bilinear", align_corners=False)[0].softmax(0)
    ref = acc.argmax(0).numpy()
    assert (got == ref).mean() > 0.999
