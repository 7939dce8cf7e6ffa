"""Shared machinery of the evaluators: decoding in DataLoader workers, progress bars, unreadable items."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator


class _Mapped:
    """Map-style dataset running ``fn(i)`` for ``indices[j]``: what DataLoader workers execute."""

    def __init__(self, fn: Callable[[int], object], indices: list[int]) -> None:
        self.fn, self.indices = fn, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        return self.fn(self.indices[j])


def iter_decoded(fn: Callable[[int], object], indices: list[int], workers: int, chunk: int,
                 prefetch: int = 4) -> Iterator:
    """Yield ``fn(i)`` for each index in order, computed in ``workers`` DataLoader processes (0: in this one).
    Without torch (the runtime install), a forked multiprocessing pool does the same."""
    if workers == 0:
        yield from map(fn, indices)
        return
    try:
        from torch.utils.data import DataLoader
    except ImportError:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(workers) as pool:
            yield from pool.imap(fn, indices, chunksize=max(1, chunk))
        return

    loader = DataLoader(_Mapped(fn, indices), batch_size=chunk, shuffle=False, num_workers=workers, collate_fn=list,
                        persistent_workers=False, prefetch_factor=prefetch if workers else None,
                        worker_init_fn=worker_init if workers else None)
    for batch in loader:
        yield from batch


def worker_init(_: int) -> None:
    """One torch thread per worker. cv2.setNumThreads is NOT called here: in a forked child it rebuilds the parent's
    OpenCV thread pool and hangs in pthread_cond_destroy once the parent has used cv2 in parallel (plain cv2 calls in
    the child are fine)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


class _NoBar:
    def advance(self) -> None: ...

    def close(self) -> None: ...


class _RichBar:
    def __init__(self, total: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.p = Progress(TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), transient=True)
        self.p.start()
        self.task = self.p.add_task(label, total=total)

    def advance(self) -> None:
        self.p.advance(self.task)

    def close(self) -> None:
        self.p.stop()


def progress_bar(enabled: bool, total: int, label: str, min_total: int = 2):
    """A rich progress bar when enabled and the run has at least ``min_total`` items, else a no-op."""
    return _RichBar(total, label) if enabled and total >= min_total else _NoBar()


def default_workers(n: int, threshold: int, cap: int) -> int:
    return min(cap, os.cpu_count() or 1) if n > threshold else 0


def note_error(res, record: dict, key: str, error: str) -> None:
    """One unreadable item: marked on its prediction record, counted and listed on the result (``res.errors``,
    ``res.error_list``); the run goes on with the other items."""
    record["error"] = error
    res.errors += 1
    res.error_list.append({"key": key, "error": error})
