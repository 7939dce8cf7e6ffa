"""The one model registry: name -> ModelSpec (factory, input spec, pre/post-processing, metric, checkpoint loader).

Models are imported lazily so ``deployzoo models`` and the CLI start fast.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from deployzoo.errors import CheckpointError


@dataclass(frozen=True)
class ModelSpec:
    """Everything deployzoo needs to know about one model."""

    name: str
    task: str  # "text" | "classification" | "segmentation"
    summary: str
    build: Callable[[], Any]  # random init, no downloads -> nn.Module
    input_shape: tuple[int, int, int]  # (C, H, W) used for export and calibration; W dynamic for CRNN
    dynamic_width: bool
    metric: str  # "word_acc" | "top1" | "miou"
    load_checkpoint: Callable[[Any, Path], dict]  # (model, path) -> metadata stored with the weights
    checkpoint_hint: str  # where users get weights
    published: str  # the published accuracy anchor
    default_checkpoint: Callable[[], Path | None] = field(default=lambda: None)
    default_engine: Callable[[], Path | None] = field(default=lambda: None)  # shipped engine, used without torch
    # vision models: how images become inputs (export parity, calibration, the manifest), without model-name branches
    preprocess_fn: str = ""  # function of deployzoo.process.vision: uint8 RGB -> float32 (3, H, W)
    resize_to_input: bool = False  # images resized to the engine's H x W before preprocess_fn(rgb, None) (OCRNet)
    read_image: Callable[[Path], Any] | None = None  # how evaluation reads an image file (None: RGB load_image)
    parity_batch: int = 1  # batch of the export parity inputs
    preprocess_params: Callable[[Sequence[int] | None], dict] = field(default=lambda size: {})  # for the manifest

    def resolve_checkpoint(self, checkpoint: str | os.PathLike | None) -> Path:
        """The given checkpoint, or the shipped default, or a CheckpointError saying where to get one."""
        if checkpoint is not None:
            return Path(checkpoint)
        default = self.default_checkpoint()
        if default is None:
            raise CheckpointError(f"model '{self.name}' needs --checkpoint FILE: {self.checkpoint_hint}")
        return default

    def load(self, checkpoint: str | os.PathLike | None = None) -> tuple[Any, dict]:
        """Build the model, load weights strictly, eval mode. Returns (model, metadata)."""
        path = self.resolve_checkpoint(checkpoint)
        model = self.build()
        meta = self.load_checkpoint(model, path)
        model.eval()
        return model, {**meta, "checkpoint": str(path)}


# ---------------------------------------------------------------- CRNN

CRNN_WEIGHTS = "crnn.pt"


def _shipped(name: str) -> Path | None:
    try:
        p = resources.files("deployzoo.weights") / name
    except ModuleNotFoundError:
        return None
    return Path(str(p)) if p.is_file() else None


SHIPPED_ENGINE = "crnn_ort_int8"  # ONNX Runtime engine of the shipped weights (scripts/build_shipped_engine.sh)


def shipped_engine() -> Path | None:
    """The engine directory shipped beside ``crnn.pt`` (used when torch is not installed), or None."""
    try:
        p = resources.files("deployzoo.weights") / SHIPPED_ENGINE
    except ModuleNotFoundError:
        return None
    p = Path(str(p))
    return p if (p / "manifest.json").is_file() else None


def _lazy(module: str, name: str):
    """deployzoo.models.<module>.<name>, imported on first use."""
    import importlib

    return getattr(importlib.import_module(f"deployzoo.models.{module}"), name)


def _build_crnn():
    from deployzoo.models.crnn import crnn

    return crnn()


SPECS: dict[str, ModelSpec] = {
    "crnn": ModelSpec(
        name="crnn",
        task="text",
        summary="CRNN word recognition: VGG + 2 BiLSTM + CTC, 1x32xW gray, 37 classes (blank + 0-9a-z)",
        build=_build_crnn,
        input_shape=(1, 32, 100),
        dynamic_width=True,
        metric="word_acc",
        load_checkpoint=lambda m, p: _lazy('crnn', 'load_crnn_checkpoint')(m, p),
        checkpoint_hint="train one with `deployzoo train crnn`, or use meijieru/crnn.pytorch's crnn.pth",
        published="IIIT5K 81.2, SVT 82.7, IC03 91.9, IC13 89.6 (Shi et al., TPAMI)",
        default_checkpoint=lambda: _shipped(CRNN_WEIGHTS),
        default_engine=lambda: shipped_engine(),
    ),
    "volo_d2": ModelSpec(
        name="volo_d2",
        task="classification",
        summary="VOLO-D2 224 ImageNet-1k classification (sail-sg/volo names), cls + 0.5 x max aux logits",
        build=lambda: _lazy("volo", "volo_d2")(),
        input_shape=(3, 224, 224),
        dynamic_width=False,
        metric="top1",
        load_checkpoint=lambda m, p: _no_meta(_lazy("volo", "load_volo_checkpoint"), m, p),
        checkpoint_hint="download d2_224_85.2.pth.tar from https://github.com/sail-sg/volo/releases/download/volo_1/"
        "d2_224_85.2.pth.tar",
        published="top-1 85.2 / top-5 97.2 (sail-sg/volo)",
        preprocess_fn="volo_preprocess",
        read_image=lambda f: _read_imagenet(f),
        parity_batch=2,
        preprocess_params=lambda size: _lazy("volo", "preprocess_params")(),
    ),
    "ocrnet_hr18": ModelSpec(
        name="ocrnet_hr18",
        task="segmentation",
        summary="OCRNet + HRNetV2-W18 Cityscapes 19-class segmentation (mmsegmentation names), 1024x2048 whole image",
        build=lambda: _lazy("ocrnet", "ocrnet_hr18")(),
        input_shape=(3, 1024, 2048),
        dynamic_width=False,
        metric="miou",
        load_checkpoint=lambda m, p: _no_meta(_lazy("ocrnet", "load_ocrnet_checkpoint"), m, p),
        checkpoint_hint="download https://download.openmmlab.com/mmsegmentation/v0.5/ocrnet/"
        "ocrnet_hr18_512x1024_160k_cityscapes/ocrnet_hr18_512x1024_160k_cityscapes_20200602_191001-b9172d0c.pth",
        published="mIoU 79.47 single scale (mmsegmentation)",
        preprocess_fn="ocrnet_preprocess",
        resize_to_input=True,
        preprocess_params=lambda size: _lazy("ocrnet", "preprocess_params")(size),
    ),
}


def _read_imagenet(path: Path):
    """Read as the ImageNet evaluation reads (timm's loader, no EXIF rotation), so calibration sees the same inputs."""
    from deployzoo.data.imagenet import read_rgb

    return read_rgb(path, str(path))


def _no_meta(loader, model, path) -> dict:
    loader(model, path)
    return {}


def is_text(model: str) -> bool:
    """Whether ``model`` is a word recogniser (CTC logits (T, B, C), gray input of dynamic width, labelled word
    sets): the behaviour export, calibration, engines, bench and serving key on, rather than a model name."""
    return get_spec(model).task == "text"


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; a KeyError-free error listing the known models otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        from deployzoo.errors import DeployzooError

        raise DeployzooError(f"unknown model '{name}'; known models: {', '.join(sorted(SPECS))}") from None
