"""Pre/post-processing for VOLO-D2 (ImageNet) and OCRNet-HRNetW18 (Cityscapes). numpy, PIL and cv2; no torch.

VOLO-D2 follows timm's eval transform with the model's ``crop_pct=0.96`` and bicubic interpolation
(``timm.data.transforms_imagenet_eval``, what sail-sg/volo ``validate.py`` builds)::

    torchvision Resize(233, BICUBIC)   short side -> floor(224 / 0.96) = 233, long side int(233 * long / short), PIL
    CenterCrop(224)                    top = int(round((h - 224) / 2)), Python round (half to even), as torchvision
    ToTensor + Normalize               x / 255, (x - mean) / std in float32, ImageNet mean/std

OCRNet follows the mmseg Cityscapes test pipeline of ``ocrnet_hr18_512x1024_160k_cityscapes``::

    Resize(scale=(2048, 1024), keep_ratio=True)   mmcv.imrescale: factor = min(2048 / long, 1024 / short),
                                                  size = int(w * f + 0.5), int(h * f + 0.5), cv2 INTER_LINEAR on uint8
    SegDataPreProcessor                           RGB, (x - mean) / std in float32 (0..255 scale)

and its 'whole' test mode: the network's 1/4-resolution logits are resized bilinearly (``align_corners=False``)
to the network input size, then to the original image size, then argmaxed. With flip or several scales the
softmax probabilities at the original size are averaged (mmseg ``aug_test`` / ``SegTTAModel``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

# Preprocessing facts, mirrored from deployzoo.models.volo / deployzoo.models.ocrnet (which import torch, and this
# module must not); tests/test_vision_data.py asserts they are equal.
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)
VOLO_INPUT_SIZE = 224
VOLO_RESIZE_SHORT_SIDE = 233  # floor(224 / crop_pct 0.96)
OCRNET_MEAN_RGB = (123.675, 116.28, 103.53)  # RGB on 0..255
OCRNET_STD_RGB = (58.395, 57.12, 57.375)
OCRNET_TEST_SCALE_WH = (2048, 1024)  # test Resize box (w, h), keep_ratio
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

__all__ = [
    "CITYSCAPES_PALETTE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OCRNET_MEAN_RGB",
    "OCRNET_STD_RGB",
    "OCRNET_TEST_SCALE_WH",
    "VOLO_INPUT_SIZE",
    "VOLO_RESIZE_SHORT_SIDE",
    "center_crop_box",
    "colorize",
    "mmcv_rescale_size",
    "ocrnet_input_size",
    "ocrnet_preprocess",
    "resize_bilinear",
    "resize_short_side",
    "seg_labels",
    "seg_probs_add",
    "softmax",
    "volo_crop",
    "volo_preprocess",
]

_IMNET_MEAN = np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)
_IMNET_STD = np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1)
_SEG_MEAN = np.asarray(OCRNET_MEAN_RGB, np.float32).reshape(3, 1, 1)
_SEG_STD = np.asarray(OCRNET_STD_RGB, np.float32).reshape(3, 1, 1)


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        what = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected a uint8 (H, W, 3) RGB array (see deployzoo.process.image.load_image), got {what}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"image has 0 pixels: {rgb.shape}")


# ---------------------------------------------------------------------------------------------------- VOLO-D2


def resize_short_side(rgb: np.ndarray, size: int = VOLO_RESIZE_SHORT_SIDE) -> np.ndarray:
    """torchvision ``Resize(size)`` on a PIL image: short side -> ``size``, long side ``int(size * long / short)``,
    PIL bicubic (which antialiases when shrinking). uint8 (H, W, 3) -> uint8 (H', W', 3)."""
    _check_rgb(rgb)
    h, w = rgb.shape[:2]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) == (w, h):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BICUBIC))


def center_crop_box(h: int, w: int, size: int = VOLO_INPUT_SIZE) -> tuple[int, int]:
    """torchvision ``center_crop`` offsets (top, left): ``int(round((h - size) / 2))``, Python rounding (half to
    even: a 233-pixel side gives offset 4, not 5)."""
    return int(round((h - size) / 2.0)), int(round((w - size) / 2.0))


def volo_crop(rgb: np.ndarray) -> np.ndarray:
    """Resize (short side 233, bicubic) + centre crop: uint8 (H, W, 3) -> uint8 (224, 224, 3)."""
    r = resize_short_side(rgb, VOLO_RESIZE_SHORT_SIDE)
    top, left = center_crop_box(r.shape[0], r.shape[1], VOLO_INPUT_SIZE)
    return r[top:top + VOLO_INPUT_SIZE, left:left + VOLO_INPUT_SIZE]


def volo_preprocess(rgb: np.ndarray) -> np.ndarray:
    """VOLO-D2 eval transform: uint8 RGB (H, W, 3) -> float32 (3, 224, 224), ImageNet-normalised.

    Bit-identical to timm/torchvision ``Resize(233, bicubic) -> CenterCrop(224) -> ToTensor -> Normalize``.
    """
    x = volo_crop(rgb).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # (3, 224, 224) in [0, 1]
    return np.ascontiguousarray((x - _IMNET_MEAN) / _IMNET_STD, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------- OCRNet


def mmcv_rescale_size(wh: tuple[int, int], scale: tuple[int, int] | float) -> tuple[int, int]:
    """``mmcv.rescale_size``: (w, h) -> (new_w, new_h). A pair ``scale`` is the box (long, short edge) the image must
    fit in with its aspect ratio kept; a number is a plain factor. Sizes round as ``int(x * f + 0.5)``."""
    w, h = wh
    if isinstance(scale, (int, float)):
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        f = float(scale)
    else:
        f = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(w * f + 0.5), int(h * f + 0.5)


def ocrnet_input_size(hw: tuple[int, int], scale_wh: tuple[int, int] | None = OCRNET_TEST_SCALE_WH,
                      ratio: float = 1.0) -> tuple[int, int]:
    """Network input (h, w) for an image of size ``hw``: the test ``Resize(scale_wh, keep_ratio=True)`` box, multiplied
    by ``ratio`` for multi-scale testing (mmseg 0.x ``MultiScaleFlipAug(img_ratios=...)``: the box is
    ``(int(2048 * r), int(1024 * r))``). ``scale_wh=None`` keeps the image size (times ``ratio``)."""
    h, w = hw
    if scale_wh is None:
        if ratio == 1.0:
            return h, w
        nw, nh = mmcv_rescale_size((w, h), float(ratio))
    else:
        box = (int(scale_wh[0] * ratio), int(scale_wh[1] * ratio))
        nw, nh = mmcv_rescale_size((w, h), box)
    return nh, nw


def ocrnet_preprocess(rgb: np.ndarray, scale_wh: tuple[int, int] | None = OCRNET_TEST_SCALE_WH,
                      ratio: float = 1.0) -> np.ndarray:
    """mmseg Cityscapes test pipeline: uint8 RGB (H, W, 3) -> float32 (3, h, w), normalised RGB.

    A 1024x2048 Cityscapes frame stays 1024x2048 (``Resize((2048, 1024), keep_ratio=True)`` is then an identity);
    other sizes are rescaled by mmcv's rule (bilinear, cv2 on uint8, as mmcv's default backend).
    """
    _check_rgb(rgb)
    h, w = ocrnet_input_size(rgb.shape[:2], scale_wh, ratio)
    if (h, w) != rgb.shape[:2]:
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)
    x = rgb.transpose(2, 0, 1).astype(np.float32)  # (3, h, w)
    return np.ascontiguousarray((x - _SEG_MEAN) / _SEG_STD, dtype=np.float32)


def _linear_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of PyTorch's bilinear resize along one axis (``align_corners=False``, size given):
    ``src = (in / out) * (dst + 0.5) - 0.5`` clamped at 0, ``i0 = floor(src)``, ``i1 = min(i0 + 1, in - 1)``,
    ``lambda = src - i0``; float32 as ``upsample_bilinear2d`` on CPU."""
    scale = np.float32(n_in) / np.float32(n_out)
    src = scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5)
    src = np.maximum(src, np.float32(0.0))
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    lam = np.clip(src - i0.astype(np.float32), 0.0, 1.0).astype(np.float32)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, lam


def _resize_rows(x: np.ndarray, x_rows: np.ndarray, src_h: int, size: tuple[int, int],
                 rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the bilinear resize of a (K, src_h, w) map to ``size``, given only the source rows ``x_rows``
    (sorted) as ``x`` (K, len(x_rows), w). Width first, then height, as PyTorch's CPU kernel."""
    H, W = size
    i0h, i1h, lh = _linear_weights(src_h, H)
    i0w, i1w, lw = _linear_weights(x.shape[-1], W)
    i0h, i1h, lh = i0h[rows], i1h[rows], lh[rows]
    p0, p1 = np.searchsorted(x_rows, i0h), np.searchsorted(x_rows, i1h)
    need = np.unique(np.concatenate([p0, p1]))
    xs = x[:, need, :]  # (K, n, w)
    t = xs[:, :, i0w] * (np.float32(1.0) - lw) + xs[:, :, i1w] * lw  # (K, n, W)
    q0, q1 = np.searchsorted(need, p0), np.searchsorted(need, p1)
    lh = lh[None, :, None]
    return t[:, q0, :] * (np.float32(1.0) - lh) + t[:, q1, :] * lh  # (K, len(rows), W)


def _rows_needed(src_h: int, H: int, rows: np.ndarray) -> np.ndarray:
    i0, i1, _ = _linear_weights(src_h, H)
    return np.unique(np.concatenate([i0[rows], i1[rows]]))


def resize_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) or (B, K, h, w) float -> (..., H, W) float32, as ``F.interpolate(mode='bilinear',
    align_corners=False)`` with ``size`` given (no antialiasing)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 4:
        return np.stack([resize_bilinear(b, size) for b in x])
    if x.ndim != 3:
        raise ValueError(f"expected (K, h, w) or (B, K, h, w), got {x.shape}")
    return _resize_rows(x, np.arange(x.shape[1]), x.shape[1], size, np.arange(int(size[0])))


def _logit_rows(logits: np.ndarray, input_hw: tuple[int, int], ori_hw: tuple[int, int],
                rows: np.ndarray) -> np.ndarray:
    """Rows of mmseg's two-step resize: (K, h, w) -> input (Hi, Wi) -> original (H, W), computed for ``rows`` only."""
    h = logits.shape[1]
    all_h = np.arange(h)
    if tuple(input_hw) == tuple(ori_hw):
        return _resize_rows(logits, all_h, h, ori_hw, rows)
    mid = _rows_needed(input_hw[0], ori_hw[0], rows)  # rows of the input-size map the output rows read
    m = _resize_rows(logits, all_h, h, input_hw, mid)  # (K, len(mid), Wi)
    return _resize_rows(m, mid, input_hw[0], ori_hw, rows)


def _blocks(H: int, block: int):
    for a in range(0, H, block):
        yield np.arange(a, min(a + block, H))


def seg_labels(logits: np.ndarray, input_hw: tuple[int, int], ori_hw: tuple[int, int] | None = None,
               block: int = 128) -> np.ndarray:
    """Network logits (K, h, w) -> uint8 (H, W) label map at the original size: bilinear to the input size, then to
    ``ori_hw`` (skipped when equal), argmax over K (first maximum wins, as torch). Computed in row blocks, so memory
    stays at K x block x W floats."""
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 3:
        raise ValueError(f"expected logits (K, h, w), got {logits.shape}")
    if logits.shape[0] > 256:
        raise ValueError(f"{logits.shape[0]} classes do not fit a uint8 label map")
    ori_hw = tuple(input_hw) if ori_hw is None else tuple(ori_hw)
    out = np.empty(ori_hw, np.uint8)
    for rows in _blocks(ori_hw[0], block):
        out[rows[0]:rows[-1] + 1] = _logit_rows(logits, input_hw, ori_hw, rows).argmax(0)
    return out


def softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax in float32."""
    x = np.asarray(x, dtype=np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def seg_probs_add(acc: np.ndarray, logits: np.ndarray, input_hw: tuple[int, int], flipped: bool = False,
                  block: int = 128) -> np.ndarray:
    """Test-time augmentation: ``acc`` (K, H, W) += softmax of the view's logits resized to the original size.

    ``flipped`` views (input flipped left-right) are flipped back first. Bilinear resizing with half-pixel centres
    commutes with the flip, so flipping the small logits equals mmseg's flipping at full size."""
    logits = np.asarray(logits, dtype=np.float32)
    if flipped:
        logits = np.ascontiguousarray(logits[:, :, ::-1])
    ori_hw = acc.shape[1:]
    for rows in _blocks(ori_hw[0], block):
        acc[:, rows[0]:rows[-1] + 1] += softmax(_logit_rows(logits, input_hw, ori_hw, rows), axis=0)
    return acc


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]] = CITYSCAPES_PALETTE) -> np.ndarray:
    """uint8 (H, W) train ids -> uint8 (H, W, 3) RGB with the Cityscapes colours; ids without a colour are black."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8)
    return lut[labels]

