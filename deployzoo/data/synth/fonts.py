"""Fonts for the renderer: system font files scanned once (glyph coverage, families, weights), cached on disk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import ImageFont

from deployzoo.atomic import write_text
from deployzoo.data.synth.config import ALNUM, DRAWABLE, FONT_DIRS, FONT_EXTS, INDEX_VERSION, FontsNotFoundError


_EXCLUDE_FAMILY = re.compile(r"math|symbol|dingbat|emoji|icon|awesome|ornament|braille|music|musical|"
                             r"cursor|d050000l|fallback|unifont|lastresort|opensymbol|webdings|wingding", re.I)
# Faces whose letters are not the letters they are mapped to (Greek look-alikes, keycaps, guide lines,
# pictures), or that are unreadable at word-crop sizes.
_DENY_FAMILY = re.compile(
    r"^(abecedario_(pautada|guiada|punt-guiada)|alfa-beta|ellhnikh|linux biolinum keyboard|"
    r"linux libertine initials|tiresias keyfont|3d let|binary|bit blocks|code of life|faux snow|double bogey|"
    r"db layer|nucleus|line dings|head-ding maker|hearts|stars|skull capz|symmetry|xmas lights|tearful|"
    r"spheroids|holes|encapsulate|vertigo|konector|knot|pindown|tetricide|xerox malfunction|circulate|lynx|"
    r"entangled layer b|bandwidth|pseudo|mishmash 4x4o|grudge|lowdown|zoidal|jasper solid|swirled|"
    r"snailets|bleak segments|brass knuckle star|chintzy cpu shadow|wargames)\b")
#: Faces that draw digits only (seven-segment displays: their letters are not readable as letters).
_DIGITS_ONLY_FAMILY = re.compile(r"^dseg7")
_NOTO_LATIN = {"noto sans", "noto serif", "noto sans mono", "noto mono", "noto sans display",
               "noto serif display"}
# Relative weight of each family by the folder (package) it comes from: big collections of display faces
# and single-purpose faces are drawn less often than text families.
_SOURCE_WEIGHT = {"aenigma": 0.12, "dustin": 0.5, "dseg": 0.25, "ocr-a": 0.3, "ocr-b": 0.4, "3270": 0.5,
                  "ubuntu-title": 0.3, "fifthhorseman": 0.7}


# --------------------------------------------------------------------------------------------- fonts


@dataclass(frozen=True)
class FontFace:
    path: str
    index: int  # face index inside a .ttc
    family: str  # normalised family key
    name: str  # full name as the font states it
    source: str  # folder under the font dir (usually the Debian package's folder)
    chars: str  # characters of DRAWABLE with a glyph that draws ink
    weight: float  # family weight share of this face

    def covers(self, text: str) -> bool:
        cs = self.chars
        return all(c in cs or c == " " for c in text)


def _font_dirs(cfg_dirs: tuple[str, ...] | None) -> list[Path]:
    if cfg_dirs is None:
        env = os.environ.get("DEPLOYZOO_FONT_DIRS")
        cfg_dirs = tuple(env.split(":")) if env else FONT_DIRS
    return [Path(os.path.expanduser(d)) for d in cfg_dirs]


def _find_font_files(dirs: list[Path]) -> list[Path]:
    """Font files under ``dirs``, sorted; a file reached twice (symlinks) is kept once, under its first path."""
    found: list[tuple[str, str]] = []
    for d in dirs:
        if not d.is_dir():
            continue
        for root, _, files in os.walk(d, followlinks=True):
            for f in files:
                if f.lower().endswith(FONT_EXTS):
                    p = os.path.join(root, f)
                    try:
                        real = os.path.realpath(p)
                        if os.path.isfile(real):
                            found.append((p, real))
                    except OSError:
                        continue
    seen: set[str] = set()
    out: list[Path] = []
    for p, real in sorted(found):
        if real not in seen:
            seen.add(real)
            out.append(Path(p))
    return out


def _cache_dir() -> Path:
    base = os.environ.get("DEPLOYZOO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "deployzoo")
    return Path(base)


def _family_key(fam: str) -> str:
    k = fam.lower()
    k = re.sub(r"\b\d+(pt)?\b", " ", k)  # "LM Roman 10" -> "lm roman"
    return " ".join(k.split())


def _source_of(path: Path, dirs: list[Path]) -> str:
    for d in dirs:
        try:
            rel = path.relative_to(d)
        except ValueError:
            continue
        parts = rel.parts
        if len(parts) >= 3 and parts[0].lower() in ("truetype", "opentype", "type1", "public"):
            return parts[1]
        if len(parts) >= 3 and parts[1] == "public":  # texmf/fonts/opentype/public/tex-gyre
            return parts[2]
        return parts[0] if len(parts) > 1 else d.name
    return path.parent.name


def _glyph_signature(font: ImageFont.FreeTypeFont, ch: str) -> bytes | None:
    """8x8 binary thumbnail of the glyph's ink, or None when the glyph draws nothing."""
    try:
        m = font.getmask(ch)
    except Exception:  # noqa: BLE001 - a broken glyph counts as missing
        return None
    bb = m.getbbox()
    if bb is None or bb[2] - bb[0] < 1 or bb[3] - bb[1] < 1:
        return None
    w, h = m.size
    a = np.asarray(m, dtype=np.uint8).reshape(h, w)[bb[1]:bb[3], bb[0]:bb[2]]
    if int(a.max()) < 64:
        return None
    t = cv2.resize(a, (8, 8), interpolation=cv2.INTER_AREA)
    return (t > 96).tobytes() + bytes([min(255, (bb[3] - bb[1]) // 2), min(255, (bb[2] - bb[0]) // 2)])


def _probe_face(path: Path, index: int, ttfont) -> dict | None:
    """Coverage and sanity of one face; None when unusable."""
    names = ttfont["name"]
    fam = (names.getDebugName(16) or names.getDebugName(1) or path.stem).strip()
    full = (names.getDebugName(4) or fam).strip()
    cmap = ttfont.getBestCmap() or {}
    if _EXCLUDE_FAMILY.search(fam) or _EXCLUDE_FAMILY.search(full):
        return None
    key = _family_key(fam)
    if key.startswith("noto") and key not in _NOTO_LATIN:
        return None
    if _DENY_FAMILY.search(key):
        return None
    try:
        font = ImageFont.truetype(str(path), 48, index=index, layout_engine=ImageFont.Layout.BASIC)
    except Exception:  # noqa: BLE001
        return None
    sig_of = {}
    for ch in DRAWABLE:
        if ord(ch) in cmap:
            sig = _glyph_signature(font, ch)
            if sig is not None:
                sig_of[ch] = sig
    # a glyph shared by many characters is a placeholder (box, blank-ish mark), as is the .notdef glyph
    notdef = _glyph_signature(font, "\U0010fffd") if 0x10FFFD not in cmap else None
    counts: dict[bytes, int] = {}
    for sig in sig_of.values():
        counts[sig] = counts.get(sig, 0) + 1
    chars = [c for c in DRAWABLE if c in sig_of and counts[sig_of[c]] < 4 and sig_of[c] != notdef]
    if _DIGITS_ONLY_FAMILY.search(key):
        chars = [c for c in chars if c in string.digits or c in ".,:-"]
        if sum(c in string.digits for c in chars) < 10:
            return None
    else:
        # lacking most of [0-9A-Za-z] (symbol or partial fonts), or too few distinct letter shapes (dingbats)
        n_alnum = sum(c in ALNUM for c in chars)
        if n_alnum < 36 or len({sig_of[c] for c in chars if c in ALNUM}) < 30:
            return None
    asc, desc = font.getmetrics()
    if asc + desc <= 0:
        return None
    return {"path": str(path), "index": index, "family": _family_key(fam), "name": full, "chars": "".join(chars)}


def _scan_fonts(files: list[Path]) -> list[dict]:
    import logging  # noqa: PLC0415

    from fontTools.ttLib import TTCollection, TTFont  # noqa: PLC0415 - only needed to (re)build the index

    logging.getLogger("fontTools").setLevel(logging.ERROR)
    out = []
    for p in files:
        try:
            if p.suffix.lower() == ".ttc":
                coll = TTCollection(str(p), lazy=True)
                faces = list(enumerate(coll.fonts))
            else:
                faces = [(0, TTFont(str(p), lazy=True))]
        except Exception:  # noqa: BLE001 - unreadable font file: skip it
            continue
        for i, tt in faces:
            try:
                rec = _probe_face(p, i, tt)
            except Exception:  # noqa: BLE001
                rec = None
            if rec is not None:
                out.append(rec)
        for _, tt in faces:
            try:
                tt.close()
            except Exception:  # noqa: BLE001
                pass
    return out


_INDEX_MEMO: dict[tuple, list[FontFace]] = {}


def font_index(font_dirs: tuple[str, ...] | None = None, rebuild: bool = False) -> list[FontFace]:
    """All usable Latin faces under the font folders, sorted, with per-face sampling weights.

    The scan (fontTools cmap + glyph ink check, ~10 s for 1700 files) is cached in
    ``~/.cache/deployzoo`` (or ``$DEPLOYZOO_CACHE``), keyed by the files' paths, sizes and mtimes.
    Raises :class:`FontsNotFoundError` when nothing usable is installed.
    """
    dirs = _font_dirs(font_dirs)
    files = _find_font_files(dirs)
    if not files:
        raise FontsNotFoundError(
            f"no font files (.ttf/.otf/.ttc) found in {', '.join(map(str, dirs))}; "
            "run `bash scripts/install_fonts.sh` (as root) to install the fonts the synthetic renderer uses")
    h = hashlib.sha1(f"v{INDEX_VERSION}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    key = (h.hexdigest(),)
    if not rebuild and key in _INDEX_MEMO:
        return _INDEX_MEMO[key]
    cache = _cache_dir() / f"synth-fonts-{key[0][:16]}.json"
    recs = None
    if not rebuild and cache.is_file():
        try:
            recs = json.loads(cache.read_text())
        except (OSError, ValueError):
            recs = None
    if recs is None:
        recs = _scan_fonts(files)
        try:
            write_text(cache, json.dumps(recs))
        except OSError:
            pass  # read-only home: keep the index in memory only
    if not recs:
        raise FontsNotFoundError(
            f"{len(files)} font files found in {', '.join(map(str, dirs))} but none is a usable Latin text "
            "font; run `bash scripts/install_fonts.sh` (as root) to install the fonts the renderer uses")
    fam_faces: dict[str, list[dict]] = {}
    for r in recs:
        r["source"] = _source_of(Path(r["path"]), dirs)
        fam_faces.setdefault(r["family"], []).append(r)
    faces = []
    for fam in sorted(fam_faces):
        members = fam_faces[fam]
        w_fam = min(_SOURCE_WEIGHT.get(m["source"], 1.0) for m in members)
        for r in members:
            faces.append(FontFace(r["path"], r["index"], fam, r["name"], r["source"], r["chars"],
                                  w_fam / len(members)))
    faces.sort(key=lambda f: (f.family, f.path, f.index))
    _INDEX_MEMO[key] = faces
    return faces
