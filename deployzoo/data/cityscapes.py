"""Cityscapes in its official layout: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` paired with
``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png`` (made by cityscapesScripts ``createTrainIdLabelImgs`` or mmseg's
``tools/dataset_converters/cityscapes.py``) or, where that is absent, the shipped ``*_gtFine_labelIds.png`` mapped
through the official labelId -> trainId table (``deployzoo.models.ocrnet.CITYSCAPES_LABEL_ID_TO_TRAIN_ID``). Both give
the same train-id maps: the polygons are drawn in the same order and license plates (id -1) are not drawn in either.

Train ids are 0..18 for the 19 evaluated classes and 255 for everything ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deployzoo.errors import DatasetError, ImageError
from deployzoo.models.ocrnet import CITYSCAPES_LABEL_ID_TO_TRAIN_ID_LUT, IGNORE_INDEX, NUM_CLASSES
from deployzoo.process.image import load_image

IMG_SUFFIX = "_leftImg8bit.png"
TRAIN_IDS_SUFFIX = "_gtFine_labelTrainIds.png"
LABEL_IDS_SUFFIX = "_gtFine_labelIds.png"

_LUT = np.asarray(CITYSCAPES_LABEL_ID_TO_TRAIN_ID_LUT, dtype=np.uint8)


@dataclass(frozen=True)
class CityscapesSample:
    key: str  # "<city>/<stem>", e.g. "frankfurt/frankfurt_000000_000294"
    image: Path
    label: Path
    label_kind: str  # "trainIds" | "labelIds"


class CityscapesVal:
    """``ds[i]`` -> CityscapesSample; ``ds.load(i)`` -> (uint8 RGB (H, W, 3), uint8 train ids (H, W))."""

    def __init__(self, path: str | os.PathLike, split: str = "val") -> None:
        root = Path(path)
        if not root.exists():
            raise DatasetError(f"Cityscapes data {root}: not found")
        if not root.is_dir():
            raise DatasetError(f"Cityscapes data {root}: is a file; give the folder holding leftImg8bit/, gtFine/")
        self.root, self.split = root, split
        img_dir, gt_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        if not img_dir.is_dir():
            raise DatasetError(f"Cityscapes data {root}: no leftImg8bit/{split}/ folder (expected "
                               f"leftImg8bit/{split}/<city>/*{IMG_SUFFIX}; download leftImg8bit_trainvaltest.zip)")
        if not gt_dir.is_dir():
            raise DatasetError(f"Cityscapes data {root}: no gtFine/{split}/ folder (expected "
                               f"gtFine/{split}/<city>/*{LABEL_IDS_SUFFIX}; download gtFine_trainvaltest.zip)")
        images = {_key(p, img_dir, IMG_SUFFIX): p for p in sorted(img_dir.glob(f"*/*{IMG_SUFFIX}"))}
        if not images:
            raise DatasetError(f"Cityscapes data {root}: no *{IMG_SUFFIX} images in leftImg8bit/{split}/<city>/")
        train_ids = {_key(p, gt_dir, TRAIN_IDS_SUFFIX): p for p in gt_dir.glob(f"*/*{TRAIN_IDS_SUFFIX}")}
        label_ids = {_key(p, gt_dir, LABEL_IDS_SUFFIX): p for p in gt_dir.glob(f"*/*{LABEL_IDS_SUFFIX}")}
        gts = set(train_ids) | set(label_ids)
        no_gt = sorted(set(images) - gts)
        no_img = sorted(gts - set(images))
        if no_gt:
            raise DatasetError(
                f"Cityscapes data {root}: {len(no_gt)} of {len(images)} images have no ground truth, e.g. "
                f"{', '.join(no_gt[:3])} (expected gtFine/{split}/<city>/<name>{TRAIN_IDS_SUFFIX} or "
                f"{LABEL_IDS_SUFFIX})")
        if no_img:
            raise DatasetError(
                f"Cityscapes data {root}: {len(no_img)} ground-truth maps have no image, e.g. {', '.join(no_img[:3])} "
                f"(expected leftImg8bit/{split}/<city>/<name>{IMG_SUFFIX}); is the image download incomplete?")
        self.samples = [
            CityscapesSample(k, p, train_ids[k], "trainIds") if k in train_ids
            else CityscapesSample(k, p, label_ids[k], "labelIds")
            for k, p in images.items()
        ]
        self.layout = "cityscapes"

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> CityscapesSample:
        return self.samples[i]

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 RGB (H, W, 3), uint8 train ids (H, W)); raises ImageError naming the file and the reason."""
        s = self.samples[i]
        rgb = load_image(s.image, "RGB", name=str(s.image.relative_to(self.root)))
        gt = load_train_ids(s.label, s.label_kind, name=str(s.label.relative_to(self.root)))
        if gt.shape != rgb.shape[:2]:
            raise ImageError(f"{s.key}: ground truth is {gt.shape[1]}x{gt.shape[0]} but the image is "
                             f"{rgb.shape[1]}x{rgb.shape[0]}")
        return rgb, gt

    @property
    def cities(self) -> list[str]:
        return sorted({s.key.split("/", 1)[0] for s in self.samples})

    @property
    def summary(self) -> str:
        n_tid = sum(s.label_kind == "trainIds" for s in self.samples)
        kinds = (f"{n_tid} labelTrainIds" if n_tid == len(self) else
                 f"{n_tid} labelTrainIds + {len(self) - n_tid} labelIds mapped to train ids")
        return f"{len(self)} images, {len(self.cities)} cities, {kinds}"


def _key(p: Path, base: Path, suffix: str) -> str:
    return f"{p.parent.relative_to(base).as_posix()}/{p.name[: -len(suffix)]}"


def load_train_ids(path: Path, kind: str = "trainIds", name: str | None = None) -> np.ndarray:
    """A label PNG -> uint8 (H, W) train ids (0..18, 255 ignored). ``kind='labelIds'`` maps the official label ids."""
    name = name or str(path)
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise ImageError(f"label map {name}: file not found") from None
    except UnidentifiedImageError:
        raise ImageError(f"label map {name}: not a recognised image format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"label map {name}: cannot be decoded, truncated or corrupt ({e})") from None
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise ImageError(f"label map {name}: mode {img.mode} is not a single-channel id map (a *_color.png?)")
    a = np.asarray(img)
    if a.dtype != np.uint8:
        if a.min() < 0 or a.max() > 255:
            raise ImageError(f"label map {name}: values {a.min()}..{a.max()} do not fit label ids 0..255")
        a = a.astype(np.uint8)
    if kind == "labelIds":
        return _LUT[a]
    bad = (a >= NUM_CLASSES) & (a != IGNORE_INDEX)
    if bad.any():
        vals = np.unique(a[bad])
        raise ImageError(f"label map {name}: values {', '.join(map(str, vals[:5]))} are not train ids (0..18 or 255); "
                         f"is it a *_labelIds.png renamed?")
    return np.ascontiguousarray(a)


def open_cityscapes(path: str | os.PathLike, split: str = "val") -> CityscapesVal:
    """Open ``path`` (the folder holding ``leftImg8bit/`` and ``gtFine/``) for ``split``."""
    return CityscapesVal(path, split)
