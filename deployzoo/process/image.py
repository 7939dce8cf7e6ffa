"""Image loading: paths, bytes, PIL images and numpy arrays -> uint8 numpy arrays.

Handles gray, RGB, RGBA (composited on white), palette, 16-bit and EXIF orientation. Every failure is an
``ImageError`` that names the image and the reason.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deployzoo.errors import DeployzooError, ImageError

ImageLike = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: PIL refuses images above this many pixels (decompression bombs); words and photos stay far below it.
MAX_PIXELS = 200_000_000


def describe(item: object) -> str:
    """Short name of an image argument for error messages."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<{len(item)} bytes>"
    if isinstance(item, np.ndarray):
        return f"<array {item.shape} {item.dtype}>"
    if isinstance(item, Image.Image):
        return f"<PIL {item.mode} {item.size[0]}x{item.size[1]}>"
    return f"<{type(item).__name__}>"


def _open_pil(item: ImageLike, name: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, (str, os.PathLike)):
        try:
            p = Path(item)
            if p.is_dir():
                raise ImageError(f"image {name}: is a directory, not an image file")
            if not p.exists():
                raise ImageError(f"image {name}: file not found")
            data = p.read_bytes()
        except OSError as e:
            raise ImageError(f"image {name}: cannot be read ({e.strerror or e})") from None
    elif isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
    else:
        raise ImageError(f"image {name}: unsupported type {type(item).__name__} (give a path, bytes, PIL image or array)")
    if not data:
        raise ImageError(f"image {name}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > max_pixels:  # refused from the header, before decoding
                raise ImageError(f"image {name}: {img.width}x{img.height} has more than {max_pixels} pixels")
            img.load()  # decode now: truncated files fail here, not later in a worker
    except UnidentifiedImageError as e:
        raise ImageError(f"image {name}: not a recognised image format") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image {name}: cannot be decoded, truncated or corrupt ({e})") from e
    return img


def prepare_each(items: list, prepare, on_error, raise_errors: bool = False) -> tuple[list, list]:
    """Pre-process each item on its own: one unreadable image never takes down the others.

    Returns (out, ready): ``out[i]`` is ``on_error(message)`` for items that failed (None otherwise), ``ready`` the
    (index, prepared array) pairs to run. With ``raise_errors`` the first failure is raised instead.
    """
    out: list = [None] * len(items)
    ready: list[tuple[int, np.ndarray]] = []
    for i, item in enumerate(items):
        try:
            ready.append((i, prepare(item)))
        except DeployzooError as e:
            if raise_errors:
                raise
            out[i] = on_error(str(e))
    return out, ready


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and 32-bit gray modes -> 8-bit 'L' by scaling the full range."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
        return Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return img


def load_image(item: ImageLike, mode: str = "L", name: str | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load one image as uint8: mode 'L' -> (H, W), mode 'RGB' -> (H, W, 3).

    Arrays are taken as they are: (H, W) gray, (H, W, 3) RGB, (H, W, 4) RGBA, uint8 or uint16 or float in [0, 1]
    (a uint8 array already in ``mode``'s shape is returned as it is, not copied). Encoded images with more than
    ``max_pixels`` pixels are refused from their header, before decoding.
    """
    name = name or describe(item)
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8 and item.size and (item.ndim == 2 if mode == "L" else (
                item.ndim == 3 and item.shape[2] == 3)):
            return np.ascontiguousarray(item)
        img = _array_to_pil(item, name)
    else:
        img = _open_pil(item, name, max_pixels)
    if img.width == 0 or img.height == 0:
        raise ImageError(f"image {name}: has 0 pixels ({img.width}x{img.height})")
    try:
        if isinstance(item, Image.Image):
            img = ImageOps.exif_transpose(img) or img  # a copy: never turn the caller's image
        elif not isinstance(item, np.ndarray):
            ImageOps.exif_transpose(img, in_place=True)  # our own decoded image: no copy
        img = _to_8bit(img)
        if img.mode == "P":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "RGB" and "transparency" in img.info):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        out = np.asarray(img.convert(mode))
    except (OSError, ValueError, SyntaxError, TypeError) as e:
        raise ImageError(f"image {name}: cannot be converted to {mode} ({e})") from e
    return np.ascontiguousarray(out)


def _array_to_pil(a: np.ndarray, name: str) -> Image.Image:
    if a.size == 0:
        raise ImageError(f"image {name}: has 0 pixels")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ImageError(f"image {name}: array shape {a.shape} is not (H, W), (H, W, 3) or (H, W, 4)")
    if a.dtype == np.uint16:
        a = (a.astype(np.float64) / 65535.0 * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageError(f"image {name}: array has NaN or infinite values")
        scale = 255.0 if a.max() <= 1.0 else 1.0
        a = np.clip(a * scale + 0.5, 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[a.shape[2] if a.ndim == 3 else 2]
    return Image.fromarray(np.ascontiguousarray(a), mode)
