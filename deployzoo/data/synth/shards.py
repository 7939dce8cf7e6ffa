"""Synthetic words as a dataset (rendered on the fly in workers) and as LMDB shards (``synth_to_lmdb``)."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import cv2
import numpy as np

from deployzoo.errors import DatasetError
from deployzoo.data.synth.config import SynthConfig
from deployzoo.data.synth.fonts import FontFace, font_index
from deployzoo.data.synth.render import WordRenderer


# --------------------------------------------------------------------------------------------- dataset


class _SynthWordDatasetImpl:
    """``torch.utils.data.Dataset`` of ``length`` synthetic words: item i = ``(gray uint8 (H, W), text)``.

    The renderer is created lazily in each worker process (fonts and vocabulary load there), and item i is
    sample ``offset + i`` of ``seed``. ``transform`` (optional) is applied to the image.
    """

    def __init__(self, length: int, cfg: SynthConfig | None = None, seed: int = 0, offset: int = 0,
                 transform=None) -> None:
        self.length = int(length)
        self.cfg = cfg or SynthConfig()
        self.seed = seed
        self.offset = offset
        self.transform = transform
        self._renderer: WordRenderer | None = None
        self._pid = -1

    @property
    def renderer(self) -> WordRenderer:
        if self._renderer is None or self._pid != os.getpid():
            self._renderer = WordRenderer(self.cfg, self.seed)
            self._pid = os.getpid()
        return self._renderer

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_renderer": None, "_pid": -1}

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        if not 0 <= i < self.length:
            raise IndexError(i)
        img, text = self.renderer.render(self.offset + i)
        if self.transform is not None:
            img = self.transform(img)
        return img, text


# --------------------------------------------------------------------------------------------- LMDB


def encode_image(img: np.ndarray, fmt: str = "png") -> bytes:
    """Encode a gray uint8 image for the LMDB: "jpeg" (quality 95, optimised Huffman tables: ~3.5 KB per
    word, 30% smaller than PNG on these noisy images) or "png" (lossless)."""
    if fmt == "png":
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 6])
    elif fmt in ("jpg", "jpeg"):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_OPTIMIZE, 1])
    else:
        raise ValueError(f"image format {fmt!r}: use 'png' or 'jpeg'")
    if not ok:
        raise RuntimeError("image encoding failed")
    return buf.tobytes()


_W_RENDERER: WordRenderer | None = None
_W_FMT = "jpeg"


def _worker_init(cfg: SynthConfig, seed: int, fmt: str, faces: list[FontFace] | None = None) -> None:
    global _W_RENDERER, _W_FMT
    cv2.setNumThreads(1)
    _W_RENDERER = WordRenderer(cfg, seed, faces)
    _W_FMT = fmt


def _worker_render(i: int) -> tuple[bytes, str]:
    img, text = _W_RENDERER.render(i)
    return encode_image(img, _W_FMT), text


def synth_to_lmdb(out: str | os.PathLike, count: int, seed: int = 0, workers: int | None = None,
                  cfg: SynthConfig | None = None, shard_size: int | None = None, progress: bool = True,
                  image_format: str = "jpeg", chunksize: int = 64, start: int = 0) -> dict:
    """Render samples ``start .. start+count-1`` of ``seed`` into an LMDB (deep-text-recognition-benchmark
    layout, via :func:`deployzoo.data.words.write_lmdb`), in parallel processes, in index order.

    With ``shard_size``, ``out`` becomes a folder of complete LMDBs ``shard-00000``, ``shard-00001``, ...
    Returns stats: count, seconds, images_per_s, images_per_s_per_core, workers, bytes, shards, ...
    """
    from deployzoo.data.words import write_lmdb  # noqa: PLC0415

    cfg = cfg or SynthConfig()
    out = Path(out)
    count = int(count)
    if count < 0:
        raise ValueError("count must be >= 0")
    if shard_size is not None and shard_size <= 0:
        raise ValueError("shard_size must be positive")
    if workers is None:
        try:
            workers = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover
            workers = os.cpu_count() or 1
    workers = max(1, int(workers))
    encode_image(np.zeros((4, 4), np.uint8), image_format)  # validate the format early
    faces = font_index(cfg.font_dirs)  # build / load the font cache once, before the workers start
    if shard_size is not None:
        if out.exists() and any(out.iterdir()):
            raise DatasetError(f"shard folder {out}: exists and is not empty")
        n_shards = max(1, math.ceil(count / shard_size))
        plan = [(out / f"shard-{k:05d}", min(shard_size, count - k * shard_size)) for k in range(n_shards)]
    else:
        plan = [(out, count)]

    t0 = time.perf_counter()
    nbytes = 0
    done = 0
    pool = None
    if workers > 1 and count > 1:
        # forkserver, not fork: a process that already ran OpenCV (or torch) has thread pools that a forked
        # child would inherit locked; the fork server is a fresh process that only imported this module.
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
        else:
            ctx = mp.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_worker_init,
                        initargs=(cfg, seed, image_format, faces))
        it = pool.imap(_worker_render, range(start, start + count), chunksize=max(1, min(chunksize,
                                                                                        count // (workers * 4) or 1)))
    else:
        workers = 1
        local = WordRenderer(cfg, seed, faces)  # in this process: leave its OpenCV threading alone
        it = ((encode_image(img, image_format), text)
              for img, text in (local.render(i) for i in range(start, start + count)))

    prog = None
    task = None
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,  # noqa: PLC0415
                                   TimeElapsedColumn, TimeRemainingColumn)
        prog = Progress(TextColumn("[bold]synth[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
        task = prog.add_task(str(out), total=count, rate="")
        prog.start()

    def take(n: int):
        nonlocal nbytes, done
        for _ in range(n):
            data, text = next(it)
            nbytes += len(data)
            done += 1
            if prog is not None and done % 64 == 0:
                el = time.perf_counter() - t0
                prog.update(task, completed=done, rate=f"{done / max(el, 1e-9):,.0f} img/s")
            yield data, text

    shards = []
    try:
        for path, n in plan:
            write_lmdb(path, take(n))
            shards.append(str(path))
        if prog is not None:
            prog.update(task, completed=done)
    finally:
        if prog is not None:
            prog.stop()
        if pool is not None:
            pool.terminate()
            pool.join()
    dt = time.perf_counter() - t0
    ips = done / dt if dt > 0 else float("inf")
    return {
        "out": str(out), "count": done, "seed": seed, "start": start, "workers": workers,
        "seconds": round(dt, 3), "images_per_s": round(ips, 1), "images_per_s_per_core": round(ips / workers, 1),
        "bytes": nbytes, "bytes_per_image": round(nbytes / max(done, 1), 1), "image_format": image_format,
        "shards": shards if shard_size is not None else [], "font_faces": len(faces),
        "config": cfg.to_dict(),
    }
