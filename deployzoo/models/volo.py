"""VOLO-D2 (224x224, ImageNet-1k), a plain-torch port of sail-sg/volo ``models/volo.py`` ``volo_d2()``.

Reference: github.com/sail-sg/volo at commit cf35775276a887ccd749ad82c3ba0ac034020cc9 (timm's
``volo_d2_224`` has the same keys and numerics). Parameter names follow the official code exactly, so the
official checkpoint ``d2_224_85.2.pth.tar`` loads with ``strict=True``.

Architecture of VOLO-D2 at 224 (shapes for a batch of B images)::

    image                                   (B, 3, 224, 224)
    patch_embed.conv  7x7/2 conv-BN-ReLU, 2x (3x3 conv-BN-ReLU)   -> (B, 64, 112, 112)
    patch_embed.proj  4x4/4 conv             -> (B, 256, 28, 28) -> channels last (B, 28, 28, 256)
    network.0         6 Outlookers (outlook attention, kernel 3, padding 1, stride 2, 8 heads)
    network.1         Downsample 2x2/2 conv  -> (B, 14, 14, 512)
    + pos_embed       (1, 14, 14, 512)
    network.2..4      4 + 10 + 4 Transformer blocks (16 heads, MLP ratio 3)
    tokens            (B, 196, 512), cls_token prepended -> (B, 197, 512)
    post_network      2 class-attention blocks (CaiT style; only the class token is updated)
    norm              LayerNorm
    output            head(x[:, 0]) + 0.5 * aux_head(x[:, 1:]).max(1).values      (B, 1000)

Differences from the reference code (none changes eval numerics beyond float rounding):

* ``F.unfold`` / ``F.fold`` are replaced by :func:`unfold2d` (padding + strided slicing, exact) and
  :func:`fold2d` (``conv_transpose2d`` with a fixed one-hot kernel), both ONNX-exportable (opset 17).
  ``fold2d`` sums overlapping windows in a different order than ``F.fold`` (differences ~1e-7).
* Dropout / DropPath (all rates 0 for inference) and token mixing ("mix_token", a training-time
  augmentation of token labelling) are not implemented. :meth:`VOLO.forward` returns the eval-mode
  output in every mode; :meth:`VOLO.forward_dense` gives the class-token logits and the dense per-token
  logits that token-labelling training uses.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from deployzoo.checkpoint import load_strict, read_checkpoint, unwrap_state_dict

__all__ = [
    "CROP_PCT",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SIZE",
    "INTERPOLATION",
    "MODEL_NAME",
    "NUM_CLASSES",
    "RESIZE_SHORT_SIDE",
    "VOLO",
    "load_volo_checkpoint",
    "fold2d",
    "unfold2d",
    "volo_d2",
]

# --------------------------------------------------------------------------------------------------
# Preprocessing facts (timm default_cfg of the official 'volo' config: crop_pct 0.96, bicubic)
# --------------------------------------------------------------------------------------------------

MODEL_NAME = "volo_d2"
#: Network input side (square).
INPUT_SIZE = 224
#: Centre-crop fraction of the official eval config.
CROP_PCT = 0.96
#: Resize the short side to floor(224 / 0.96) = 233, then centre-crop 224x224.
RESIZE_SHORT_SIDE = math.floor(INPUT_SIZE / CROP_PCT)
#: Resize interpolation (PIL / torchvision "bicubic").
INTERPOLATION = "bicubic"
#: ImageNet normalization of RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ImageNet-1k classes.
NUM_CLASSES = 1000


# --------------------------------------------------------------------------------------------------
# ONNX-exportable unfold / fold (square kernels)
# --------------------------------------------------------------------------------------------------


def _num_blocks(size: int, kernel_size: int, padding: int, stride: int) -> int:
    """Number of sliding-window positions along one axis (as F.unfold / F.fold count them)."""
    n = (size + 2 * padding - kernel_size) // stride + 1
    if not torch.jit.is_tracing() and n < 1:  # sizes are fixed at export; skip the traced comparison
        raise ValueError(f"kernel {kernel_size} with padding {padding} does not fit a side of {size}")
    return n


def unfold2d(x: torch.Tensor, kernel_size: int, padding: int, stride: int) -> torch.Tensor:
    """Same result and layout as ``F.unfold(x, kernel_size, padding=padding, stride=stride)``, bit-exact.

    Written with zero padding and strided slices only, so it exports to ONNX as Pad + Slice + Concat.

    Args:
        x: (B, C, H, W).
    Returns:
        (B, C * k * k, L) with L = h * w block positions; channel index = c * k * k + ki * k + kj.
    """
    _, c, hgt, wid = x.shape
    k, p, s = kernel_size, padding, stride
    h, w = _num_blocks(hgt, k, p, s), _num_blocks(wid, k, p, s)
    xp = F.pad(x, (p, p, p, p)) if p > 0 else x  # (B, C, H + 2p, W + 2p)
    cols = [
        xp[:, :, ki : ki + s * (h - 1) + 1 : s, kj : kj + s * (w - 1) + 1 : s]  # (B, C, h, w) each
        for ki in range(k)
        for kj in range(k)
    ]
    cols = torch.stack(cols, dim=2)  # (B, C, k*k, h, w)
    return cols.reshape(-1, c * k * k, h * w)  # (B, C*k*k, L)


def _one_hot_kernel(kernel_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(k*k, 1, k, k) with weight[ki*k + kj, 0, ki, kj] = 1: routes window slot (ki, kj) to its pixel."""
    kk = kernel_size * kernel_size
    return torch.eye(kk, dtype=dtype, device=device).reshape(kk, 1, kernel_size, kernel_size)


def fold2d(
    cols: torch.Tensor,
    output_size: tuple[int, int],
    kernel_size: int,
    padding: int,
    stride: int,
    one_hot: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same result as ``F.fold(cols, output_size, kernel_size, padding=padding, stride=stride)``.

    Overlapping window slots are summed by a ``conv_transpose2d`` with a fixed one-hot kernel (exports to
    ONNX ConvTranspose). Only the summation order differs from ``F.fold`` (float rounding, ~1e-7).

    Args:
        cols: (B, C * k * k, L) in F.unfold layout, L = h * w block positions.
        output_size: (H, W).
        one_hot: optional precomputed ``_one_hot_kernel(k)`` (a module buffer), else built here.
    Returns:
        (B, C, H, W).
    """
    hgt, wid = output_size
    k, p, s = kernel_size, padding, stride
    kk = k * k
    h, w = _num_blocks(hgt, k, p, s), _num_blocks(wid, k, p, s)
    c = cols.shape[1] // kk
    if not torch.jit.is_tracing() and (cols.shape[1] != c * kk or cols.shape[2] != h * w):
        raise ValueError(f"fold2d: input {tuple(cols.shape)} does not fit output {output_size}, kernel {k}")
    if one_hot is None:
        one_hot = _one_hot_kernel(k, cols.dtype, cols.device)
    # rows/cols the transposed conv leaves short of (H, W); always < stride, as ConvTranspose requires
    out_pad_h = hgt + 2 * p - (h - 1) * s - k
    out_pad_w = wid + 2 * p - (w - 1) * s - k
    x = cols.reshape(-1, kk, h, w)  # (B*C, k*k, h, w)
    x = F.conv_transpose2d(x, one_hot, stride=s, padding=p, output_padding=(out_pad_h, out_pad_w))  # (B*C, 1, H, W)
    return x.reshape(-1, c, hgt, wid)  # (B, C, H, W)


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class Mlp(nn.Module):
    """fc1 -> GELU (erf) -> fc2."""

    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class OutlookAttention(nn.Module):
    """Outlook attention: each (pooled) position predicts a (k*k x k*k) attention over its k x k window
    of values; the attended windows are folded back (overlaps summed) to the full resolution.

    Keys: ``v`` (no bias), ``attn`` (dim -> k^4 * heads), ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, kernel_size: int = 3, padding: int = 1, stride: int = 1) -> None:
        super().__init__()
        head_dim = dim // num_heads
        self.num_heads = num_heads
        self.kernel_size = kernel_size
        self.padding = padding
        self.stride = stride
        self.scale = head_dim**-0.5

        self.v = nn.Linear(dim, dim, bias=False)
        self.attn = nn.Linear(dim, kernel_size**4 * num_heads)
        self.proj = nn.Linear(dim, dim)
        self.pool = nn.AvgPool2d(kernel_size=stride, stride=stride, ceil_mode=True)
        self.register_buffer("fold_kernel", _one_hot_kernel(kernel_size, torch.float32, None), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        k, p, s, nh = self.kernel_size, self.padding, self.stride, self.num_heads
        kk = k * k

        a = self.pool(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, h, w, C), h = ceil(H / stride)
        h, w = a.shape[1], a.shape[2]
        a = self.attn(a)  # (B, h, w, k^4 * heads)

        v = self.v(x).permute(0, 3, 1, 2)  # (B, C, H, W)
        v = unfold2d(v, k, p, s)  # (B, C*k*k, h*w): with padding (k-1)/2 there are ceil(H/s) windows per side
        v = v.reshape(B, nh, C // nh, kk, h * w).permute(0, 1, 4, 3, 2)  # (B, heads, N, k*k, C/heads)

        a = a.reshape(B, h * w, nh, kk, kk).permute(0, 2, 1, 3, 4)  # (B, heads, N, k*k, k*k)
        a = (a * self.scale).softmax(dim=-1)

        x = a @ v  # (B, heads, N, k*k, C/heads)
        x = x.permute(0, 1, 4, 3, 2).reshape(B, C * kk, h * w)  # (B, C*k*k, N), F.fold layout
        x = fold2d(x, (H, W), k, p, s, one_hot=self.fold_kernel.to(x.dtype))  # (B, C, H, W)
        return self.proj(x.permute(0, 2, 3, 1))  # (B, H, W, C)


class Outlooker(nn.Module):
    """Pre-norm block: x + OutlookAttention(norm1(x)), then x + Mlp(norm2(x)); x is (B, H, W, C)."""

    def __init__(self, dim: int, kernel_size: int, padding: int, stride: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = OutlookAttention(dim, num_heads, kernel_size=kernel_size, padding=padding, stride=stride)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    """Multi-head self-attention over the H*W tokens of a (B, H, W, C) map; ``qkv`` has no bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, C = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(B, H * W, 3, nh, C // nh).permute(2, 0, 3, 1, 4)  # (3, B, heads, N, C/heads)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, C/heads) each
        attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, heads, N, N)
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, H, W, C)  # (B, heads, N, C/h) -> (B, N, heads, C/h) -> (B, H, W, C)
        return self.proj(x)


class Transformer(nn.Module):
    """Pre-norm transformer block on a (B, H, W, C) map."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClassAttention(nn.Module):
    """CaiT class attention: the class token (query) attends to all tokens (keys/values); no q/kv bias."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.kv = nn.Linear(dim, self.head_dim * num_heads * 2, bias=False)
        self.q = nn.Linear(dim, self.head_dim * num_heads, bias=False)
        self.proj = nn.Linear(self.head_dim * num_heads, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) tokens, class token first -> (B, 1, C) new class embedding."""
        B, N, _ = x.shape
        nh, hd = self.num_heads, self.head_dim
        kv = self.kv(x).reshape(B, N, 2, nh, hd).permute(2, 0, 3, 1, 4)  # (2, B, heads, N, hd)
        k, v = kv[0], kv[1]  # (B, heads, N, hd) each
        q = self.q(x[:, :1, :]).reshape(B, nh, 1, hd)  # (B, 1, heads*hd) -> (B, heads, 1, hd)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # (B, heads, 1, N)
        attn = attn.softmax(dim=-1)
        cls_embed = (attn @ v).transpose(1, 2).reshape(B, 1, nh * hd)  # (B, heads, 1, hd) -> (B, 1, heads*hd)
        return self.proj(cls_embed)  # (B, 1, C)


class ClassBlock(nn.Module):
    """Class-attention block: updates only the class token, the patch tokens pass through unchanged."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1 + N, C) -> (B, 1 + N, C)."""
        cls_embed = x[:, :1]  # (B, 1, C)
        cls_embed = cls_embed + self.attn(self.norm1(x))
        cls_embed = cls_embed + self.mlp(self.norm2(cls_embed))
        return torch.cat([cls_embed, x[:, 1:]], dim=1)  # (B, 1 + N, C)


class PatchEmbed(nn.Module):
    """Stem: ``conv`` = 3 x (conv-BN-ReLU) at stride 2 overall (indices 0..8, BN at 1, 4, 7), then ``proj``."""

    def __init__(self, in_chans: int, hidden_dim: int, embed_dim: int, patch_size: int, stem_stride: int = 2) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_chans, hidden_dim, kernel_size=7, stride=stem_stride, padding=3, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_dim, hidden_dim, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(hidden_dim),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(
            hidden_dim, embed_dim, kernel_size=patch_size // stem_stride, stride=patch_size // stem_stride
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) -> (B, embed_dim, H / patch_size, W / patch_size)."""
        return self.proj(self.conv(x))


class Downsample(nn.Module):
    """2x2 stride-2 conv between the outlooker and transformer stages, channels last in and out."""

    def __init__(self, in_embed_dim: int, out_embed_dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_embed_dim, out_embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C_in) -> (B, H/2, W/2, C_out)."""
        x = self.proj(x.permute(0, 3, 1, 2))  # (B, C_out, H/2, W/2)
        return x.permute(0, 2, 3, 1)  # (B, H/2, W/2, C_out)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


class VOLO(nn.Module):
    """Vision Outlooker with class-attention post layers and token-labelling (``aux_head``) output.

    Stages follow the official ``VOLO(layers, ...)``: stage i is a ``nn.Sequential`` of Outlookers
    (``outlook_attention[i]``) or Transformers; a Downsample follows stage i where ``downsamples[i]``.
    ``network`` therefore is [outlookers, Downsample, transformers, transformers, transformers] for D1-D5.
    The positional embedding is added before ``network[2]``.
    """

    def __init__(
        self,
        layers: list[int],
        embed_dims: list[int],
        num_heads: list[int],
        mlp_ratios: list[float],
        downsamples: list[bool],
        outlook_attention: list[bool],
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        patch_size: int = 8,
        stem_hidden_dim: int = 64,
        num_post_layers: int = 2,
        pooling_scale: int = 2,
        out_kernel: int = 3,
        out_stride: int = 2,
        out_padding: int = 1,
        name: str = "volo",
    ) -> None:
        super().__init__()
        #: Model name used in error messages (``load_volo_checkpoint``).
        self.name = name
        if num_classes <= 0:
            raise ValueError("num_classes must be positive (the aux head is part of the eval output)")
        self.num_classes = num_classes
        self.patch_embed = PatchEmbed(in_chans, stem_hidden_dim, embed_dims[0], patch_size, stem_stride=2)
        grid = img_size // patch_size // pooling_scale
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dims[-1]))  # (1, 14, 14, C)

        network: list[nn.Module] = []
        for i, depth in enumerate(layers):
            if outlook_attention[i]:
                blocks = [
                    Outlooker(embed_dims[i], out_kernel, out_padding, out_stride, num_heads[i], mlp_ratios[i])
                    for _ in range(depth)
                ]
            else:
                blocks = [Transformer(embed_dims[i], num_heads[i], mlp_ratios[i]) for _ in range(depth)]
            network.append(nn.Sequential(*blocks))
            if downsamples[i]:
                network.append(Downsample(embed_dims[i], embed_dims[i + 1], 2))
        self.network = nn.ModuleList(network)

        self.post_network = nn.ModuleList(
            [ClassBlock(embed_dims[-1], num_heads[-1], mlp_ratios[-1]) for _ in range(num_post_layers)]
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
        self.aux_head = nn.Linear(embed_dims[-1], num_classes)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.head = nn.Linear(embed_dims[-1], num_classes)

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, 224, 224) -> normalized tokens (B, 1 + 196, C), class token first."""
        x = self.patch_embed(x)  # (B, C0, 28, 28)
        x = x.permute(0, 2, 3, 1)  # (B, 28, 28, C0)
        for idx, block in enumerate(self.network):
            if idx == 2:  # positional encoding after the outlooker stage and its Downsample
                x = x + self.pos_embed  # (B, 14, 14, C)
            x = block(x)
        B, H, W, C = x.shape
        x = x.reshape(B, H * W, C)  # (B, N, C)
        cls_tokens = self.cls_token.expand(B, -1, -1)  # (B, 1, C)
        x = torch.cat((cls_tokens, x), dim=1)  # (B, 1 + N, C)
        for block in self.post_network:
            x = block(x)
        return self.norm(x)  # (B, 1 + N, C)

    def forward_dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image -> (class-token logits (B, K), per-token aux logits (B, N, K))."""
        x = self.forward_features(x)  # (B, 1 + N, C)
        return self.head(x[:, 0]), self.aux_head(x[:, 1:])

    def forward_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image -> (cls_logits (B, K), aux_max (B, K)); ``forward(x) == cls_logits + 0.5 * aux_max``."""
        cls_logits, aux = self.forward_dense(x)
        return cls_logits, aux.max(dim=1)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, 224, 224), ImageNet-normalized -> logits (B, K), the official eval output."""
        cls_logits, aux_max = self.forward_terms(x)
        return cls_logits + 0.5 * aux_max


def volo_d2(num_classes: int = NUM_CLASSES) -> VOLO:
    """VOLO-D2 at 224: layers [6, 4, 10, 4], dims [256, 512, 512, 512], heads [8, 16, 16, 16], MLP ratio 3,
    two class-attention post layers; 58,678,336 parameters with 1000 classes."""
    return VOLO(
        layers=[6, 4, 10, 4],
        embed_dims=[256, 512, 512, 512],
        num_heads=[8, 16, 16, 16],
        mlp_ratios=[3, 3, 3, 3],
        downsamples=[True, False, False, False],
        outlook_attention=[True, False, False, False],
        img_size=INPUT_SIZE,
        num_classes=num_classes,
        name=MODEL_NAME,
    )


def preprocess_params() -> dict:
    """The pre-processing an engine's manifest records (``ModelSpec.preprocess_params``)."""
    return {"function": "deployzoo.process.vision.volo_preprocess", "input_size": INPUT_SIZE, "crop_pct": CROP_PCT,
            "resize_short_side": RESIZE_SHORT_SIDE, "interpolation": INTERPOLATION, "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD), "color": "RGB"}


def load_volo_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load a VOLO checkpoint strictly into ``model`` and return it.

    Accepts the official flat state dict (``d2_224_85.2.pth.tar``) or one wrapped under ``state_dict_ema`` /
    ``state_dict`` / ``model`` (a ``module.`` prefix is stripped). Raises
    :class:`deployzoo.errors.CheckpointError` if the file is missing, truncated, or holds another model.
    """
    sd = unwrap_state_dict(read_checkpoint(path))
    load_strict(model, sd, source=str(path), model_name=getattr(model, "name", MODEL_NAME))
    return model
