"""Training-time augmentation of gray word images (uint8 in, uint8 out). Runs before the shared pre-processing.

Deterministic given the numpy Generator, so a sample's augmentation depends only on (seed, index, epoch).
"""

from __future__ import annotations

import cv2
import numpy as np


def augment_word(gray: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """Mild geometric and photometric jitter typical of scene-text crops."""
    img = gray
    h, w = img.shape
    if rng.random() < 0.5 * strength:  # small rotation / shear / scale
        ang = rng.normal(0, 2.5)
        shear = rng.normal(0, 0.15)
        m = cv2.getRotationMatrix2D((w / 2, h / 2), ang, 1.0 + rng.normal(0, 0.04))
        m[0, 1] += shear
        m[0, 2] -= shear * h / 2
        img = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.2 * strength:  # perspective: the sign seen from the side (SVTP-like)
        d = rng.uniform(-0.12, 0.12, (4, 2)) * np.array([w, h])
        src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
        m = cv2.getPerspectiveTransform(src, np.float32(src + d))
        img = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.3 * strength:  # aspect jitter: condensed / extended lettering (matters with keep-ratio)
        sx = float(np.exp(rng.uniform(np.log(0.75), np.log(1.33))))
        img = cv2.resize(img, (max(4, int(round(img.shape[1] * sx))), img.shape[0]), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.3 * strength:  # crop jitter: cut or extend the borders a little
        dx0, dx1 = (rng.uniform(-0.06, 0.06, 2) * w).astype(int)
        dy0, dy1 = (rng.uniform(-0.1, 0.1, 2) * h).astype(int)
        img = cv2.copyMakeBorder(img, max(-dy0, 0), max(-dy1, 0), max(-dx0, 0), max(-dx1, 0), cv2.BORDER_REPLICATE)
        hh, ww = img.shape
        img = img[max(dy0, 0): hh - max(dy1, 0) or hh, max(dx0, 0): ww - max(dx1, 0) or ww]
        if img.size == 0:
            img = gray
    if rng.random() < 0.25 * strength:  # blur, as from focus or motion
        k = int(rng.choice([3, 5]))
        img = cv2.GaussianBlur(img, (k, k), 0) if rng.random() < 0.6 else cv2.blur(img, (k, 1))
    if rng.random() < 0.3 * strength:  # contrast / brightness / gamma
        f = img.astype(np.float32) / 255.0
        f = np.clip(f ** rng.uniform(0.6, 1.6), 0, 1)
        lo, hi = rng.uniform(0, 0.3), rng.uniform(0.7, 1.0)
        img = (255 * (lo + (hi - lo) * f)).astype(np.uint8)
    if rng.random() < 0.2 * strength:  # sensor noise
        img = np.clip(img.astype(np.int16) + rng.normal(0, rng.uniform(3, 12), img.shape).astype(np.int16), 0,
                      255).astype(np.uint8)
    if rng.random() < 0.15 * strength:  # downscale-upscale: low-resolution photos
        s = rng.uniform(0.35, 0.7)
        small = cv2.resize(img, (max(4, int(img.shape[1] * s)), max(4, int(img.shape[0] * s))),
                           interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.15 * strength:  # JPEG artefacts
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(15, 60))])
        if ok:
            img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if rng.random() < 0.1 * strength:  # light text on dark background
        img = 255 - img
    return np.ascontiguousarray(img)
