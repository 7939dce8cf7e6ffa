"""OCRNet with an HRNetV2-W18 backbone for Cityscapes (19 classes), numerically faithful to mmsegmentation.

Reference: mmsegmentation 1.2.2 config ``ocrnet/ocrnet_hr18_4xb2-160k_cityscapes-512x1024.py`` (v0.x name
``ocrnet_hr18_512x1024_160k_cityscapes.py``) built on ``_base_/models/ocrnet_hr18.py``:

* ``backbone``      HRNet (``mmseg/models/backbones/hrnet.py``), W18: stage1 4 Bottlenecks (64 -> 256),
                    stage2/3/4 with 1/4/3 HRModules of 4 BasicBlocks per branch, branches 18/36/72/144 channels.
* ``decode_head.0`` FCNHead (auxiliary, the "soft object regions"): resize_concat -> 270 channels,
                    one 1x1 ConvModule 270->270, ``conv_seg`` 270->19.
* ``decode_head.1`` OCRHead: resize_concat -> 3x3 ConvModule 270->512 (``bottleneck``), SpatialGatherModule
                    (class centres from softmax of the aux logits over positions), ObjectAttentionBlock
                    (``object_context_block``), ``conv_seg`` 512->19.

The segmentor is a CascadeEncoderDecoder: ``aux = decode_head[0](feats)``; ``ocr = decode_head[1](feats, aux)``.
At test time (``test_cfg.mode='whole'``) mmseg resizes the 1/4-resolution OCR logits bilinearly
(``align_corners=False``) to the network input size and then to the original image size, and argmaxes.

Module and parameter names follow mmseg/mmcv exactly (``ConvModule`` = ``conv``/``bn``/ReLU, BN layers of the
HRNet stem and blocks named ``bn1``/``bn2``/``bn3``, ``nn.Sequential`` indices for transitions and fuse layers),
so the published checkpoint (``{'meta', 'state_dict'}``, 1888 tensors) loads with ``strict=True``.
SyncBN of the training config is plain ``BatchNorm2d`` here (identical in eval mode).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from deployzoo.checkpoint import load_strict, read_checkpoint, unwrap_state_dict

MODEL_NAME = "ocrnet_hr18_cityscapes"

#: The published mmseg checkpoint of this model (v0.5 model zoo; same file for the 1.x config).
CHECKPOINT_URL = (
    "https://download.openmmlab.com/mmsegmentation/v0.5/ocrnet/ocrnet_hr18_512x1024_160k_cityscapes/"
    "ocrnet_hr18_512x1024_160k_cityscapes_20200602_191001-b9172d0c.pth"
)

NUM_CLASSES = 19
HRNET_W18_CHANNELS = (18, 36, 72, 144)
#: Output stride of the logits returned by :meth:`OCRNetHR18.forward` (1/4 resolution).
OUTPUT_STRIDE = 4
#: Inputs whose height and width are multiples of this go through the HRNet fuse layers with exact 2x scaling.
SIZE_DIVISOR = 32

# ---------------------------------------------------------------------------------------------------------
# Preprocessing facts (mmseg SegDataPreProcessor + Cityscapes test pipeline of this config)
# ---------------------------------------------------------------------------------------------------------
#: Per-channel mean, in RGB order, on 0..255 pixel values.
PIXEL_MEAN_RGB = (123.675, 116.28, 103.53)
#: Per-channel std, in RGB order, on 0..255 pixel values.
PIXEL_STD_RGB = (58.395, 57.12, 57.375)
#: Images are loaded BGR (cv2) and converted to RGB before normalization (``bgr_to_rgb=True`` / v0.x ``to_rgb``).
TO_RGB = True
#: Test ``Resize(scale=(2048, 1024), keep_ratio=True)``: (w, h) as mmcv writes it. A 1024x2048 Cityscapes
#: image is not changed by it.
TEST_SCALE_WH = (2048, 1024)
TEST_KEEP_RATIO = True
#: Whole-image inference size (h, w) for Cityscapes frames: no sliding window, no padding.
TEST_SIZE_HW = (1024, 2048)
#: Inference mode of the config's ``test_cfg``.
TEST_MODE = "whole"
#: Training crop (h, w), for reference only.
TRAIN_CROP_HW = (512, 1024)

# ---------------------------------------------------------------------------------------------------------
# Cityscapes label facts
# ---------------------------------------------------------------------------------------------------------
#: The 19 evaluation classes, in trainId order (mmseg ``CityscapesDataset.METAINFO['classes']``).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

#: RGB colour per trainId (mmseg ``CityscapesDataset.METAINFO['palette']``, the official Cityscapes colours).
CITYSCAPES_PALETTE = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

#: Label value that is ignored in evaluation (mmseg ``ignore_index``).
IGNORE_INDEX = 255

#: Official Cityscapes ``labelId -> trainId`` (cityscapesScripts ``helpers/labels.py``), ids 0..33.
#: Everything that is not one of the 19 classes maps to 255 (ignored). The ``license plate`` label has
#: id -1 / trainId -1 officially; it never appears in ``*_labelIds.png`` and is ignored as well.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID = {
    0: 255,   # unlabeled
    1: 255,   # ego vehicle
    2: 255,   # rectification border
    3: 255,   # out of roi
    4: 255,   # static
    5: 255,   # dynamic
    6: 255,   # ground
    7: 0,     # road
    8: 1,     # sidewalk
    9: 255,   # parking
    10: 255,  # rail track
    11: 2,    # building
    12: 3,    # wall
    13: 4,    # fence
    14: 255,  # guard rail
    15: 255,  # bridge
    16: 255,  # tunnel
    17: 5,    # pole
    18: 255,  # polegroup
    19: 6,    # traffic light
    20: 7,    # traffic sign
    21: 8,    # vegetation
    22: 9,    # terrain
    23: 10,   # sky
    24: 11,   # person
    25: 12,   # rider
    26: 13,   # car
    27: 14,   # truck
    28: 15,   # bus
    29: 255,  # caravan
    30: 255,  # trailer
    31: 16,   # train
    32: 17,   # motorcycle
    33: 18,   # bicycle
}

#: 256-entry lookup table for uint8 ``*_labelIds.png`` maps: ``train_ids = LUT[label_ids]``; ids > 33 -> 255.
CITYSCAPES_LABEL_ID_TO_TRAIN_ID_LUT = tuple(CITYSCAPES_LABEL_ID_TO_TRAIN_ID.get(i, IGNORE_INDEX) for i in range(256))


# ---------------------------------------------------------------------------------------------------------
# Building blocks (mmcv / mmseg naming)
# ---------------------------------------------------------------------------------------------------------
class ConvModule(nn.Module):
    """mmcv ``ConvModule`` with conv -> BN -> ReLU; the conv has no bias because a norm follows (``bias='auto'``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _conv_bn(in_ch: int, out_ch: int, kernel_size: int, stride: int, relu: bool) -> nn.Sequential:
    """``Sequential(conv, BN[, ReLU])`` as HRNet's transition and fuse layers build it (keys ``.0``/``.1``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """mmseg ResNet ``BasicBlock`` (expansion 1): 3x3 conv-BN-ReLU, 3x3 conv-BN, + identity, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """mmseg ResNet ``Bottleneck`` (style 'pytorch', expansion 4): 1x1, 3x3 (stride here), 1x1, + identity, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _upsample_to(x: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """HRNet fuse upsampling: mmseg ``Upsample(scale_factor=factor)`` (to ``int(h*factor), int(w*factor)``),
    then ``resize`` to the target branch size; both bilinear, ``align_corners=False``.

    When the first step already lands on ``size`` (inputs divisible by 32), the second resize is an exact identity
    and is skipped, so the exported graph has a single Resize per fuse edge.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    first = (int(h * float(factor)), int(w * float(factor)))
    x = F.interpolate(x, size=first, mode="bilinear", align_corners=False)
    if first != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return x


class HRModule(nn.Module):
    """One HRNet high-resolution module: per-branch BasicBlocks, then multi-resolution fusion (all outputs kept)."""

    def __init__(self, channels: tuple[int, ...], num_blocks: int):
        super().__init__()
        self.num_branches = n = len(channels)
        # branches.{i}.{b}: BasicBlocks; in == out channels, so there is no downsample.
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(c, c) for _ in range(num_blocks)]) for c in channels
        )
        # fuse_layers.{i}.{j}: how branch j reaches output branch i.
        #   j > i: Sequential(1x1 conv c_j->c_i, BN) then bilinear upsampling by 2**(j-i) (no params)
        #   j == i: None (identity)
        #   j < i: i-j stride-2 3x3 convs; all but the last keep c_j and end in ReLU, the last maps to c_i, no ReLU
        fuse = []
        for i in range(n):
            row: list[nn.Module | None] = []
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, 1, relu=False))
                elif j == i:
                    row.append(None)
                else:
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        steps.append(_conv_bn(channels[j], channels[i] if last else channels[j], 3, 2, relu=not last))
                    row.append(nn.Sequential(*steps))
            fuse.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse) if n > 1 else None
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        out = []
        for i in range(self.num_branches):
            # Summation order j = 0..n-1 as in mmseg (float addition order matters for bit-exactness).
            y = None
            for j in range(self.num_branches):
                if j == i:
                    t = xs[j]
                elif j > i:
                    t = _upsample_to(self.fuse_layers[i][j](xs[j]), 2 ** (j - i), xs[i].shape[-2:])
                else:
                    t = self.fuse_layers[i][j](xs[j])
                y = t if y is None else y + t
            out.append(self.relu(y))
        return out


class HRNetW18(nn.Module):
    """HRNetV2-W18 backbone as configured in ``_base_/models/ocrnet_hr18.py``; returns 4 maps at strides 4..32.

    Input (B,3,H,W) -> [(B,18,H/4,W/4), (B,36,H/8,W/8), (B,72,H/16,W/16), (B,144,H/32,W/32)].
    """

    def __init__(self, in_channels: int = 3):
        super().__init__()
        c2, c3, c4 = HRNET_W18_CHANNELS[:2], HRNET_W18_CHANNELS[:3], HRNET_W18_CHANNELS
        # stem: two stride-2 3x3 convs -> 1/4 resolution, 64 channels
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        # stage 1: 4 Bottlenecks 64 -> 256 (the first with a 1x1 conv-BN projection)
        down = nn.Sequential(nn.Conv2d(64, 256, 1, bias=False), nn.BatchNorm2d(256))
        self.layer1 = nn.Sequential(Bottleneck(64, 64, downsample=down), *[Bottleneck(256, 64) for _ in range(3)])
        # transition1: 256 -> 18 (3x3 s1) and 256 -> 36 (3x3 s2, nested one level deeper)
        self.transition1 = nn.ModuleList(
            [_conv_bn(256, c2[0], 3, 1, relu=True), nn.Sequential(_conv_bn(256, c2[1], 3, 2, relu=True))]
        )
        self.stage2 = nn.Sequential(HRModule(c2, 4))
        # transition2/3: existing branches pass through (None); a new branch from the lowest-resolution one
        self.transition2 = nn.ModuleList([None, None, nn.Sequential(_conv_bn(c2[1], c3[2], 3, 2, relu=True))])
        self.stage3 = nn.Sequential(*[HRModule(c3, 4) for _ in range(4)])
        self.transition3 = nn.ModuleList([None, None, None, nn.Sequential(_conv_bn(c3[2], c4[3], 3, 2, relu=True))])
        self.stage4 = nn.Sequential(*[HRModule(c4, 4) for _ in range(3)])

    @staticmethod
    def _run_stage(stage: nn.Sequential, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.relu(self.bn1(self.conv1(x)))  # (B,64,H/2,W/2)
        x = self.relu(self.bn2(self.conv2(x)))  # (B,64,H/4,W/4)
        x = self.layer1(x)  # (B,256,H/4,W/4)
        ys = [t(x) for t in self.transition1]  # [(B,18,H/4,W/4), (B,36,H/8,W/8)]
        ys = self._run_stage(self.stage2, ys)
        ys = [ys[i] if t is None else t(ys[-1]) for i, t in enumerate(self.transition2)]  # + (B,72,H/16,W/16)
        ys = self._run_stage(self.stage3, ys)
        ys = [ys[i] if t is None else t(ys[-1]) for i, t in enumerate(self.transition3)]  # + (B,144,H/32,W/32)
        return self._run_stage(self.stage4, ys)


def resize_concat(feats: list[torch.Tensor]) -> torch.Tensor:
    """mmseg ``input_transform='resize_concat'``: every map resized bilinearly (``align_corners=False``) to the size
    of the first, then concatenated on channels: 4 maps -> (B,18+36+72+144=270,H/4,W/4).

    Resizing the first map to its own size is an exact identity and is skipped.
    """
    size = feats[0].shape[-2:]
    ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
    return torch.cat(ups, dim=1)


class FCNHead(nn.Module):
    """mmseg ``FCNHead`` of this config: resize_concat, one 1x1 ConvModule 270->270, ``conv_seg`` 270->num_classes.

    (num_convs=1, kernel_size=1, concat_input=False, dropout_ratio=-1: no dropout.)
    """

    def __init__(self, in_channels: int = sum(HRNET_W18_CHANNELS), num_classes: int = NUM_CLASSES):
        super().__init__()
        # Registration order follows mmseg (BaseDecodeHead creates conv_seg before FCNHead adds convs).
        self.conv_seg = nn.Conv2d(in_channels, num_classes, 1)
        self.convs = nn.Sequential(ConvModule(in_channels, in_channels, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = resize_concat(feats)  # (B,270,h,w)
        return self.conv_seg(self.convs(x))  # (B,K,h,w)


class SpatialGatherModule(nn.Module):
    """OCR soft object regions: class centres = softmax over positions of the aux logits, times the features."""

    def __init__(self, scale: float = 1):
        super().__init__()
        self.scale = scale

    def forward(self, feats: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        b, k, h, w = probs.shape
        c = feats.shape[1]
        probs = probs.reshape(b, k, h * w)  # (B,K,h,w) -> (B,K,N), N = h*w
        feats = feats.reshape(b, c, h * w).permute(0, 2, 1)  # (B,C,h,w) -> (B,C,N) -> (B,N,C)
        probs = F.softmax(self.scale * probs, dim=2)  # softmax over the N positions, per class
        context = torch.matmul(probs, feats)  # (B,K,N) @ (B,N,C) -> (B,K,C)
        return context.permute(0, 2, 1).contiguous().unsqueeze(3)  # (B,K,C) -> (B,C,K) -> (B,C,K,1)


class ObjectAttentionBlock(nn.Module):
    """mmseg OCR ``ObjectAttentionBlock`` (a ``SelfAttentionBlock`` with scale 1, so no query downsampling).

    Pixels (queries, from the head features) attend to the K class centres (keys/values), scaled by
    ``channels ** -0.5``; the attended context is projected back and fused with the pixel features.
    """

    def __init__(self, in_channels: int = 512, channels: int = 256):
        super().__init__()
        self.channels = channels
        # Registration order follows mmseg: key, query, value, out projections, then bottleneck.
        self.key_project = nn.Sequential(ConvModule(in_channels, channels, 1), ConvModule(channels, channels, 1))
        self.query_project = nn.Sequential(ConvModule(in_channels, channels, 1), ConvModule(channels, channels, 1))
        self.value_project = ConvModule(in_channels, channels, 1)
        self.out_project = ConvModule(channels, in_channels, 1)
        self.bottleneck = ConvModule(in_channels * 2, in_channels, 1)

    def forward(self, query_feats: torch.Tensor, key_feats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = query_feats.shape
        query = self.query_project(query_feats)  # (B,512,h,w) -> (B,256,h,w)
        query = query.reshape(b, self.channels, h * w).permute(0, 2, 1).contiguous()  # -> (B,256,N) -> (B,N,256)
        key = self.key_project(key_feats)  # (B,512,K,1) -> (B,256,K,1)
        value = self.value_project(key_feats)  # (B,512,K,1) -> (B,256,K,1)
        key = key.reshape(b, self.channels, -1)  # (B,256,K,1) -> (B,256,K)
        value = value.reshape(b, self.channels, -1).permute(0, 2, 1).contiguous()  # -> (B,256,K) -> (B,K,256)
        sim = torch.matmul(query, key)  # (B,N,256) @ (B,256,K) -> (B,N,K)
        sim = (self.channels**-0.5) * sim
        sim = F.softmax(sim, dim=-1)  # over the K class centres
        context = torch.matmul(sim, value)  # (B,N,K) @ (B,K,256) -> (B,N,256)
        context = context.permute(0, 2, 1).contiguous()  # (B,N,256) -> (B,256,N)
        context = context.reshape(b, self.channels, h, w)  # (B,256,N) -> (B,256,h,w)
        context = self.out_project(context)  # (B,256,h,w) -> (B,512,h,w)
        return self.bottleneck(torch.cat([context, query_feats], dim=1))  # (B,1024,h,w) -> (B,512,h,w)


class OCRHead(nn.Module):
    """mmseg ``OCRHead`` (channels 512, ocr_channels 256, scale 1, dropout_ratio=-1)."""

    def __init__(
        self,
        in_channels: int = sum(HRNET_W18_CHANNELS),
        channels: int = 512,
        ocr_channels: int = 256,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        # Registration order follows mmseg: conv_seg (BaseDecodeHead), object_context_block, bottleneck.
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        self.object_context_block = ObjectAttentionBlock(channels, ocr_channels)
        self.spatial_gather_module = SpatialGatherModule(1)
        self.bottleneck = ConvModule(in_channels, channels, 3, padding=1)

    def forward(self, feats: list[torch.Tensor], prev_output: torch.Tensor) -> torch.Tensor:
        x = resize_concat(feats)  # (B,270,h,w)
        x = self.bottleneck(x)  # (B,512,h,w)
        context = self.spatial_gather_module(x, prev_output)  # (B,512,K,1)
        x = self.object_context_block(x, context)  # (B,512,h,w)
        return self.conv_seg(x)  # (B,K,h,w)


class OCRNetHR18(nn.Module):
    """CascadeEncoderDecoder(HRNet-W18, [FCNHead, OCRHead]) with mmseg's parameter names.

    ``forward(x)`` returns the OCR logits at 1/4 resolution, (B,K,H/4,W/4). The input is the normalized RGB image
    (see ``PIXEL_MEAN_RGB``/``PIXEL_STD_RGB``); H and W should be multiples of 32 (``SIZE_DIVISOR``).
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.num_classes = num_classes
        self.backbone = HRNetW18()
        self.decode_head = nn.ModuleList([FCNHead(num_classes=num_classes), OCRHead(num_classes=num_classes)])

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(ocr_logits, aux_logits)``, both (B,K,H/4,W/4); aux is the FCN head (the OCR head's ``prev``)."""
        feats = self.backbone(x)
        aux = self.decode_head[0](feats)
        ocr = self.decode_head[1](feats, aux)
        return ocr, aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[0]

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, ori_size: tuple[int, int] | None = None) -> torch.Tensor:
        """mmseg 'whole' predict: 1/4 logits -> input size -> (if given and different) ``ori_size``, both bilinear
        with ``align_corners=False``. Argmax over dim 1 gives mmseg's ``pred_sem_seg``."""
        logits = upsample_logits(self(x), x.shape[-2:])
        if ori_size is not None and tuple(ori_size) != tuple(logits.shape[-2:]):
            logits = upsample_logits(logits, ori_size)
        return logits


def upsample_logits(logits: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Resize (B,K,h,w) logits to ``size`` = (H, W), bilinear, ``align_corners=False`` (mmseg ``predict_by_feat``)."""
    return F.interpolate(logits, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


def ocrnet_hr18(num_classes: int = NUM_CLASSES) -> OCRNetHR18:
    """OCRNet + HRNetV2-W18 (mmseg ``ocrnet_hr18_512x1024_160k_cityscapes``), in eval mode, random weights."""
    return OCRNetHR18(num_classes).eval()


def preprocess_params(input_size=None) -> dict:
    """The pre-processing an engine's manifest records (``ModelSpec.preprocess_params``): the test Resize box is the
    engine's (W, H) when it was built at another ``input_size`` (H, W)."""
    return {"function": "deployzoo.process.vision.ocrnet_preprocess",
            "scale_wh": [int(input_size[1]), int(input_size[0])] if input_size else list(TEST_SCALE_WH),
            "keep_ratio": TEST_KEEP_RATIO, "mean": list(PIXEL_MEAN_RGB), "std": list(PIXEL_STD_RGB), "color": "RGB",
            "output_stride": OUTPUT_STRIDE}


def load_ocrnet_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an mmseg checkpoint (``{'meta', 'state_dict'}``) or a plain state dict into ``model``, strictly.

    Raises :class:`deployzoo.errors.CheckpointError` if the file is unreadable or is not a checkpoint of this model.
    """
    sd = unwrap_state_dict(read_checkpoint(path))
    load_strict(model, sd, str(path), MODEL_NAME)
    return model.eval()


__all__ = [
    "CHECKPOINT_URL",
    "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID",
    "CITYSCAPES_LABEL_ID_TO_TRAIN_ID_LUT",
    "CITYSCAPES_PALETTE",
    "HRNET_W18_CHANNELS",
    "IGNORE_INDEX",
    "MODEL_NAME",
    "NUM_CLASSES",
    "OCRNetHR18",
    "OUTPUT_STRIDE",
    "PIXEL_MEAN_RGB",
    "PIXEL_STD_RGB",
    "SIZE_DIVISOR",
    "TEST_KEEP_RATIO",
    "TEST_MODE",
    "TEST_SCALE_WH",
    "TEST_SIZE_HW",
    "TO_RGB",
    "TRAIN_CROP_HW",
    "load_ocrnet_checkpoint",
    "ocrnet_hr18",
    "upsample_logits",
]
