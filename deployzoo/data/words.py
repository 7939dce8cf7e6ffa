"""Word-image data sets in the layouts users have, and the folder -> LMDB converter.

- LMDB as deep-text-recognition-benchmark: ``num-samples``, ``image-%09d`` (encoded image bytes),
  ``label-%09d`` (utf-8), indices 1-based (seed 002's MJ_LMDB and IIIT5K_lmdb).
- A folder with ``gt.txt``: lines ``<relative path> <label>`` (label = rest of the line, may hold spaces).

Readers yield raw samples (key, encoded bytes or path, raw label); decoding happens in DataLoader workers.
Every LMDB environment is opened lazily, once per process (safe with forked workers).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from deployzoo.atomic import atomic_path
from deployzoo.errors import DatasetError

GT_NAMES = ("gt.txt", "gt_norm.txt", "labels.txt")


@dataclass
class RawSample:
    key: str  # stable identifier: "image-000000001" or the relative path
    data: bytes | None  # encoded image bytes (LMDB) ...
    path: Path | None  # ... or a file path (folder)
    label: str  # raw label as stored; normalisation is the caller's choice
    error: str | None = None  # set when the sample itself is broken (missing key, bad line)


_ENVS: dict[str, tuple[int, lmdb.Environment]] = {}


def _open_env(path: Path) -> lmdb.Environment:
    """One read-only environment per path and process: LMDB forbids opening the same one twice in a process, and
    an environment must not be used across fork. A forked worker closes its inherited copy (the parent's stays
    open) and opens its own."""
    key = str(path.resolve())
    pid = os.getpid()
    if key in _ENVS:
        owner, env = _ENVS[key]
        if owner == pid:
            return env
        try:
            env.close()  # the child's copy only
        except lmdb.Error:
            pass
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=64,
                        subdir=path.is_dir())
    except lmdb.Error as e:
        raise DatasetError(f"LMDB {path}: cannot be opened, corrupt or not an LMDB ({e})") from None
    _ENVS[key] = (pid, env)
    return env


class LmdbWordSet:
    """Read-only deep-text-recognition-benchmark LMDB. ``len()`` is ``num-samples``."""

    layout = "lmdb"

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"LMDB {self.path}: not found")
        if self.path.is_dir() and not (self.path / "data.mdb").exists():
            raise DatasetError(f"LMDB {self.path}: no data.mdb in this folder, so it is not an LMDB data set")
        self._env: lmdb.Environment | None = None
        self._pid = -1
        with self._open().begin() as txn:
            raw = txn.get(b"num-samples")
        if raw is None:
            raise DatasetError(f"LMDB {self.path}: has no 'num-samples' key (not a deep-text-recognition-benchmark LMDB)")
        try:
            self.n = int(raw.decode())
        except (UnicodeDecodeError, ValueError):
            raise DatasetError(f"LMDB {self.path}: 'num-samples' is not an integer ({raw[:20]!r})") from None
        if self.n < 0:
            raise DatasetError(f"LMDB {self.path}: 'num-samples' is negative ({self.n})")

    def _open(self) -> lmdb.Environment:
        if self._env is None or self._pid != os.getpid():
            self._env = _open_env(self.path)
            self._pid = os.getpid()
        return self._env

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_env": None, "_pid": -1}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> RawSample:
        """i is 0-based; the LMDB keys are 1-based."""
        if not 0 <= i < self.n:
            raise IndexError(i)
        key = f"image-{i + 1:09d}"
        try:
            with self._open().begin() as txn:
                img = txn.get(key.encode())
                lab = txn.get(f"label-{i + 1:09d}".encode())
        except lmdb.Error as e:
            return RawSample(key, None, None, "", f"LMDB read failed ({e})")
        if img is None or lab is None:
            missing = "image" if img is None else "label"
            return RawSample(key, None, None, "" if lab is None else lab.decode("utf-8", "replace"),
                             f"{missing} key missing in LMDB {self.path}")
        return RawSample(key, bytes(img), None, lab.decode("utf-8", "replace"))


class FolderWordSet:
    """A folder with ``gt.txt`` (``<relative path> <label>``). Lines without a label are reported as errors."""

    layout = "folder"

    def __init__(self, path: str | os.PathLike, gt_name: str | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise DatasetError(f"word folder {self.path}: not found or not a directory")
        names = [gt_name] if gt_name else GT_NAMES
        gt = next((self.path / n for n in names if (self.path / n).is_file()), None)
        if gt is None:
            raise DatasetError(f"word folder {self.path}: no {' / '.join(names)} inside")
        self.gt = gt
        self.samples: list[RawSample] = []
        self.bad_lines: list[str] = []
        for lineno, line in enumerate(gt.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(maxsplit=1) if not line.startswith('"') else _split_quoted(line)
            rel = parts[0]
            if len(parts) < 2 or not parts[1].strip():
                self.samples.append(RawSample(rel, None, self.path / rel, "", f"{gt.name} line {lineno}: no label"))
                self.bad_lines.append(f"line {lineno}: {line[:60]!r}")
                continue
            self.samples.append(RawSample(rel, None, self.path / rel, parts[1].strip()))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> RawSample:
        return self.samples[i]


def _split_quoted(line: str) -> list[str]:
    """``"path with spaces.png" label`` -> [path, label]."""
    end = line.find('"', 1)
    if end < 0:
        return line.split(maxsplit=1)
    return [line[1:end], line[end + 1 :].strip()]


HOLDOUT_SHARE = 0.1  # share of a real set's source photos held out for validation (``PATH:heldout``)
SPLITS = ("train", "heldout")
_BLOCK = 16  # sets without photo ids: groups of this many consecutive crops (crop order follows the photos)


class WordSubset:
    """A view of some samples of a word set (same interface: ``len``, ``[i]`` -> RawSample, ``layout``)."""

    def __init__(self, base: LmdbWordSet | FolderWordSet, indices: list[int], name: str) -> None:
        self.base, self.indices, self.name = base, indices, name
        self.layout = base.layout
        self.path = base.path

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> RawSample:
        return self.base[self.indices[i]]


def source_groups(ds: LmdbWordSet | FolderWordSet) -> tuple[list[str], str]:
    """The source photo of each crop, and how it was found: ``crops_meta.tsv`` (column ``source_image``), else
    IIIT5K-style names ``<photo>_<n>.<ext>``, else blocks of consecutive crops (the sets here list a photo's crops
    together, so a block split keeps most photos whole; such a split is by position, not a proven photo split)."""
    n = len(ds)
    meta = ds.path / "crops_meta.tsv" if ds.layout == "folder" else None
    if meta is not None and meta.is_file():
        rows = [r.split("\t") for r in meta.read_text(encoding="utf-8").splitlines()]
        head = rows[0]
        if "crop" in head and "source_image" in head:
            c, g = head.index("crop"), head.index("source_image")
            photo = {r[c]: r[g] for r in rows[1:] if len(r) > max(c, g)}
            keys = [ds[i].key for i in range(n)]
            if all(k in photo for k in keys):
                return [photo[k] for k in keys], "crops_meta.tsv source_image"
    keys = [ds[i].key for i in range(n)]
    stems = [Path(k).stem.rsplit("_", 1) for k in keys]
    if n and all(len(s) == 2 and s[0] and s[1].isdigit() for s in stems) and 1 < len({s[0] for s in stems}) < n:
        return [s[0] for s in stems], "file name <photo>_<n>"
    return [f"block{i // _BLOCK}" for i in range(n)], f"blocks of {_BLOCK} consecutive crops"


def is_heldout(set_name: str, group: str, share: float = HOLDOUT_SHARE) -> bool:
    """Stable, seed-free choice of held-out photos: a hash of (set, photo) below ``share``."""
    import hashlib

    h = hashlib.sha256(f"{set_name}/{group}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2 ** 64 < share


def split_word_set(ds: LmdbWordSet | FolderWordSet, split: str, share: float = HOLDOUT_SHARE) -> WordSubset:
    """``train`` or ``heldout`` part of a real word set, split by source photo (``source_groups``)."""
    if split not in SPLITS:
        raise DatasetError(f"data set {ds.path}: unknown split {split!r}; use {' or '.join(SPLITS)}")
    groups, _ = source_groups(ds)
    name = ds.path.name
    keep = [i for i, g in enumerate(groups) if is_heldout(name, g, share) == (split == "heldout")]
    return WordSubset(ds, keep, f"{name}:{split}")


def open_word_set(path: str | os.PathLike) -> LmdbWordSet | FolderWordSet | WordSubset:
    """Open an LMDB (folder with data.mdb, or a data.mdb file) or a gt.txt folder, whichever ``path`` is.

    ``PATH:train`` / ``PATH:heldout`` open the training part or the held-out part (10 % of the source photos) of
    a real training set (``split_word_set``)."""
    s = str(path)
    for split in SPLITS:
        if s.endswith(":" + split) and not Path(s).exists():
            return split_word_set(open_word_set(s[: -len(split) - 1]), split)
    p = Path(path)
    if not p.exists():
        raise DatasetError(f"data set {p}: not found")
    if (p.is_dir() and (p / "data.mdb").exists()) or p.name == "data.mdb":
        return LmdbWordSet(p.parent if p.name == "data.mdb" else p)
    if p.is_dir() and any((p / n).is_file() for n in GT_NAMES):
        return FolderWordSet(p)
    raise DatasetError(f"data set {p}: neither an LMDB (data.mdb) nor a folder with gt.txt")


def write_lmdb(out: str | os.PathLike, samples: Iterable[tuple[bytes, str]], map_size: int = 1 << 40,
               commit_every: int = 1000) -> int:
    """Write (encoded image bytes, label) pairs as a deep-text-recognition-benchmark LMDB; returns the count.

    Written into a temporary folder beside ``out`` and renamed at the end: an interrupted run leaves no
    half-written LMDB under ``out``. ``out`` must not exist yet.
    """
    out = Path(out)
    if out.exists():
        raise DatasetError(f"LMDB {out}: already exists; choose a new path or remove it first")
    n = 0
    with atomic_path(out) as tmp:
        env = lmdb.open(str(tmp), map_size=map_size, subdir=True)
        txn = env.begin(write=True)
        for data, label in samples:
            n += 1
            txn.put(f"image-{n:09d}".encode(), data)
            txn.put(f"label-{n:09d}".encode(), label.encode("utf-8"))
            if n % commit_every == 0:
                txn.commit()
                txn = env.begin(write=True)
        txn.put(b"num-samples", str(n).encode())
        txn.commit()
        env.sync()
        env.close()
    return n


def iter_raw_bytes(ds: LmdbWordSet | FolderWordSet) -> Iterator[tuple[RawSample, bytes | None]]:
    """Each sample with its encoded bytes (read from disk for folders); bytes is None when unreadable."""
    for i in range(len(ds)):
        s = ds[i]
        if s.error:
            yield s, None
        elif s.data is not None:
            yield s, s.data
        else:
            try:
                yield s, s.path.read_bytes()
            except OSError as e:
                s.error = f"cannot read {s.path} ({e.strerror or e})"
                yield s, None


def _image_ext(data: bytes) -> str:
    sig = {b"\x89PNG": "png", b"\xff\xd8\xff": "jpg", b"GIF8": "gif", b"BM": "bmp", b"II*\x00": "tif",
           b"MM\x00*": "tif", b"RIFF": "webp"}
    return next((ext for magic, ext in sig.items() if data.startswith(magic)), "bin")


def write_folder(out: str | os.PathLike, samples: Iterable[tuple[bytes, str]]) -> int:
    """Write (encoded bytes, label) pairs as ``out/images/NNNNNNNNN.ext`` plus ``out/gt.txt``; atomic rename."""
    out = Path(out)
    if out.exists():
        raise DatasetError(f"word folder {out}: already exists; choose a new path or remove it first")
    n = 0
    with atomic_path(out) as tmp:
        (tmp / "images").mkdir(parents=True)
        with open(tmp / "gt.txt", "w", encoding="utf-8") as gt:
            for data, label in samples:
                n += 1
                rel = f"images/{n:09d}.{_image_ext(data)}"
                (tmp / rel).write_bytes(data)
                gt.write(f"{rel} {label}\n")
    return n


@dataclass
class ConvertReport:
    src: str
    out: str
    to: str
    written: int
    skipped: list[tuple[str, str]]  # (key, reason)

    def summary(self) -> str:
        s = f"{self.src} -> {self.out} ({self.to}): {self.written} samples written, {len(self.skipped)} skipped"
        for key, why in self.skipped[:10]:
            s += f"\n  skipped {key}: {why}"
        if len(self.skipped) > 10:
            s += f"\n  ... and {len(self.skipped) - 10} more"
        return s


def convert_word_set(src: str | os.PathLike, out: str | os.PathLike, to: str | None = None,
                     check_images: bool = True, progress: bool = True) -> ConvertReport:
    """Convert between the two layouts (folder -> LMDB by default, LMDB -> folder for an LMDB source).

    Labels are kept as they are (raw); samples without a label or whose image cannot be decoded
    (``check_images``) are skipped and listed in the report.
    """
    from deployzoo.errors import ImageError
    from deployzoo.process.image import load_image

    ds = open_word_set(src)
    to = to or ("folder" if ds.layout == "lmdb" else "lmdb")
    if to not in ("lmdb", "folder"):
        raise DatasetError(f"unknown target layout {to!r}: use 'lmdb' or 'folder'")
    skipped: list[tuple[str, str]] = []

    def good() -> Iterator[tuple[bytes, str]]:
        from rich.progress import track

        it = iter_raw_bytes(ds)
        if progress and len(ds) >= 500:
            it = track(it, total=len(ds), description=f"convert {Path(src).name}", transient=True)
        for s, data in it:
            if data is None:
                skipped.append((s.key, s.error or "unreadable"))
                continue
            if check_images:
                try:
                    load_image(data, "L", name=s.key)
                except ImageError as e:
                    skipped.append((s.key, str(e)))
                    continue
            yield data, s.label

    n = (write_lmdb if to == "lmdb" else write_folder)(out, good())
    return ConvertReport(str(src), str(out), to, n, skipped)
